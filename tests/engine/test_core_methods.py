"""The core issue's methods on hand-computed tensors, called through their raw functions."""
from __future__ import annotations

import math

import pytest
import torch

import lib_mecha as mecha
from lib_mecha.errors import MergeSpaceError, ParameterError
from lib_mecha.methods import resolve


def raw(name):
    return resolve(name).apply


A = torch.tensor([1.0, -2.0, 3.0, 0.5])
B = torch.tensor([3.0, 2.0, -1.0, 0.5])


def test_weighted_sum_and_its_properties():
    assert torch.equal(raw("weighted_sum")(A, B, 0.25), torch.tensor([1.5, -1.0, 2.0, 0.5]))
    assert torch.equal(raw("weighted_sum")(A, A, 0.7), A)
    assert torch.equal(raw("weighted_sum")(A, B, 0.0), A)


def test_subtract_add_difference_scale():
    d = raw("subtract")(B, A)
    assert torch.equal(d, torch.tensor([2.0, 4.0, -4.0, 0.0]))
    assert torch.equal(raw("add_difference")(A, d, 0.5), torch.tensor([2.0, 0.0, 1.0, 0.5]))
    assert torch.equal(raw("add_difference")(A, d, torch.tensor([1.0, 0.0, 0.0, 0.0])),
                       torch.tensor([3.0, -2.0, 3.0, 0.5]))
    assert torch.equal(raw("scale")(d, -1.0), -d)


def test_n_average_single_and_many():
    assert torch.equal(raw("n_average")(A), A)
    assert torch.allclose(raw("n_average")(A, B, A + B), (A + B + A + B) / 3)


def test_slerp_hand_case_and_parallel_fallback():
    x, y = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    mid = raw("slerp")(x, y, 0.5)
    assert torch.allclose(mid, torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]), atol=1e-6)
    assert torch.allclose(raw("slerp")(A, 2 * A, 0.3), torch.lerp(A, 2 * A, 0.3))  # parallel = lerp
    zero = torch.zeros(4)
    assert torch.equal(raw("slerp")(zero, B, 0.5), torch.lerp(zero, B, 0.5))


def test_clamp_with_and_without_stiffness():
    lo, hi = torch.zeros(4), torch.ones(4)
    assert torch.equal(raw("clamp")(A, lo, hi, stiffness=0.0), torch.tensor([1.0, 0.0, 1.0, 0.5]))
    mid = torch.full((4,), 0.4)
    got = raw("clamp")(A, lo, hi, mid, stiffness=1.0)
    # with full stiffness each side pulls to the bound nearest the bounds' mean (0.4667)
    assert torch.allclose(got, torch.tensor([1.0, 0.4, 1.0, 0.5]))


def test_cast_changes_dtype():
    assert raw("cast")(A, None, "bfloat16").dtype == torch.bfloat16


def test_empty_and_zero_dim_tensors():
    e = torch.empty(0)
    assert raw("weighted_sum")(e, e, 0.5).shape == (0,)
    s = torch.tensor(2.0)
    assert raw("slerp")(s, torch.tensor(4.0), 0.5).item() == pytest.approx(3.0)


def test_space_errors_before_any_file():
    a, b = mecha.model("a"), mecha.model("b")
    with pytest.raises(MergeSpaceError, match="expects a delta but got a weight"):
        mecha.methods.build("add_difference", a, b)
    with pytest.raises(MergeSpaceError):
        mecha.scale(a, alpha=2.0)
    with pytest.raises(ParameterError, match="no such parameter"):
        mecha.weighted_sum(a, b, beta=0.2)
    with pytest.raises(ParameterError, match="missing required argument"):
        mecha.weighted_sum(a)
    with pytest.raises(ParameterError, match="where a model is expected"):
        mecha.weighted_sum("a.safetensors", b)


def test_nodes_are_structural_values():
    a1 = mecha.weighted_sum(mecha.model("a"), mecha.model("b"), alpha=0.5)
    a2 = mecha.weighted_sum(mecha.model("a"), b=mecha.model("b"))
    assert a1 == a2 and hash(a1) == hash(a2)
    assert mecha.literal(1) != mecha.literal(1.0) != mecha.literal(True)
    with pytest.raises(AttributeError):
        a1.method = "slerp"


def test_constants_of_different_types_stay_apart():
    from lib_mecha.engine.expr import Const
    assert Const(1.0) != Const(True) and Const(1) != Const(1.0)
    assert len({Const(1.0), Const(True), Const(1)}) == 3
