"""Merging LoRAs into one file and extracting a LoRA from two checkpoints (real SD1 key names)."""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import lib_mecha
from lib_mecha.errors import OutputExists, ParameterError
from lib_mecha.lora import bake, lora
from lib_mecha.lora.combine import merge_loras
from lib_mecha.lora.extract import extract_lora
from lib_mecha.lora.save import factorise

Q = "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"
CONV = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"   # (320, 320, 3, 3)
Q_NAME = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
CONV_NAME = "lora_unet_down_blocks_0_resnets_0_conv1"


def _g(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed * 7919 + sum(shape)))


def _save(path, tensors, metadata=None):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def _kohya(name, up, down, alpha=None):
    out = {f"{name}.lora_up.weight": up, f"{name}.lora_down.weight": down}
    if alpha is not None:
        out[f"{name}.alpha"] = torch.tensor(float(alpha))
    return out


def _read(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _delta(t, name):
    up, down = t[f"{name}.lora_up.weight"].float(), t[f"{name}.lora_down.weight"].float()
    d = up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)
    alpha = t.get(f"{name}.alpha")
    return d * (float(alpha) / down.shape[0] if alpha is not None else 1.0)


def test_merge_two_loras_exactly_at_sufficient_rank(tmp_path):
    a = _save(tmp_path / "a.safetensors", {**_kohya(Q_NAME, _g(768, 2), _g(2, 768, seed=1), alpha=1),
                                           **_kohya(CONV_NAME, _g(320, 2, 1, 1), _g(2, 320, 3, 3, seed=2))})
    b = _save(tmp_path / "b.safetensors", _kohya(Q_NAME, _g(768, 3, seed=3), _g(3, 768, seed=4)))
    out = tmp_path / "merged.safetensors"
    saved = merge_loras([lora(str(a), 0.5), lora(str(b), -1.0)], out, rank=8, dtype="fp32")
    assert saved.modules == 2 and saved.max_rank == 5
    t, meta = _read(out)
    ta, _ = _read(a)
    tb, _ = _read(b)
    expected_q = 0.5 * _delta(ta, Q_NAME) - _delta(tb, Q_NAME)
    torch.testing.assert_close(_delta(t, Q_NAME), expected_q, rtol=1e-4, atol=1e-4)
    assert t[f"{CONV_NAME}.lora_down.weight"].shape == (2, 320, 3, 3)
    assert t[f"{CONV_NAME}.lora_up.weight"].shape == (320, 2, 1, 1)
    torch.testing.assert_close(_delta(t, CONV_NAME), 0.5 * _delta(ta, CONV_NAME), rtol=1e-4, atol=1e-4)
    assert meta["ss_network_module"] == "networks.lora" and meta["ss_network_dim"] == "5"
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_v2"] == "False"
    with pytest.raises(OutputExists):
        merge_loras([lora(str(a))], out, rank=2)


def test_threshold_picks_the_rank_that_keeps_the_energy():
    d = torch.diag(torch.tensor([10.0, 1.0, 0.1, 0.01])) @ torch.linalg.qr(_g(4, 4))[0]
    assert factorise(d, rank=4, energy=0.98).rank == 1
    assert factorise(d, rank=4, energy=0.999).rank == 2
    assert factorise(d, rank=1, energy=0.999999).rank == 1
    assert factorise(torch.zeros(3, 3), rank=2) is None


def test_bad_rank_is_refused(tmp_path):
    with pytest.raises(ParameterError, match="rank"):
        merge_loras(["x.safetensors"], tmp_path / "o.safetensors", rank=0)


def test_extract_recovers_a_low_rank_difference_and_bakes_back(tmp_path):
    base_sd = {Q: _g(768, 768) * 0.02, CONV: _g(320, 320, 3, 3) * 0.02}
    dq = _g(768, 3, seed=5) @ _g(3, 768, seed=6) * 0.01
    dc = (_g(320, 2, seed=7) @ _g(2, 320 * 9, seed=8)).reshape(320, 320, 3, 3) * 0.01
    tuned_sd = {Q: base_sd[Q] + dq, CONV: base_sd[CONV] + dc}
    base = _save(tmp_path / "base.safetensors", base_sd)
    tuned = _save(tmp_path / "tuned.safetensors", tuned_sd)
    out = tmp_path / "extracted.safetensors"
    saved = extract_lora(str(tuned), str(base), out, rank=4, dtype="fp32")
    assert saved.modules == 2 and saved.min_energy > 0.999999
    t, meta = _read(out)
    assert set(t) == {f"{Q_NAME}.lora_up.weight", f"{Q_NAME}.lora_down.weight", f"{Q_NAME}.alpha",
                      f"{CONV_NAME}.lora_up.weight", f"{CONV_NAME}.lora_down.weight", f"{CONV_NAME}.alpha"}
    torch.testing.assert_close(_delta(t, Q_NAME), dq, rtol=1e-3, atol=1e-5)
    back = lib_mecha.merge(bake(str(base), lora(str(out))), output_dtype="fp32").state_dict
    torch.testing.assert_close(back[CONV], tuned_sd[CONV], rtol=1e-3, atol=1e-5)


def test_extract_with_energy_threshold_uses_smaller_ranks(tmp_path):
    base_sd = {Q: torch.zeros(768, 768)}
    s = torch.tensor([5.0, 1.0, 0.05, 0.01])
    u, v = torch.linalg.qr(_g(768, 4))[0], torch.linalg.qr(_g(768, 4, seed=1))[0]
    base = _save(tmp_path / "base.safetensors", base_sd)
    tuned = _save(tmp_path / "tuned.safetensors", {Q: u @ torch.diag(s) @ v.T})
    saved = extract_lora(str(tuned), str(base), tmp_path / "x.safetensors", rank=16, energy=0.99)
    assert saved.max_rank == 2
