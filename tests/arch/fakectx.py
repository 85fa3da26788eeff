"""A stand-in for the engine's route context: enough to run routes on literal arguments."""
from lib_mecha.engine.expr import Const
from lib_mecha.methods import resolve
from lib_mecha.recipe import LiteralNode, MergeNode


class FakeCtx:
    def __init__(self, architecture=None):
        self._arch = architecture

    def compile(self, node, key):
        if isinstance(node, LiteralNode):
            if node.is_dict:
                m = node.mapping
                return Const(m[key]) if key in m else None
            return Const(node.value)
        if isinstance(node, MergeNode):
            spec = resolve(node.method)
            if spec.route is None:
                raise NotImplementedError(node.method)
            return spec.route(node, key, self)
        raise NotImplementedError(type(node).__name__)

    def constant(self, node, key):
        expr = self.compile(node, key)
        return None if expr is None else expr.value

    def architecture(self, node):
        return self._arch

    def default(self, node, key):
        raise NotImplementedError


def value_for(node, key, architecture=None):
    """The constant a parameter node yields for one key, or None when it yields nothing."""
    expr = FakeCtx(architecture).compile(node, key)
    assert expr is None or isinstance(expr, Const), expr
    return None if expr is None else expr.value
