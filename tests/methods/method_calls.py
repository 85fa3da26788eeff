"""Calling a method's raw function the way the engine does: every parameter the test does not
give gets its declared default, and the current key (and a workspace, when the test gives one)
is passed where the method asks for it."""
from __future__ import annotations

import lib_mecha.methods as methods

TEST_KEY = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"


def builder(name: str):
    return methods.builder_for(methods.resolve(name))


def raw(name_or_builder, *args, key: str = TEST_KEY, workspace=None, **kwargs):
    """Run the raw function of a method (``builder.spec.apply``) with defaults filled in;
    ``workspace``: the Workspace to pass (default: the method's own, which lends nothing)."""
    spec = builder(name_or_builder).spec if isinstance(name_or_builder, str) else name_or_builder.spec
    call_kwargs = {}
    fixed = [p for p in spec.positional if not p.variadic]
    positional = list(args)
    if spec.variadic is None:
        for p, value in zip(fixed, args):
            kwargs.setdefault(p.name, value)
        positional = []
        for p in fixed:
            call_kwargs[p.name] = kwargs.pop(p.name, p.default)
    for p in spec.keyword_only:
        call_kwargs[p.name] = kwargs.pop(p.name, p.default)
    if spec.key_param is not None:
        call_kwargs[spec.key_param.name] = key
    if workspace is not None and spec.workspace is not None:
        call_kwargs[spec.workspace] = workspace
    if kwargs:
        raise TypeError(f"{spec.name} has no parameter(s) {sorted(kwargs)}")
    return spec.apply(*positional, **call_kwargs)


def tensor_arity(name: str) -> int:
    """How many tensor arguments a non-variadic method takes."""
    return sum(1 for p in methods.resolve(name).params if p.is_tensor and not p.variadic)
