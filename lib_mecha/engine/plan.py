"""Planning: recipe + opened inputs → for every output key, what to compute and where it goes.

The plan is a value computed before any tensor is read. For each output key it holds the
expression to evaluate (see :mod:`.expr`), the output shape and dtype, whether the key can be
merged chunk by chunk, and a fingerprint of everything that produced it. Keys the recipe
cannot produce are listed with the reason. Every check that can fail without reading tensor
data (missing models, architecture mismatches, shape disagreements, parameter values per
key) fails here, so a bad recipe never leaves a half-written file.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..arch.base import Architecture
from ..errors import ArchitectureMismatch, NothingToMerge, ParameterError, ShapeMismatch
from ..methods import build, resolve
from ..recipe import LiteralNode, MergeNode, ModelNode, RecipeNode, model, models_of, walk
from .expr import Call, Const, Expr, Read, calls, children, distinct, reads
from .options import KEEP, MergeOptions
from .sources import Source, SourceSet


@dataclass(frozen=True)
class KeyPlan:
    key: str
    expr: Expr
    shape: Tuple[int, ...]
    dtype: torch.dtype          # dtype written to the output
    copy_only: bool             # integer/bool buffers: copied unchanged from the first input
    chunkable: bool             # every step is elementwise: may be merged in slices
    fingerprint: str
    uses: Tuple[Tuple[Expr, int], ...] = field(default=(), compare=False, repr=False)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * _itemsize(self.dtype)


@dataclass(frozen=True)
class Skipped:
    key: str
    reason: str


@dataclass
class Plan:
    recipe: RecipeNode
    options: MergeOptions
    sources: List[Source]
    keys: List[KeyPlan]
    skipped: List[Skipped]
    architecture: Optional[Architecture]
    _source_set: SourceSet = field(repr=False, default=None)
    warnings: List[str] = field(default_factory=list)

    @property
    def output_bytes(self) -> int:
        return sum(k.nbytes for k in self.keys)

    def skipped_summary(self, examples: int = 5) -> str:
        return summarize_skipped(self.skipped, examples)

    def close(self) -> None:
        if self._source_set is not None:
            self._source_set.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def summarize_skipped(skipped: List[Skipped], examples: int = 5) -> str:
    """One line: how many keys cannot be produced, the first reason, and a few examples."""
    if not skipped:
        return ""
    shown = ", ".join(s.key for s in skipped[:examples])
    more = f" and {len(skipped) - examples} more" if len(skipped) > examples else ""
    return f"{len(skipped)} keys cannot be produced ({skipped[0].reason}): {shown}{more}"


def make_plan(recipe: RecipeNode, options: MergeOptions) -> Plan:
    """Open the recipe's inputs and compile every output key. The caller closes the plan."""
    user_recipe = recipe
    if options.fallback_model:
        recipe = build("fallback", recipe, model(options.fallback_model))
    source_set = SourceSet(options.model_dirs)
    source_set.open(models_of(recipe))
    try:
        compiler = _Compiler(source_set)
        root_arch = compiler.architecture(recipe)
        compiler.root_architecture = root_arch
        keys: List[KeyPlan] = []
        skipped: List[Skipped] = []
        key_sources = [source_set.of(n) for n in _key_defining_models(recipe)]
        for key in _candidate_keys(key_sources, root_arch):
            compiler.begin_key()
            expr = compiler.compile(recipe, key)
            if expr is None or isinstance(expr, Const):
                skipped.append(Skipped(key, _why_missing(source_set.sources, key)))
                continue
            keys.append(_key_plan(key, expr, options, source_set.sources))
        if not keys:
            raise NothingToMerge("no output key can be produced: the inputs share no keys"
                                 + (f" ({skipped[0].reason})" if skipped else ""))
        return Plan(user_recipe, options, source_set.sources, keys, skipped, root_arch, source_set,
                    compiler.warnings)
    except BaseException:
        source_set.close()
        raise


def _key_defining_models(root: RecipeNode) -> List[ModelNode]:
    """The models whose key names are output keys: all of them but those reached only through
    parameters declared ``defines_keys=False`` (a LoRA's own key names are not the output's)."""
    found: Dict[ModelNode, None] = {}
    seen = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if isinstance(node, ModelNode):
            found[node] = None
        elif isinstance(node, MergeNode):
            args = resolve(node.method).arguments(node)
            stack.extend(child for param, child in reversed(args) if param.defines_keys)
        else:
            stack.extend(reversed(node.children()))
    return list(found)


