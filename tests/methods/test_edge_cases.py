"""Every computing method on empty tensors, 0-dim tensors, NaN/Inf inputs and single models."""
import math

import pytest
import torch

from lib_mecha.methods import all_methods
from method_calls import raw

ROUTED = {name for name, spec in all_methods().items() if spec.route is not None}
SKIPPED = ROUTED | {"cast"}
# the catalogue in lib_mecha.methods (other packages test the methods they register)
COMPUTING = sorted(name for name, spec in all_methods().items()
                   if name not in SKIPPED and spec.func.__module__.startswith("lib_mecha.methods."))
VARIADIC = sorted(name for name in COMPUTING if all_methods()[name].variadic is not None)
# methods that promise finite output (non-finite entries become 0, or the whole result zeros)
FINITE_OUTPUT = {"ties_sum", "ties_sum_extended", "ties_sum_with_dropout", "perpendicular_component", "model_stock",
                 "train_difference_mask", "add_opposite_mask", "add_strict_opposite_mask"}
SEEDED = {"ties_sum_with_dropout": {"seed": 1}, "dropout": {"seed": 1}, "add_noise": {"seed": 1}}


def _inputs(name, make):
    spec = all_methods()[name]
    fixed = [p for p in spec.positional if p.is_tensor and not p.variadic]
    count = len(fixed) + (2 if spec.variadic is not None else 0)
    return [make(i) for i in range(count)]


def _call(name, inputs):
    return raw(name, *inputs, **SEEDED.get(name, {}))


@pytest.mark.parametrize("name", COMPUTING)
def test_empty_tensors_give_empty_results(name):
    result = _call(name, _inputs(name, lambda i: torch.empty(0, 3)))
    assert isinstance(result, torch.Tensor) and result.shape == (0, 3)


@pytest.mark.parametrize("name", COMPUTING)
def test_zero_dim_tensors_give_zero_dim_results(name):
    result = _call(name, _inputs(name, lambda i: torch.tensor(0.5 + i)))
    assert isinstance(result, torch.Tensor) and result.shape == ()
    assert math.isfinite(float(result))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("name", COMPUTING)
def test_non_finite_inputs_do_not_crash(name, bad):
    def make(i):
        t = torch.randn(6, 5, generator=torch.Generator().manual_seed(i))
        t[0, 0] = bad
        return t
    result = _call(name, _inputs(name, make))
    assert result.shape == (6, 5)
    finite = torch.isfinite(result)
    if name in FINITE_OUTPUT:
        assert finite.all()
    elif all_methods()[name].elementwise:
        assert not finite[0, 0] and finite.flatten()[1:].all()  # only the bad entry is affected
    else:
        assert not finite.all()  # the bad value is not hidden in a plausible-looking result


@pytest.mark.parametrize("name", VARIADIC)
def test_single_model_calls(name):
    d = torch.rand(4, 3) + 0.5
    result = raw(name, d, **SEEDED.get(name, {}))
    assert result.shape == d.shape and torch.isfinite(result).all()
