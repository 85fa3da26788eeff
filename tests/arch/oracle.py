"""sd-mecha 1.1.8's model-config YAML files, read as a test oracle only (never used by lib_mecha)."""
from __future__ import annotations

import importlib.util
import pathlib

import pytest


def config_dir():
    spec = importlib.util.find_spec("sd_mecha")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = pathlib.Path(list(spec.submodule_search_locations)[0]) / "extensions" / "builtin" / "model_configs"
    return d if d.is_dir() else None


def load(identifier: str):
    """{component: {key: {shape, dtype, aliases, optional}}} in file order, or a visible skip."""
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read sd-mecha's configs")
    d = config_dir()
    if d is None:
        pytest.skip("sd-mecha is not installed in this environment: no oracle to compare with")
    path = d / f"{identifier}.yaml"
    if not path.exists():
        pytest.skip(f"sd-mecha has no {identifier}.yaml")
    with open(path, encoding="utf-8") as f:
        data = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return data["components"]


def block_map(converter: str, layout_id: str, arch_id: str):
    """{key: block} as sd-mecha's block converter assigns it, or a visible skip."""
    pytest.importorskip("sd_mecha", reason="sd-mecha is not installed: no block-map oracle")
    from sd_mecha.extensions import merge_methods, model_configs
    method = merge_methods.resolve(converter)
    target = model_configs.resolve(arch_id)
    key_map = method.build_key_map([model_configs.resolve(layout_id)], {}, target)
    out = {}
    for key in target.keys():
        relation = key_map[key]
        out[key] = relation.clauses[0].by_param["blocks"][0]
    return out
