"""A user's function registered with the decorator works like a built-in method."""
import pytest
import torch

import lib_mecha
import lib_mecha.methods as methods
from lib_mecha.errors import MergeSpaceError, ParameterError
from lib_mecha.methods import DELTA, SAME, Float, Tensor
from lib_mecha.recipe import model
from method_calls import raw


@pytest.fixture
def dampened_difference():
    @lib_mecha.merge_method(returns=DELTA, label="Dampened difference", category="custom", elementwise=True,
                            help="(A - B)·strength, zeroing entries smaller than a floor.")
    def dampened_difference(a=Tensor(SAME), b=Tensor(SAME),
                            strength=Float(1.0, minimum=0.0, soft_maximum=2.0, per_key=True, help="Scale."),
                            *, floor=Float(0.0, minimum=0.0, help="Entries below this magnitude become 0.")):
        delta = (a - b) * strength
        return torch.where(delta.abs() < floor, torch.zeros_like(delta), delta)

    yield dampened_difference
    methods.unregister("dampened_difference")


def test_custom_method_builds_recipes_and_describes_itself(dampened_difference):
    node = dampened_difference(model("a"), model("b"), 0.5, floor=0.1)
    assert node.method == "dampened_difference"
    assert methods.merge_space_of(node) == "delta"
    assert methods.merge_space_of(lib_mecha.add_difference(model("a"), node)) == "weight"
    assert lib_mecha.dampened_difference is not None  # reachable as lib_mecha.<name>
    info = next(m for m in methods.describe_all() if m["name"] == "dampened_difference")
    assert [(p["name"], p["keyword_only"]) for p in info["params"]] == [
        ("a", False), ("b", False), ("strength", False), ("floor", True)]


def test_custom_method_computes(dampened_difference):
    a, b = torch.tensor([1.0, 0.5, 3.0]), torch.tensor([0.0, 0.45, 1.0])
    assert torch.allclose(raw(dampened_difference, a, b, strength=1.0, floor=0.1), torch.tensor([1.0, 0.0, 2.0]))


def test_custom_method_gets_build_time_checks(dampened_difference):
    with pytest.raises(ParameterError, match="strength"):
        dampened_difference(model("a"), model("b"), -1.0)
    with pytest.raises(MergeSpaceError):
        dampened_difference(model("a"), lib_mecha.methods.build("subtract", model("a"), model("b")))


def test_custom_method_names_are_unique(dampened_difference):
    with pytest.raises(ValueError, match="already registered"):
        @lib_mecha.merge_method
        def dampened_difference(a=Tensor(SAME)):  # noqa: F811
            return a


def test_custom_method_round_trips_through_mecha_text(dampened_difference):
    node = dampened_difference(model("a"), model("b"), 0.5, floor=0.1)
    assert lib_mecha.deserialize(lib_mecha.serialize(node)) == node


def test_custom_method_merges(dampened_difference, tmp_path):
    from safetensors.torch import save_file
    key = "model.diffusion_model.out.2.bias"
    save_file({key: torch.tensor([1.0, 0.5, 3.0, 2.0])}, str(tmp_path / "a.safetensors"))
    save_file({key: torch.tensor([0.0, 0.45, 1.0, 2.0])}, str(tmp_path / "b.safetensors"))
    recipe = lib_mecha.add_difference(model(str(tmp_path / "b.safetensors")),
                                      dampened_difference(model(str(tmp_path / "a.safetensors")),
                                                          model(str(tmp_path / "b.safetensors")), floor=0.1))
    result = lib_mecha.merge(recipe, output_dtype="fp32")
    assert torch.allclose(result.state_dict[key], torch.tensor([1.0, 0.45, 3.0, 2.0]))


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "2"])
def test_declared_temporaries_must_be_a_count_of_key_sized_buffers(bad):
    with pytest.raises(TypeError, match="temporaries must be a finite number"):
        @lib_mecha.merge_method(returns=SAME, temporaries=bad, register_it=False)
        def hoarding(a=Tensor(SAME)):
            return a


def test_declared_temporaries_are_kept_on_the_spec():
    @lib_mecha.merge_method(returns=SAME, temporaries=1.5, register_it=False)
    def hoarding(a=Tensor(SAME)):
        return a

    assert hoarding.spec.temporaries == 1.5
