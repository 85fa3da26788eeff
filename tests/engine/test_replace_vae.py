"""replace_vae: a bare VAE file (encoder./decoder. names) baked into a checkpoint."""
from __future__ import annotations

import pytest
import torch
from engine_fixtures import make_sd1
from safetensors.torch import save_file

import lib_mecha as mecha
from lib_mecha.errors import ParameterError

PREFIX = "first_stage_model."


def test_bare_vae_file_replaces_the_models_vae(tmp_path):
    base = make_sd1(0)
    vae = {k[len(PREFIX):]: torch.full_like(v, 0.5) for k, v in make_sd1(1).items() if k.startswith(PREFIX)}
    del vae["decoder.conv_out.bias"]
    save_file(base, str(tmp_path / "m.safetensors"))
    save_file(vae, str(tmp_path / "vae.safetensors"))
    result = mecha.merge(mecha.replace_vae(mecha.model("m"), mecha.model("vae")), model_dirs=[tmp_path])
    out = result.state_dict
    assert set(out) == set(base) and result.skipped == []
    assert torch.equal(out[PREFIX + "encoder.conv_in.weight"], vae["encoder.conv_in.weight"])
    assert torch.equal(out[PREFIX + "decoder.conv_out.bias"], base[PREFIX + "decoder.conv_out.bias"])
    assert torch.equal(out["model.diffusion_model.out.2.weight"], base["model.diffusion_model.out.2.weight"])
    assert any("decoder.conv_out.bias" in w for w in result.warnings)


def test_a_vae_of_another_shape_is_refused(tmp_path):
    base = make_sd1(0)
    save_file(base, str(tmp_path / "m.safetensors"))
    save_file({"encoder.conv_in.weight": torch.zeros(3, 3, 3, 3)}, str(tmp_path / "vae.safetensors"))
    with pytest.raises(ParameterError, match="encoder.conv_in.weight"):
        mecha.merge(mecha.replace_vae(mecha.model("m"), mecha.model("vae")), model_dirs=[tmp_path])
