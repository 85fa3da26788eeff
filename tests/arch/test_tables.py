"""Every generated key table is consistent: one component per key, plausible shapes, usable aliases."""
import re

import pytest
import torch

import lib_mecha.arch as arch
from lib_mecha.arch.demo import random_state_dict

IDS = arch.architecture_ids()


@pytest.fixture(scope="module", params=IDS)
def table(request):
    return arch.resolve_architecture(request.param)


def test_every_key_has_one_component_and_aliases_are_unambiguous(table):
    seen_aliases = {}
    for key, spec in table.keys.items():
        assert spec.key == key
        assert spec.component in table.components
        for alias in spec.aliases:
            assert alias not in table.keys, f"alias {alias} shadows a canonical key"
            assert seen_aliases.setdefault(alias, key) == key, f"alias {alias} used twice"
            assert table.canonical(alias) == key
    assert sum(len(table.keys_of(c)) for c in table.components) == len(table.keys)
    # components are contiguous in output order
    order = [s.component for s in table.keys.values()]
    assert [c for i, c in enumerate(order) if i == 0 or order[i - 1] != c] == list(table.components)


def test_shapes_are_plausible(table):
    for key, spec in table.keys.items():
        shape = spec.shape
        assert all(isinstance(s, int) and s >= 0 for s in shape), key
        if re.search(r"(to_[qkv]|[qkv]_proj|\.[qkv])\.weight$", key) and "attn2" not in key and len(shape) == 2:
            assert shape[0] == shape[1], f"{key} should be square, is {shape}"
        if re.search(r"(conv|conv_in|conv_out|\.op|skip_connection|nin_shortcut)\.weight$", key):
            assert len(shape) == 4, f"{key} is a conv weight but has shape {shape}"
        if key.endswith(".bias"):
            assert len(shape) == 1, key
            w = key[:-len("bias")] + "weight"
            if w in table.keys and table.keys[w].shape:
                assert table.keys[w].shape[0] == shape[0], f"{key} does not match {w}"
        if not spec.dtype.is_floating_point:
            assert spec.dtype in (torch.int64, torch.int32), key


def test_mandatory_keys_exist_and_random_state_dict_fits(table):
    assert table.mandatory
    sd = random_state_dict(table.identifier, seed=1, shape_divisor=256)
    assert set(sd) == set(table.mandatory)
    found = arch.detect(list(sd))
    if table.identifier in arch.layout_ids():  # layouts of same-shaped UNets share their block names
        assert list(found.keys) == list(table.keys)
    else:
        assert found is table
