"""Every method describes itself well enough for the UI: labels, help, slider ranges, spaces."""
import pytest

from lib_mecha.methods import all_methods, describe_all

# the catalogue in lib_mecha.methods (other packages register their own methods and pin them)
ALL = sorted(name for name, spec in all_methods().items() if spec.func.__module__.startswith("lib_mecha.methods."))
ELEMENTWISE = {
    "weighted_sum", "n_average", "subtract", "add_difference", "scale", "cast", "clamp",
    "geometric_sum", "multiply_quotient", "train_difference_mask", "add_opposite_mask", "add_strict_opposite_mask",
    "sum_twice", "triple_sum", "self_scale",
}


def test_elementwise_is_promised_only_where_any_1d_chunk_works():
    assert {name for name in ALL if all_methods()[name].elementwise} == ELEMENTWISE


@pytest.mark.parametrize("name", ALL)
def test_method_has_label_help_and_category(name):
    info = all_methods()[name].describe()
    assert info["label"] and info["help"] and info["category"] != "other"
    assert info["returns"] in ("weight", "delta", "param", "same")


@pytest.mark.parametrize("name", ALL)
def test_every_parameter_explains_itself_and_numbers_have_slider_ranges(name):
    for p in all_methods()[name].describe()["params"]:
        if p["kind"] == "tensor":
            continue
        assert p["help"], f"{name}.{p['name']} has no help"
        if p["kind"] in ("float", "int") and p["default"] is not None:
            low = p.get("soft_minimum", p.get("minimum"))
            high = p.get("soft_maximum", p.get("maximum"))
            tiny = isinstance(p["default"], float) and 0 < abs(p["default"]) < 1e-3 and p["name"] != "alpha"
            assert tiny or (low is not None and high is not None) or p["name"] in ("maxiter", "stiefel_max_iters"), \
                f"{name}.{p['name']} has no slider range"
            if low is not None and high is not None:
                assert low <= p["default"] <= high or tiny, f"{name}.{p['name']} default outside its slider"


def test_describe_all_lists_every_method_sorted():
    listed = describe_all()
    assert sorted(m["name"] for m in listed) == sorted(all_methods())
    assert [(m["category"], m["name"]) for m in listed] == sorted((m["category"], m["name"]) for m in listed)


def test_inverted_sd_mecha_flag_is_labelled_for_what_it_does():
    info = all_methods()["ties_sum_extended"].describe()
    flag = next(p for p in info["params"] if p["name"] == "apply_stock")
    assert flag["label"] == "Skip Model Stock scaling" and flag["default"] is False
    assert any("inverted" in note for note in info["notes"])


def test_pinned_description_of_ties_sum():
    assert all_methods()["ties_sum"].describe() == {
        "name": "ties_sum", "label": "TIES", "category": "ties", "returns": "delta",
        "help": "TIES-merging: trim each difference to its largest entries, elect a sign per element, "
                "and average the differences that agree with it.",
        "elementwise": False, "stochastic": False, "version": 1,
        "notes": ["An element where some difference is NaN or infinite comes out 0 (with the geometric median, "
                  "such entries are left out instead)."],
        "params": [
            {"name": "models", "kind": "tensor", "space": "delta", "required": True, "default": None,
             "keyword_only": False, "variadic": True, "per_key": False, "label": "models", "help": ""},
            {"name": "k", "kind": "float", "space": "param", "required": False, "default": 1.0,
             "keyword_only": True, "variadic": False, "per_key": True, "label": "Keep fraction (k)", "minimum": 0.0,
             "maximum": 1.0,
             "help": "Fraction of each difference kept, by magnitude: 1 keeps everything, 0.2 keeps the largest 20%."},
            {"name": "vote_sgn", "kind": "bool", "space": "param", "required": False, "default": False,
             "keyword_only": True, "variadic": False, "per_key": False, "label": "Elect sign by sum",
             "help": "Elect each element's sign by the sum of the differences instead of a majority of their signs."},
        ],
    }