def _candidate_keys(sources: List[Source], arch: Optional[Architecture]) -> List[str]:
    """Every key any input holds: the architecture's order first, then first-seen order."""
    present: Dict[str, None] = {}
    for s in sources:
        for k in s.key_map:
            present.setdefault(k, None)
    ordered = [k for k in arch.keys if k in present] if arch is not None else []
    seen = set(ordered)
    ordered.extend(k for k in present if k not in seen)
    return ordered


def _why_missing(sources: List[Source], key: str) -> str:
    lacking = [s.label for s in sources if key not in s.key_map]
    if lacking:
        return "missing in " + ", ".join(lacking)
    return "excluded by the recipe"


def _itemsize(dtype: torch.dtype) -> int:
    return dtype.itemsize


def _key_plan(key: str, expr: Expr, options: MergeOptions, sources: List[Source]) -> KeyPlan:
    leaves = reads(expr)
    first = leaves[0] if leaves else None
    copy_only = any(not r.dtype.is_floating_point for r in leaves)
    if copy_only:
        first = next(r for r in leaves if not r.dtype.is_floating_point)
        expr = first
    if expr.shape is None:
        raise ParameterError("merge", None, f"key {key!r} evaluates to a scalar, not a tensor")
    out_dtype = options.torch_output_dtype
    if copy_only:
        dtype = first.dtype
    elif out_dtype == KEEP:
        dtype = first.dtype
    else:
        dtype = out_dtype
    numel = 1
    for d in expr.shape:
        numel *= d
    chunkable = (not copy_only and all(resolve(c.method).elementwise for c in calls(expr))
                 and all(_numel(r.shape) == numel for r in leaves))
    return KeyPlan(key, expr, tuple(expr.shape), dtype, copy_only, chunkable,
                   _fingerprint(expr, dtype, options, sources), _use_counts(expr))


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _use_counts(expr: Expr) -> Tuple[Tuple[Expr, int], ...]:
    """How many parents consume each sub-expression: the executor frees a value at zero."""
    counts: Dict[Expr, int] = {expr: 1}
    for e in distinct(expr):
        for c in children(e):
            counts[c] = counts.get(c, 0) + 1
    return tuple(counts.items())


def _fingerprint(expr: Expr, dtype, options: MergeOptions, sources: List[Source]) -> str:
    """Everything the key's value depends on: the library's and each method's version, the
    expression with the values this key sees (block and pattern values already resolved), each
    input's identity (path, size and times), the output dtype, the compute dtype and device type.
    Equal fingerprint, equal tensor: a live re-merge reuses keys by it."""
    from .. import __version__
    h = hashlib.sha256(f"lib_mecha {__version__}".encode())
    identities = [s.identity for s in sources]

    def feed(e):
        if isinstance(e, Read):
            h.update(f"R({identities[e.source]},{e.key})".encode())
        elif isinstance(e, Const):
            h.update(f"C({type(e.value).__name__}:{e.value!r})".encode())
        else:
            h.update(f"M({e.method}@{resolve(e.method).version}".encode())
            for a in e.args:
                feed(a)
            for k, v in e.kwargs:
                h.update(k.encode())
                feed(v)
            h.update(b")")
    feed(expr)
    h.update(f"|{dtype}|{options.compute_dtype}|{torch.device(options.device).type}".encode())
    return h.hexdigest()[:32]


