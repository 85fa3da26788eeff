"""LoRAs as recipe nodes: the merge methods that apply a LoRA file to a checkpoint's keys.

* ``apply_lora(base, lora, strength)`` → weights: ``W + strength·ΔW`` for every key the LoRA
  changes, the base's tensor untouched elsewhere. ΔW is computed on the weight it is applied
  to, so DoRA, OFT, IA3 and GLoRA come out as the WebUI applies them; chaining applications
  (:func:`~lib_mecha.lora.bake`) applies LoRAs one after the other, as the WebUI does.
* ``lora_delta(lora, strength)`` → a delta on the LoRA's own architecture, for delta
  arithmetic (``add_difference(base, lora_delta(l))``). Modules whose ΔW depends on the
  weights (DoRA, OFT, IA3, GLoRA) cannot be expressed without a base and are refused.
* sd-mecha's converter identifiers (``convert_'sdxl-kohya_kohya_lora'_to_base`` followed by
  ``convert_'sdxl-kohya'_to_'sdxl-sgm'``), so .mecha files that bake LoRAs travel both ways.

``strength`` may vary per key (block weights): the node built by
:func:`~lib_mecha.arch.block_weights.blocks` is accepted.
"""
from __future__ import annotations

import logging
import weakref
from dataclasses import replace
from typing import Dict, Optional

from ..arch.base import resolve_architecture
from ..engine.expr import Call, Const
from ..errors import ArchitectureMismatch, MergeSpaceError
from ..methods.registry import builder_for, register
from ..methods.spec import DELTA, WEIGHT, Float, Tensor, make_spec
from ..recipe import ModelNode
from .evaluate import apply_groups, combined_delta, depends_on_base, layout_const, plan_entries
from .matching import LoraFile, Match, best_match, match_for, read_lora_file

log = logging.getLogger("lib_mecha.lora")

# per planning context: (source index, architecture id) -> Match
_matches: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _source(ctx, node: ModelNode):
    return ctx.source(node)


def lora_file_of(ctx, node) -> LoraFile:
    cache = _matches.setdefault(ctx, {})
    if not isinstance(node, ModelNode):
        raise MergeSpaceError(f"a LoRA must be a LoRA file (lib_mecha.lora.lora(path)), not {node!r}")
    source = _source(ctx, node)
    key = ("file", source.index)
    if key not in cache:
        cache[key] = read_lora_file(source.path, source.file)
    return cache[key]


def match_of(ctx, node, arch, base_node=None) -> Match:
    """The LoRA matched to ``arch``; with ``base_node``, against the shapes that model really has."""
    cache = _matches.setdefault(ctx, {})
    source = _source(ctx, node)
    key = (source.index, arch.identifier, base_node)
    if key not in cache:
        shape_of = None
        if base_node is not None:
            def shape_of(k):
                expr = ctx.compile(base_node, k)
                return None if expr is None or expr.shape is None else tuple(expr.shape)
        m = match_for(lora_file_of(ctx, node), arch, shape_of)
        report = m.report()
        if report:
            ctx.warn(report)
        cache[key] = m
    return cache[key]


def _lora_reads(ctx, lora_node, file_keys):
    reads = []
    for k in file_keys:
        expr = ctx.compile(lora_node, k)
        if expr is None:
            raise ArchitectureMismatch(f"the LoRA file lost key {k!r} while planning")
        reads.append(expr)
    return tuple(reads)


def _parts_for(m: Match, key: str):
    if key in m.weights:
        return m.weights[key], False
    if key in m.biases:
        return m.biases[key], True
    return None, False


# --- apply_lora --------------------------------------------------------------------------

def _apply_route(node, key, ctx):
    base_node, lora_node, strength_node = node.args
    base = ctx.compile(base_node, key)
    if base is None:
        return None
    arch = ctx.architecture(base_node)
    if arch is None:
        raise ArchitectureMismatch(f"apply_lora: the model the LoRA is applied to is not of a known architecture "
                                   f"(key {key!r})", "LoRAs need a checkpoint whose key table is known")
    parts, is_bias = _parts_for(match_of(ctx, lora_node, arch, base_node), key)
    if not parts or (base.dtype is not None and not base.dtype.is_floating_point):
        return base
    entries, file_keys = plan_entries(parts, is_bias, lora_file_of(ctx, lora_node).scalars)
    strength = ctx.compile(strength_node, key)
    if strength is None:
        return base
    # LoRAs applied one after another become one call that applies them in order: the key
    # is converted and written once, whatever the number of LoRAs
    if isinstance(base, Call) and base.method == "apply_lora":
        n_strengths, groups = dict(base.kwargs)["layout"].value
        root, strengths, tensors = base.args[0], base.args[1:1 + n_strengths], base.args[1 + n_strengths:]
    else:
        root, strengths, tensors, groups = base, (), (), ()
    groups = tuple(groups) + ((len(strengths), tuple(entries)),)
    args = (root,) + tuple(strengths) + (strength,) + tuple(tensors) + _lora_reads(ctx, lora_node, file_keys)
    return Call("apply_lora", args, (("layout", Const((len(strengths) + 1, groups))),), root.shape, root.dtype)


def _apply_eval(base, *rest, layout):
    n_strengths, groups = layout
    return apply_groups(base, rest[:n_strengths], rest[n_strengths:], groups)


def _apply_signature(base=Tensor(WEIGHT, help="the checkpoint"),
                     lora=Tensor(WEIGHT, help="the LoRA / LyCORIS file", defines_keys=False),
                     strength=Float(1.0, soft_minimum=-2.0, soft_maximum=2.0, per_key=True,
                                    help="how much of the LoRA; a block-weight dict gives a value per block")):
    """Placeholder whose signature describes the method; evaluation goes through the route."""


