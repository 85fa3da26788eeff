"""How a merge method describes itself, and what it receives from the engine.

A method is a plain function whose parameters carry descriptors as their defaults::

    @merge_method(returns=SAME, label="Weighted sum", help="(1 - alpha)·a + alpha·b")
    def weighted_sum(a=Tensor(SAME), b=Tensor(SAME),
                     alpha=Float(0.5, minimum=0.0, maximum=1.0, per_key=True, help="0 = a, 1 = b")):
        return torch.lerp(a, b, alpha)

The descriptors are the single source for the UI's widgets, the .mecha writer (which
parameters are positional, which keyword-only, what the defaults are), validation of the
values a recipe gives, and ``python -m lib_mecha methods``.

What the function receives, and what it may do with it (this is the whole contract; the
README's section on custom methods points here):

* It is called once per output key (or once per slice of a key, for ``elementwise`` methods)
  with tensors for :class:`Tensor` parameters and Python scalars for the others; parameters
  marked ``per_key`` may also receive a tensor (a mask) or a per-key scalar.
* Tensors arrive on the merge device in the compute dtype; the function never moves them.
* It must not modify its inputs in place: the engine may share one input between consumers.
  (Writing into an input never crashes and never changes a file on disk, but it may change
  what another method of the recipe sees.)
* ``CurrentKey()`` as a parameter's default: the engine passes the output key being merged.
* ``KeyWorkspace()`` as a parameter's default (keyword-only, or the last parameter): the
  engine passes the key's :class:`~lib_mecha.workspace.Workspace`, the memory and threads it
  lends the method: ``work.empty(numel, dtype)`` / ``work.empty_like(t)`` for key-sized
  results and temporaries (reused from earlier keys, so no fresh pages are faulted in),
  ``work.scratch(like)`` for a loop's per-thread buffers, ``work.for_each_range(spans, body,
  make_state)`` for loops over the threads granted to the key, and ``work.per_thread(factory)``
  for caches. Called directly, outside a merge, the default is a workspace that lends
  nothing (``torch.empty``, one thread).
* **Nothing lent survives its key.** Memory from the workspace is taken back when the key
  has been written (scratch buffers when their loop ends), and the next key gets it. The
  result may be such memory; anything else the method keeps after returning (in a cache, a
  global) must be memory it allocated itself. A buffer that something still refers to when it
  comes back is not reused, and under ``MECHA_STRICT_MEMORY=1`` (set by the test suite) the
  merge fails with :class:`~lib_mecha.errors.LentMemoryKept`, so a method that breaks the
  rule fails its tests.
* ``temporaries=N``: the method holds N key-sized buffers besides its arguments and result
  (in compute-dtype elements per output element); the engine's memory estimate counts them.

Two promises let the engine skip copies of the inputs:

* ``elementwise=True, accumulates=True`` (a sum such as ``n_average``): the first argument is
  a buffer of the method's own in the compute dtype, which it may write its result into and
  return; the other tensor arguments may arrive in the narrower float dtype they are stored
  in (float16, bfloat16), straight from the file's pages, so torch converts them on the fly
  instead of the engine first copying each one into a compute-dtype buffer. Type promotion
  computes in the first argument's dtype, and widening float16/bfloat16 is exact, so the
  results are bitwise those of the plain contract.
* ``stored_dtype=True`` (a method that only moves values, such as ``top_k_tensor_sum``): all
  tensor arguments read straight from a file may arrive in their stored float16/bfloat16, as
  views of the file's pages (private to the merge: writing into them changes nothing on
  disk), and the others in the compute dtype. It may return its result in any of its
  arguments' dtypes, as a new tensor; the engine widens it for the next method. Results must
  be those of the plain contract, which holds when the method computes nothing that widening
  would change (moving values, comparing them).
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

from ..errors import ParameterError
from ..workspace import Workspace

WEIGHT = "weight"
DELTA = "delta"
PARAM = "param"
SAME = "same"  # a type variable: every SAME argument and the result share one space
SPACES = (WEIGHT, DELTA, PARAM)


class _Required:
    def __repr__(self):
        return "REQUIRED"


REQUIRED = _Required()


@dataclass(frozen=True)
class Param:
    """One parameter of a merge method.

    Attributes:
        kind: ``tensor``, ``float``, ``int``, ``bool``, ``str`` or ``key`` (the engine passes
            the output key; never written to .mecha).
        space: for tensors, the merge space they must be in (``weight``, ``delta``, ``param``
            or ``same``); ``param`` for everything else.
        default: :data:`REQUIRED` when the recipe must give a value.
        minimum / maximum: the valid range (inclusive unless ``*_open``); the UI slider range
            is ``soft_minimum``/``soft_maximum`` when those are set.
        per_key: the value may vary per key (block weights, per-key patterns, a mask).
        choices: the allowed values of a ``str`` parameter.
        label / help: what the UI shows; ``help`` says what the value really does.
    """

    kind: str
    space: str = PARAM
    default: Any = REQUIRED
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    minimum_open: bool = False
    maximum_open: bool = False
    soft_minimum: Optional[float] = None
    soft_maximum: Optional[float] = None
    step: Optional[float] = None
    per_key: bool = False
    choices: Optional[Tuple[Any, ...]] = None
    nullable: bool = False
    # False for an input whose key names are not the output's (a LoRA file): the planner does
    # not offer its keys as output keys; the method's route reads them itself
    defines_keys: bool = True
    label: str = ""
    help: str = ""
    # filled in by the decorator
    name: str = ""
    keyword_only: bool = False
    variadic: bool = False

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def is_tensor(self) -> bool:
        return self.kind == "tensor"

    def check(self, method: str, value) -> None:
        """Raise :class:`ParameterError` unless ``value`` is valid for this parameter."""
        if self.kind in ("tensor", "key"):
            return
        if value is None:
            if self.nullable or self.default is None:
                return
            raise ParameterError(method, self.name, "a value is required, got null")
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ParameterError(method, self.name, f"expected true or false, got {value!r}")
            return
        if self.kind == "str":
            if not isinstance(value, str):
                raise ParameterError(method, self.name, f"expected a string, got {value!r}")
            if self.choices and value not in self.choices:
                raise ParameterError(method, self.name, f"{value!r} is not one of {list(self.choices)}")
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParameterError(method, self.name, f"expected a number, got {value!r}")
        if self.kind == "int" and isinstance(value, float) and not value.is_integer():
            raise ParameterError(method, self.name, f"expected a whole number, got {value!r}")
        if isinstance(value, float) and math.isnan(value):
            raise ParameterError(method, self.name, "NaN is not a valid value")
        if self.minimum is not None:
            if value < self.minimum or (self.minimum_open and value == self.minimum):
                raise ParameterError(method, self.name, f"{value!r} is out of range; {self.range_text()}")
        if self.maximum is not None:
            if value > self.maximum or (self.maximum_open and value == self.maximum):
                raise ParameterError(method, self.name, f"{value!r} is out of range; {self.range_text()}")

    def range_text(self) -> str:
        lo = "-inf" if self.minimum is None else repr(self.minimum)
        hi = "inf" if self.maximum is None else repr(self.maximum)
        left = "(" if self.minimum_open or self.minimum is None else "["
        right = ")" if self.maximum_open or self.maximum is None else "]"
        return f"it must be in {left}{lo}, {hi}{right}"

    def describe(self) -> Dict[str, Any]:
        out = {
            "name": self.name,
            "kind": self.kind,
            "space": self.space,
            "required": self.required,
            "default": None if self.required else self.default,
            "keyword_only": self.keyword_only,
            "variadic": self.variadic,
            "per_key": self.per_key,
            "label": self.label or self.name.replace("_", " "),
            "help": self.help,
        }
        for attr in ("minimum", "maximum", "soft_minimum", "soft_maximum", "step"):
            if getattr(self, attr) is not None:
                out[attr] = getattr(self, attr)
        if self.choices:
            out["choices"] = list(self.choices)
        return out


def Tensor(space: str = SAME, help: str = "", label: str = "", defines_keys: bool = True) -> Param:
    """A model-valued parameter in the given merge space."""
    return Param("tensor", space=space, help=help, label=label, defines_keys=defines_keys)


def Float(default=REQUIRED, minimum=None, maximum=None, **kw) -> Param:
    return Param("float", default=default, minimum=minimum, maximum=maximum, **kw)


def Int(default=REQUIRED, minimum=None, maximum=None, **kw) -> Param:
    return Param("int", default=default, minimum=minimum, maximum=maximum, **kw)


def Bool(default=REQUIRED, **kw) -> Param:
    return Param("bool", default=default, **kw)


def Str(default=REQUIRED, choices=None, **kw) -> Param:
    return Param("str", default=default, choices=tuple(choices) if choices else None, **kw)


def CurrentKey() -> Param:
    """The engine passes the output key being merged (for per-key seeds and key-aware methods)."""
    return Param("key", default=None)


def KeyWorkspace() -> Workspace:
    """The engine passes the key's :class:`~lib_mecha.workspace.Workspace`: the memory and threads
    it lends the method (see the module docstring). The default, for direct calls outside a
    merge, lends nothing and grants nothing."""
    return Workspace()


@dataclass(frozen=True)
class MethodSpec:
    """Everything known about one merge method. Built by :func:`merge_method`."""

    name: str
    func: Callable
    params: Tuple[Param, ...]
    returns: str
    label: str = ""
    help: str = ""
    category: str = "other"
    elementwise: bool = False
    accumulates: bool = False  # see the module docstring: writes into its first argument
    stored_dtype: bool = False  # see the module docstring: may take inputs in their stored dtype
    # key-sized memory the method holds besides its arguments and result, in compute-dtype
    # elements per output element: the engine's memory estimate for a key counts it
    temporaries: float = 0.0
    stochastic: bool = False
    # the int parameter whose null value draws fresh randomness on every merge: a live merge
    # records a concrete seed for it (lib_mecha.live.seeds), so a re-merge can reuse the keys
    fresh_seed: Optional[str] = None
    # bumped whenever the function's results change for the same arguments: part of every
    # key's fingerprint, so a live re-merge recomputes the keys an older version produced
    version: int = 1
    # key behaviour; None means "one output key from the same key of every tensor argument"
    route: Optional[Callable] = None
    # output shape from the tensor arguments' shapes; None means "the first tensor argument's"
    output_shape: Optional[Callable] = None
    # the architecture of the result, as hook(node, ctx); None means "the tensor arguments' common one"
    output_architecture: Optional[Callable] = None
    # the sd-mecha meaning of a parameter that users would misread (reference §8.2)
    notes: Tuple[str, ...] = field(default=())
    # the parameter (default ``KeyWorkspace()``) the engine passes the key's Workspace to
    workspace: Optional[str] = None

    @property
    def positional(self) -> Tuple[Param, ...]:
        return tuple(p for p in self.params if not p.keyword_only and p.kind != "key")

    @property
    def keyword_only(self) -> Tuple[Param, ...]:
        return tuple(p for p in self.params if p.keyword_only and p.kind != "key")

    @property
    def variadic(self) -> Optional[Param]:
        return next((p for p in self.params if p.variadic), None)

    @property
    def key_param(self) -> Optional[Param]:
        return next((p for p in self.params if p.kind == "key"), None)

    def apply(self, *args, **kwargs):
        """Call the function on tensors the caller keeps: an accumulating method, which writes
        into its first argument, works on a copy of it."""
        if self.accumulates and args and hasattr(args[0], "clone"):
            args = (args[0].clone(), *args[1:])
        return self.func(*args, **kwargs)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise ParameterError(self.name, name, "no such parameter",
                             f"parameters are: {', '.join(p.name for p in self.params if p.kind != 'key')}")

    def bound_argument(self, node, name: str):
        """The node bound to ``name`` in a MergeNode of this method."""
        fixed = [p for p in self.positional if not p.variadic]
        for i, p in enumerate(fixed):
            if p.name == name:
                return node.args[i]
        for k, v in node.kwargs:
            if k == name:
                return v
        raise ParameterError(self.name, name, "no such parameter")

    def arguments(self, node):
        """``(param, node)`` pairs of a MergeNode, variadic ones repeated, in call order."""
        fixed = [p for p in self.positional if not p.variadic]
        out = [(p, a) for p, a in zip(fixed, node.args)]
        var = self.variadic
        for a in node.args[len(fixed):]:
            out.append((var, a))
        kw = dict(node.kwargs)
        out.extend((p, kw[p.name]) for p in self.keyword_only)
        return out

    def describe(self) -> Dict[str, Any]:
        """Plain data for UIs, docs and the command line."""
        return {
            "name": self.name,
            "label": self.label or self.name.replace("_", " "),
            "help": self.help,
            "category": self.category,
            "returns": self.returns,
            "elementwise": self.elementwise,
            "stochastic": self.stochastic,
            "version": self.version,
            "notes": list(self.notes),
            "params": [p.describe() for p in self.params if p.kind != "key"],
        }


def make_spec(func: Callable, *, name: Optional[str] = None, returns: str = SAME,
              varargs: Optional[Param] = None, **options) -> MethodSpec:
    """Read a function's signature into a :class:`MethodSpec`; reject bad signatures at once."""
    ident = name or func.__name__
    params = []
    workspace = None
    for p in inspect.signature(func).parameters.values():
        if isinstance(p.default, Workspace):
            workspace = _workspace_parameter(ident, p, workspace)
            continue
        if workspace is not None and p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
            raise TypeError(f"merge method {ident}: the KeyWorkspace() parameter {workspace!r} must be "
                            "keyword-only or the last parameter")
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            desc = varargs or Tensor(SAME)
            params.append(_named(desc, p.name, variadic=True))
            continue
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            raise TypeError(f"merge method {ident}: **{p.name} is not allowed; declare each parameter")
        if not isinstance(p.default, Param):
            raise TypeError(f"merge method {ident}: parameter {p.name!r} needs a descriptor "
                            "(Tensor(), Float(), Int(), Bool(), Str(), CurrentKey() or KeyWorkspace()) "
                            "as its default")
        kw_only = p.kind is inspect.Parameter.KEYWORD_ONLY
        params.append(_named(p.default, p.name, keyword_only=kw_only))
    _validate(ident, params, returns)
    if options.get("accumulates") and not (options.get("elementwise") and params and params[0].is_tensor):
        raise TypeError(f"merge method {ident}: accumulates=True needs an elementwise method whose first "
                        "parameter is a tensor")
    temporaries = options.get("temporaries", 0.0)
    if not (isinstance(temporaries, (int, float)) and math.isfinite(temporaries) and temporaries >= 0):
        raise TypeError(f"merge method {ident}: temporaries must be a finite number of key-sized buffers, "
                        f"0 or more; got {temporaries!r}")
    fresh_seed = options.get("fresh_seed")
    if fresh_seed is not None and not any(p.name == fresh_seed and p.kind == "int" and p.nullable for p in params):
        raise TypeError(f"merge method {ident}: fresh_seed={fresh_seed!r} must name a nullable Int parameter")
    return MethodSpec(ident, func, tuple(params), returns, workspace=workspace, **options)


