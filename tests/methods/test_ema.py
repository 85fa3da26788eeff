"""exchange_ema: key routing on the sd1-ldm table, with a stand-in planning context."""
import pytest

from lib_mecha.arch.base import resolve_architecture
from lib_mecha.errors import ParameterError
from lib_mecha.methods.ema import twin_key
from lib_mecha.recipe import model
from method_calls import builder

UNET_KEY = "model.diffusion_model.input_blocks.1.1.proj_in.weight"
EMA_KEY = "model_ema.diffusion_modelinput_blocks11proj_inweight"


class Context:
    """What the planner offers a route: here, reads of the keys a file holds."""

    def __init__(self, arch, keys):
        self.arch, self.keys = arch, set(keys)

    def architecture(self, node):
        return self.arch

    def compile(self, node, key):
        return ("read", key) if key in self.keys else None


def _route(keys, key, arch="sd1-ldm"):
    node = builder("exchange_ema")(model("trained.safetensors"))
    spec = builder("exchange_ema").spec
    return spec.route(node, key, Context(resolve_architecture(arch) if arch else None, keys))


def test_twin_keys_follow_the_ldm_ema_naming():
    arch = resolve_architecture("sd1-ldm")
    assert twin_key(arch, UNET_KEY) == EMA_KEY
    assert twin_key(arch, EMA_KEY) == UNET_KEY
    assert twin_key(arch, "first_stage_model.decoder.conv_in.weight") is None
    assert twin_key(arch, "model_ema.decay") is None


def test_exchange_ema_swaps_unet_and_ema_keys():
    keys = {UNET_KEY, EMA_KEY, "cond_stage_model.transformer.text_model.final_layer_norm.weight"}
    assert _route(keys, UNET_KEY) == ("read", EMA_KEY)
    assert _route(keys, EMA_KEY) == ("read", UNET_KEY)
    other = "cond_stage_model.transformer.text_model.final_layer_norm.weight"
    assert _route(keys, other) == ("read", other)


def test_exchange_ema_without_an_ema_copy_keeps_the_weights():
    assert _route({UNET_KEY}, UNET_KEY) == ("read", UNET_KEY)


def test_exchange_ema_refuses_architectures_without_a_known_layout():
    with pytest.raises(ParameterError, match="sd1-ldm"):
        _route({UNET_KEY}, UNET_KEY, arch=None)