def _base_architecture(node, ctx):
    return ctx.architecture(node.args[0])


# --- lora_delta --------------------------------------------------------------------------

def _delta_route(node, key, ctx, arch=None):
    lora_node, strength_node = node.args
    arch = arch or _delta_architecture(node, ctx)
    parts, is_bias = _parts_for(match_of(ctx, lora_node, arch), key)
    if not parts:
        # a key of the architecture the LoRA leaves alone changes by nothing (so that
        # add_difference(base, delta) keeps it); keys of other models are not this node's
        return Const(0.0) if key in arch.keys else None
    dependent = depends_on_base(parts)
    if dependent and not is_bias:
        raise MergeSpaceError(
            f"LoRA module {dependent[0]!r} ({parts[0][0].algorithm.label}) changes {key!r} by an amount that "
            "depends on the weights it is applied to, so it has no delta on its own",
            "apply it to a checkpoint with lib_mecha.lora.bake / apply_lora")
    layout, file_keys = plan_entries(parts, is_bias, lora_file_of(ctx, lora_node).scalars)
    strength = ctx.compile(strength_node, key)
    if strength is None:
        return None
    shape = tuple(arch.keys[key].shape)
    return Call("lora_delta", (strength,) + _lora_reads(ctx, lora_node, file_keys),
                (("layout", layout_const(layout)), ("shape", Const(shape))), shape)


def _delta_eval(strength, *tensors, layout, shape):
    return strength * combined_delta(None, shape, tensors, layout)


def _delta_signature(lora=Tensor(WEIGHT, help="the LoRA / LyCORIS file", defines_keys=False),
                     strength=Float(1.0, soft_minimum=-2.0, soft_maximum=2.0, per_key=True,
                                    help="how much of the LoRA")):
    """Placeholder whose signature describes the method; evaluation goes through the route."""


def _delta_architecture(node, ctx):
    lora_file = lora_file_of(ctx, node.args[0])
    best = best_match(lora_file)
    if best is None:
        raise ArchitectureMismatch(f"LoRA {lora_file.path} matches no known architecture",
                                   "check that it is a LoRA for a supported model")
    return best.architecture


def _register(name, signature, evaluate, route, arch_hook, returns, label, help_text):
    spec = make_spec(signature, name=name, returns=returns, route=route, label=label, help=help_text,
                     category="lora", output_architecture=arch_hook)
    spec = replace(spec, func=evaluate)
    register(spec, replace=True)
    return builder_for(spec)


apply_lora = _register(
    "apply_lora", _apply_signature, _apply_eval, _apply_route, _base_architecture, WEIGHT, "Apply LoRA",
    "The checkpoint with a LoRA / LyCORIS file applied at a strength (per block if given), as the "
    "WebUI applies it at run time.")
lora_delta = _register(
    "lora_delta", _delta_signature, _delta_eval, _delta_route, _delta_architecture, DELTA, "LoRA as a delta",
    "The change a LoRA makes, as a delta on the architecture it is for (modules whose change depends on the "
    "weights, such as DoRA or OFT, need apply_lora).")


# --- sd-mecha's converter identifiers ----------------------------------------------------

SD_MECHA_LORA_BASES = {"sd1-kohya": "sd1-ldm", "sdxl-kohya": "sdxl-sgm", "sdxl-kohya_but_diffusers": "sdxl-sgm"}
SD_MECHA_CONVERTERS: Dict[str, str] = {}  # converter name -> target architecture


def _marker_route(node, key, ctx):
    return None  # only meaningful under the second converter, which reads the LoRA itself


def _to_arch_route_for(target: str):
    def route(node, key, ctx):
        inner = node.args[0]
        if getattr(inner, "method", "") not in LORA_MARKERS:
            raise ArchitectureMismatch(f"{node.method}: only LoRA deltas can be converted here; "
                                       "kohya-format checkpoints are not supported")
        # the two sd-mecha steps together are lora_delta at strength 1 on the target's keys
        return _delta_route(lora_delta(inner.args[0], 1.0), key, ctx, arch=resolve_architecture(target))
    return route


def _fixed_architecture(target: str):
    return lambda node, ctx: resolve_architecture(target)


LORA_MARKERS = {}


def _marker_signature(lora=Tensor(WEIGHT, help="the LoRA file", defines_keys=False)):
    """sd-mecha's LoRA → delta conversion step (evaluated by the converter that follows it)."""


def _convert_signature(delta=Tensor(DELTA, help="a LoRA delta")):
    """sd-mecha's kohya → checkpoint naming step for a LoRA delta."""


def _unreachable(*args, **kwargs):
    raise AssertionError("resolved by the route")


for _base, _target in SD_MECHA_LORA_BASES.items():
    for _kind in ("kohya", "lycoris"):
        _name = f"convert_'{_base}_{_kind}_lora'_to_base"
        LORA_MARKERS[_name] = _base
        _register(_name, _marker_signature, _unreachable, _marker_route, lambda n, c: None, DELTA,
                  f"LoRA → delta ({_base})", "sd-mecha's first step of baking a LoRA; use with the converter "
                  f"convert_'{_base}'_to_'{_target}'.")
    _conv = f"convert_'{_base}'_to_'{_target}'"
    SD_MECHA_CONVERTERS[_conv] = _target
    _register(_conv, _convert_signature, _delta_eval, _to_arch_route_for(_target), _fixed_architecture(_target),
              DELTA, f"LoRA delta → {_target}",
              f"sd-mecha's second step of baking a LoRA: the delta on {_target}'s keys.")


def architecture_of_converter(name: str) -> Optional[str]:
    return SD_MECHA_CONVERTERS.get(name)
