"""Methods that move keys around rather than compute: fallback, components, cast, clamp."""
from __future__ import annotations

import functools

import torch

from ..errors import ParameterError
from ..recipe import ModelNode
from .registry import merge_method
from .spec import SAME, Float, Str, Tensor

CAST_DTYPES = {
    "float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
    "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32, "int16": torch.int16,
    "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}
for _name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz"):
    if hasattr(torch, _name):
        CAST_DTYPES[_name] = getattr(torch, _name)


def _route_fallback(node, key, ctx):
    a, default = node.args
    return ctx.compile(a, key) or ctx.compile(default, key)


@merge_method(returns=SAME, label="Fallback", category="logistics", route=_route_fallback,
              help="Each key from A where A can produce it, otherwise from the default.")
def fallback(a=Tensor(SAME), default=Tensor(SAME)):
    raise AssertionError("fallback is resolved by its route; it never computes")


def _component_route(keep: bool):
    def route(node, key, ctx):
        a, component_node = node.args
        component = ctx.constant(component_node, key)
        arch = ctx.architecture(a)
        method = node.method
        if arch is None:
            raise ParameterError(method, "component", "the input's architecture is not known, so it has no components",
                                 "components exist for recognised architectures such as sd1-ldm")
        if component not in arch.components:
            raise ParameterError(method, "component", f"{component!r} is not a component of {arch.identifier}",
                                 f"components are: {', '.join(arch.components)}")
        inside = arch.component_of(key) == component
        return ctx.compile(a, key) if inside == keep else None
    return route


@merge_method(returns=SAME, label="Pick component", category="logistics", route=_component_route(True),
              help="Only the keys of one component (e.g. diffuser, clip_l, vae).")
def pick_component(a=Tensor(SAME), component=Str(help="component name, e.g. diffuser, clip_l, vae")):
    raise AssertionError("pick_component is resolved by its route; it never computes")


@merge_method(returns=SAME, label="Omit component", category="logistics", route=_component_route(False),
              help="Every key except those of one component.")
def omit_component(a=Tensor(SAME), component=Str(help="component name, e.g. diffuser, clip_l, vae")):
    raise AssertionError("omit_component is resolved by its route; it never computes")


@merge_method(returns=SAME, label="Cast", category="logistics", elementwise=True,
              help="Converts to another device and/or dtype inside the recipe.")
def cast(a=Tensor(SAME), device=Str(None, nullable=True, help="e.g. cpu or cuda; null keeps it"),
         dtype=Str(None, nullable=True, choices=tuple(CAST_DTYPES), help="e.g. float16; null keeps it")):
    kwargs = {}
    if device is not None:
        kwargs["device"] = device
    if dtype is not None:
        kwargs["dtype"] = CAST_DTYPES[dtype]
    return a.to(**kwargs)


@merge_method(returns=SAME, varargs=Tensor(SAME), label="Clamp", category="logistics", elementwise=True,
              help="Keeps A inside the range spanned by the bounds, element by element.")
def clamp(a=Tensor(SAME), *bounds,
          stiffness=Float(0.0, minimum=0.0, maximum=1.0,
                          help="0 clamps to the outermost bounds; 1 to the bounds nearest their mean.")):
    if not bounds:
        return a
    highest = functools.reduce(torch.maximum, bounds)
    lowest = functools.reduce(torch.minimum, bounds)
    if stiffness:
        mean = sum(bounds) / len(bounds)
        upper, lower = highest, lowest
        for bound in bounds:
            upper = torch.where((upper >= bound) & (bound >= mean), bound, upper)
            lower = torch.where((lower <= bound) & (bound <= mean), bound, lower)
        highest = torch.lerp(highest, upper, stiffness)
        lowest = torch.lerp(lowest, lower, stiffness)
    return torch.minimum(torch.maximum(a, lowest), highest)


VAE_PREFIX = "first_stage_model."


def _route_replace_vae(node, key, ctx):
    a, vae = node.args
    base = ctx.compile(a, key)
    if base is None or not key.startswith(VAE_PREFIX):
        return base
    stored = ctx.source(vae).key_map if isinstance(vae, ModelNode) else {}
    for name in (key, key[len(VAE_PREFIX):]):
        if name in stored:
            expr = ctx.compile(vae, name)
            if expr is not None and expr.shape != base.shape:
                raise ParameterError("replace_vae", "vae", f"the VAE's {name!r} has shape {list(expr.shape)}, "
                                     f"the model's {key!r} has {list(base.shape)}",
                                     "choose a VAE made for this model's architecture")
            return expr
    ctx.warn(f"replace_vae: the VAE file has no {key[len(VAE_PREFIX):]!r}; the model's own is kept")
    return base


@merge_method(returns=SAME, label="Replace VAE", category="logistics", route=_route_replace_vae,
              help="The model with its VAE taken from a VAE file (bare encoder./decoder. names) or from "
                   "another checkpoint's first_stage_model.")
def replace_vae(a=Tensor(SAME), vae=Tensor(SAME, defines_keys=False, help="a VAE file or a checkpoint")):
    raise AssertionError("replace_vae is resolved by its route; it never computes")
