"""Stochastic methods: the same seed gives the same tensors whatever the thread count."""
import pytest
import torch

from lib_mecha.methods import all_methods
from method_calls import raw

STOCHASTIC_CALLS = {
    "ties_sum_with_dropout": dict(probability=0.5, della_eps=0.1, k=0.5, seed=11),
    "dropout": dict(probability=0.5, seed=11),
    "add_noise": dict(alpha=0.01, seed=11, skip_out_and_norm=False),
    "truncate_rank": dict(rank=3, approximate_basis_seed=11),
}


def test_every_stochastic_method_is_covered_here():
    stochastic = {name for name, spec in all_methods().items()
                  if spec.stochastic and spec.func.__module__.startswith("lib_mecha.methods.")}
    assert stochastic == set(STOCHASTIC_CALLS)


@pytest.mark.parametrize("name", sorted(STOCHASTIC_CALLS))
def test_same_seed_same_tensors_with_one_or_two_threads(name):
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(300, 400, generator=g) for _ in range(1 if name in ("add_noise", "truncate_rank") else 2)]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = raw(name, *inputs, **STOCHASTIC_CALLS[name])
        torch.set_num_threads(2)
        double = raw(name, *inputs, **STOCHASTIC_CALLS[name])
    finally:
        torch.set_num_threads(before)
    assert torch.equal(single, double)


@pytest.mark.parametrize("name", sorted(STOCHASTIC_CALLS))
def test_stochastic_methods_take_a_seed_and_the_current_key(name):
    spec = all_methods()[name]
    assert spec.key_param is not None
    seed = [p for p in spec.params if "seed" in p.name]
    assert len(seed) == 1 and seed[0].kind == "int" and seed[0].default is None
    assert not spec.elementwise  # chunked draws would depend on the chunking