def _workspace_parameter(ident: str, p: inspect.Parameter, seen: Optional[str]) -> str:
    if seen is not None:
        raise TypeError(f"merge method {ident}: one KeyWorkspace() parameter is enough, got {seen!r} and {p.name!r}")
    if p.kind not in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
        raise TypeError(f"merge method {ident}: KeyWorkspace() parameter {p.name!r} must be a named parameter")
    return p.name


def _named(desc: Param, name: str, **flags) -> Param:
    from dataclasses import replace
    return replace(desc, name=name, **flags)


def _validate(ident: str, params, returns: str) -> None:
    if returns not in SPACES + (SAME,):
        raise TypeError(f"merge method {ident}: unknown return space {returns!r}")
    seen_default = False
    for p in params:
        if p.kind not in ("tensor", "float", "int", "bool", "str", "key"):
            raise TypeError(f"merge method {ident}: parameter {p.name!r} has unknown kind {p.kind!r}")
        if p.is_tensor and p.space not in SPACES + (SAME,):
            raise TypeError(f"merge method {ident}: parameter {p.name!r} has unknown space {p.space!r}")
        if not p.is_tensor and p.kind != "key" and not p.required:
            p.check(ident, p.default)
        if p.keyword_only or p.variadic or p.kind == "key":
            continue
        if not p.required:
            seen_default = True
        elif seen_default:
            raise TypeError(f"merge method {ident}: required parameter {p.name!r} follows one with a default")
    if returns == SAME and not any(p.is_tensor and p.space == SAME for p in params):
        raise TypeError(f"merge method {ident}: returns SAME but no tensor parameter is SAME")