class _Compiler:
    """Compiles recipe nodes into per-key expressions; the ``ctx`` of method routes."""

    def __init__(self, source_set: SourceSet):
        self.source_set = source_set
        self._memo: Dict[Tuple[RecipeNode, str], Optional[Expr]] = {}
        self._arch: Dict[RecipeNode, Any] = {}
        self._layouts: Dict[RecipeNode, Any] = {}
        self.warnings: List[str] = []
        self.root_architecture: Optional[Architecture] = None

    def begin_key(self) -> None:
        self._memo.clear()

    # --- the route context -----------------------------------------------------------

    def compile(self, node: RecipeNode, key: str) -> Optional[Expr]:
        memo_key = (node, key)
        if memo_key in self._memo:
            return self._memo[memo_key]
        if isinstance(node, ModelNode):
            result = self._compile_model(node, key)
        elif isinstance(node, LiteralNode):
            result = self._compile_literal(node, key)
        else:
            spec = resolve(node.method)
            result = spec.route(node, key, self) if spec.route else self.default(node, key)
        self._memo[memo_key] = result
        return result

    def constant(self, node: RecipeNode, key: str):
        expr = self.compile(node, key)
        if isinstance(expr, Const):
            return expr.value
        if expr is None:
            raise ParameterError("recipe", None, f"no value for key {key!r} in {node!r}")
        raise ParameterError("recipe", None, f"{node!r} must be a constant here, not a model")

    def source(self, node: ModelNode) -> Source:
        """The opened input behind a model node (path, ``file.tensors``, ``file.read``), for
        routes that read an input's own keys, such as a LoRA's."""
        return self.source_set.of(node)

    def warn(self, message: str) -> None:
        """Report something the user should know that does not stop the merge."""
        if message not in self.warnings:
            self.warnings.append(message)

    def architecture(self, node: RecipeNode) -> Optional[Architecture]:
        if node in self._arch:
            return self._arch[node]
        if isinstance(node, ModelNode):
            result = self.source_set.of(node).architecture
        elif isinstance(node, LiteralNode):
            result = None
        else:
            spec = resolve(node.method)
            if spec.output_architecture is not None:
                result = spec.output_architecture(node, self)
            else:
                result = self._common_architecture(node, spec)
        self._arch[node] = result
        return result

    def default(self, node: MergeNode, key: str) -> Optional[Expr]:
        """One output key from the same key of every argument; scalars broadcast."""
        spec = resolve(node.method)
        args: List[Expr] = []
        kwargs: List[Tuple[str, Expr]] = []
        tensor_args: List[Tuple[str, Expr]] = []
        for param, child in spec.arguments(node):
            expr = self.compile(child, key)
            if expr is None:
                return None
            if isinstance(expr, Const) and not param.is_tensor:
                param.check(spec.name, expr.value)
            if param.is_tensor and expr.shape is not None:
                tensor_args.append((param.name, expr))
            if param.keyword_only:
                kwargs.append((param.name, expr))
            else:
                args.append(expr)
        shape = self._output_shape(spec, key, tensor_args)
        if spec.key_param is not None:
            kwargs.append((spec.key_param.name, Const(key)))
        # the stored dtype the result stands for: lets routes above tell weights from int buffers
        dtype = tensor_args[0][1].dtype if tensor_args else None
        return Call(spec.name, tuple(args), tuple(kwargs), shape, dtype)

    # --- internals ---------------------------------------------------------------------

    def _output_shape(self, spec, key, tensor_args):
        shapes = [e.shape for _, e in tensor_args]
        if spec.output_shape is not None:
            return tuple(spec.output_shape(shapes))
        if not shapes:
            return None
        first = tensor_args[0][1]
        for _, e in tensor_args[1:]:
            if e.shape != first.shape:
                raise ShapeMismatch(key, first.shape, e.shape,
                                    f"{spec.name}: {self._describe(first)} vs {self._describe(e)}")
        return first.shape

    def _describe(self, expr: Expr) -> str:
        leaf = next(iter(reads(expr)), None)
        return self.source_set.sources[leaf.source].label if leaf is not None else "a computed value"

    def _compile_model(self, node: ModelNode, key: str) -> Optional[Expr]:
        source = self.source_set.of(node)
        stored = source.key_map.get(key)
        if stored is None:
            return None
        info = source.file.tensors[stored]
        return Read(source.index, stored, tuple(info.shape), info.dtype)

    def _compile_literal(self, node: LiteralNode, key: str) -> Optional[Expr]:
        if not node.is_dict:
            return Const(node.value)
        mapping = node.mapping
        if key not in mapping:
            layout = self._block_layout(node)
            if layout is None:
                return None
            block = layout.block_of(key)
            if block not in mapping:
                raise ParameterError("recipe", None, f"the block dict has no value for block {block} "
                                     f"(key {key!r}, layout {layout.identifier})",
                                     "give every block a value, or use lib_mecha.blocks(..., default=...)")
            value = mapping[block]
        else:
            value = mapping[key]
        if isinstance(value, RecipeNode):
            return self.compile(value, key)
        return Const(value)

    def _block_layout(self, node: LiteralNode):
        """A plain dict of block names (no config) is read as block values, as sd-mecha does,
        in the layout of the merged models' architecture."""
        if node.model_config is not None:
            return None
        if node not in self._layouts:
            from ..arch.block_weights import layout_for_block_dict
            from ..arch.layouts import resolve_layout
            arch = self.root_architecture
            ident = layout_for_block_dict(node.mapping, arch.identifier if arch else None)
            self._layouts[node] = resolve_layout(ident) if ident else None
        return self._layouts[node]

    def _common_architecture(self, node: MergeNode, spec) -> Optional[Architecture]:
        found: Optional[Tuple[Architecture, RecipeNode]] = None
        generic: Optional[RecipeNode] = None
        for param, child in spec.arguments(node):
            if not param.is_tensor or not param.defines_keys or isinstance(child, LiteralNode):
                continue  # side inputs (a LoRA, a VAE file) are read by the method's own route
            arch = self.architecture(child)
            if arch is None:
                if isinstance(child, ModelNode) or generic is None:
                    generic = generic or child
                continue
            if found is None:
                found = (arch, child)
            elif found[0].identifier != arch.identifier:
                raise ArchitectureMismatch(
                    f"{spec.name}: {self._name(found[1])} is {found[0].identifier} but "
                    f"{self._name(child)} is {arch.identifier}",
                    "merge models of one architecture, or pick a component both share")
        if found is not None and isinstance(generic, ModelNode):
            raise ArchitectureMismatch(
                f"{spec.name}: {self._name(found[1])} is {found[0].identifier} but "
                f"{self._name(generic)} is not a recognised {found[0].identifier} model",
                "merge models of one architecture")
        return found[0] if found else None

    def _name(self, node: RecipeNode) -> str:
        if isinstance(node, ModelNode):
            return self.source_set.of(node).label
        leaf = next((n for n in walk(node) if isinstance(n, ModelNode)), None)
        return f"the result built from {self.source_set.of(leaf).label}" if leaf else repr(node)


