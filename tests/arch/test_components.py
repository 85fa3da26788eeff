"""Components of every architecture, and different values per component."""
import pytest
from safetensors import safe_open
from safetensors.torch import save_file

import lib_mecha.arch as arch
from fakectx import value_for
from lib_mecha.arch.demo import random_state_dict
from lib_mecha.errors import ParameterError

COMPONENTS = {
    "sd1-ldm": ("clip_l", "vae", "diffuser", "ema", "scheduler"),
    "sd2-ldm": ("clip_h", "vae", "diffuser", "ema", "scheduler"),
    "sdxl-sgm": ("clip_l", "clip_g", "vae", "diffuser", "scheduler"),
    "sdxl_refiner-sgm": ("clip_g", "vae", "diffuser", "scheduler"),
    "sd3-comfyui": ("vae", "diffuser", "clip_g", "clip_l", "t5xxl"),
    "sd3.5_large-comfyui": ("vae", "diffuser", "clip_g", "clip_l", "t5xxl"),
    "sd3.5_medium-comfyui": ("vae", "diffuser", "clip_g", "clip_l", "t5xxl"),
    "flux-flux": ("diffuser", "clip_l", "t5xxl", "vae"),
}


@pytest.mark.parametrize("ident", sorted(COMPONENTS))
def test_components_and_a_small_file_with_real_key_names(ident, tmp_path):
    table = arch.resolve_architecture(ident)
    assert table.components == COMPONENTS[ident]
    path = tmp_path / f"{ident}.safetensors"
    save_file(random_state_dict(ident, seed=5, shape_divisor=512), str(path))
    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in keys}
    assert arch.detect(keys, shapes) is table


def test_different_values_per_component():
    node = arch.component_weights("sd1-ldm", {"clip_l": 0.2, "diffuser": 0.8}, default=0.5)
    assert node.method == "fallback"
    assert value_for(node, "cond_stage_model.transformer.text_model.final_layer_norm.weight") == 0.2
    assert value_for(node, "model.diffusion_model.out.2.weight") == 0.8
    assert value_for(node, "first_stage_model.quant_conv.weight") == 0.5
    full = arch.component_weights("flux-flux", {"diffuser": 1, "clip_l": 0, "t5xxl": 0, "vae": 0})
    assert full.is_dict and full.model_config == "flux-flux"


def test_unknown_or_missing_component():
    with pytest.raises(ParameterError, match="'unet' is not a component of sd1-ldm"):
        arch.component_weights("sd1-ldm", {"unet": 1.0}, default=0)
    with pytest.raises(ParameterError, match="'clip' is not a component of sdxl-sgm.*did you mean"):
        arch.component_weights("sdxl-sgm", {"clip": 1.0}, default=0)
    with pytest.raises(ParameterError, match="no value for component\\(s\\) vae, ema, scheduler"):
        arch.component_weights("sd1-ldm", {"clip_l": 1.0, "diffuser": 0.5})