def finalize(recipe: RecipeNode, model_dirs=()) -> RecipeNode:
    """The recipe as sd-mecha's ``serialize(finalize=True)`` writes it: every model with its
    absolute resolved path and detected architecture, scalars in param space. Unknown
    architectures stay null, since sd-mecha cannot read 'structural' back."""
    sources = SourceSet(model_dirs)
    try:
        sources.open(models_of(recipe))
        return _finalized(recipe, sources, absolute_paths=True)
    finally:
        sources.close()


def finalize_with(plan: "Plan") -> RecipeNode:
    """What a merge embeds in its output: architectures and spaces filled in, the paths kept
    as the user wrote them (sd-mecha embeds the same)."""
    return _finalized(plan.recipe, plan._source_set, absolute_paths=False)


def _finalized(recipe: RecipeNode, sources: SourceSet, absolute_paths: bool) -> RecipeNode:
    mapping: Dict[RecipeNode, RecipeNode] = {}
    for n in walk(recipe):
        if isinstance(n, ModelNode):
            arch = sources.of(n).architecture
            config = n.model_config or (arch.identifier if arch is not None else None)
            path = str(sources.of(n).path) if absolute_paths else n.path
            mapping[n] = replace(n, path=path, model_config=config)
        elif isinstance(n, LiteralNode) and not n.is_dict and n.merge_space is None:
            mapping[n] = LiteralNode(n.value, n.model_config, "param")
    return _substitute(recipe, mapping) if mapping else recipe


def _substitute(root: RecipeNode, mapping: Dict[RecipeNode, RecipeNode]) -> RecipeNode:
    done: Dict[RecipeNode, RecipeNode] = {}
    for node in walk(root):
        if node in mapping:
            done[node] = mapping[node]
        elif isinstance(node, MergeNode):
            done[node] = MergeNode(node.method, tuple(done[a] for a in node.args),
                                   tuple((k, done[v]) for k, v in node.kwargs))
        elif isinstance(node, LiteralNode) and node.is_dict:
            done[node] = LiteralNode(tuple((k, done.get(v, v) if isinstance(v, RecipeNode) else v)
                                           for k, v in node.value), node.model_config, node.merge_space)
        else:
            done[node] = node
    return done[root]
