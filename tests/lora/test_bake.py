"""Baking LoRAs through the engine: real key names, tiny shapes, files written by the test."""
from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file

import lib_mecha
from lib_mecha.arch.demo import random_state_dict
from lib_mecha.errors import ArchitectureMismatch, MergeSpaceError, SafetensorsError
from lib_mecha.lora import bake, inspect, lora
from lib_mecha.lora.algorithms import ALGORITHMS
from lib_mecha.lora.methods import apply_lora, lora_delta

U = "model.diffusion_model."
PROJ_IN = U + "input_blocks.1.1.proj_in.weight"          # conv 1x1, (5, 5, 1, 1) at 1/64 size
Q_TE = "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"  # (12, 12)
MID_Q = U + "middle_block.1.transformer_blocks.0.attn1.to_q.weight"  # (20, 20)
OUT_FF = U + "output_blocks.11.1.transformer_blocks.0.ff.net.2.weight"  # (5, 20)


@pytest.fixture(scope="module")
def base_sd():
    return random_state_dict("sd1-ldm", seed=1, dtype=torch.float32, shape_divisor=64, scale=0.1)


@pytest.fixture()
def base_path(tmp_path, base_sd):
    path = tmp_path / "base.safetensors"
    save_file(base_sd, str(path))
    return path


def _lora_file(tmp_path, name, tensors):
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path),
              metadata={"ss_network_module": "networks.lora"})
    return path


def _g(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed + sum(shape)))


@pytest.fixture()
def mixed_lora(tmp_path):
    """kohya LoRA on a conv, a diffusers/PEFT text-encoder module, LoHa, DoRA, and one stray module."""
    t = {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": _g(5, 2, 1, 1),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": _g(2, 5, 1, 1, seed=1),
        "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(1.0),
        "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight": _g(3, 12),
        "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight": _g(12, 3, seed=2),
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q.hada_w1_a": _g(20, 2),
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q.hada_w1_b": _g(2, 20, seed=3),
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q.hada_w2_a": _g(20, 2, seed=4),
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q.hada_w2_b": _g(2, 20, seed=5),
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q.alpha": torch.tensor(4.0),
        "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2.lora_up.weight": _g(5, 2, seed=6),
        "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2.lora_down.weight": _g(2, 20, seed=7),
        "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2.dora_scale": _g(1, 20, seed=8).abs(),
        "lora_unet_not_a_module_anywhere.lora_up.weight": _g(5, 2, seed=9),
        "lora_unet_not_a_module_anywhere.lora_down.weight": _g(2, 5, seed=10),
    }
    return _lora_file(tmp_path, "mixed.safetensors", t), t


def _module(t, prefix):
    return {k[len(prefix) + 1:]: v for k, v in t.items() if k.startswith(prefix + ".")}


def _expected_deltas(t, base_sd):
    A = ALGORITHMS
    out = {}
    m = _module(t, "lora_unet_down_blocks_0_attentions_0_proj_in")
    out[PROJ_IN] = A["lora"].delta(m, None, tuple(base_sd[PROJ_IN].shape))
    m = {"lora_down.weight": t["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"],
         "lora_up.weight": t["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight"]}
    out[Q_TE] = A["lora"].delta(m, None, (12, 12))
    out[MID_Q] = A["loha"].delta(_module(t, "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q"),
                                 None, (20, 20))
    out[OUT_FF] = A["lora"].delta(_module(t, "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2"),
                                  base_sd[OUT_FF], (5, 20))
    return out


def test_bake_matches_the_algorithms_and_leaves_the_rest(base_path, base_sd, mixed_lora, caplog):
    path, t = mixed_lora
    with caplog.at_level(logging.WARNING, logger="lib_mecha.lora"):
        result = lib_mecha.merge(bake(lib_mecha.model(str(base_path)), lora(str(path), 0.7)), output_dtype="fp32")
    sd = result.state_dict
    deltas = _expected_deltas(t, base_sd)
    for key, d in deltas.items():
        assert d.abs().max() > 1e-3
        torch.testing.assert_close(sd[key], base_sd[key] + 0.7 * d, rtol=1e-5, atol=1e-6)
    untouched = [k for k in base_sd if k not in deltas and base_sd[k].is_floating_point()]
    assert len(untouched) > 1000
    for key in untouched[::50]:
        assert torch.equal(sd[key], base_sd[key]), key
    # the stray module is reported by count and name
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "1 of 5 modules" in text and "lora_unet_not_a_module_anywhere" in text


def test_two_loras_apply_in_order_and_add_for_linear_algorithms(tmp_path, base_path, base_sd):
    t1 = {"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": _g(12, 2),
          "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": _g(2, 12, seed=1)}
    t2 = {"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lokr_w1": _g(3, 2),
          "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lokr_w2": _g(4, 6, seed=1)}
    p1, p2 = _lora_file(tmp_path, "a.safetensors", t1), _lora_file(tmp_path, "b.safetensors", t2)
    sd = lib_mecha.merge(bake(str(base_path), lora(str(p1), 0.5), lora(str(p2), -1.0)), output_dtype="fp32").state_dict
    d1 = ALGORITHMS["lora"].delta(_module(t1, "lora_te_text_model_encoder_layers_0_self_attn_q_proj"), None, (12, 12))
    d2 = ALGORITHMS["lokr"].delta(_module(t2, "lora_te_text_model_encoder_layers_0_self_attn_q_proj"), None, (12, 12))
    torch.testing.assert_close(sd[Q_TE], base_sd[Q_TE] + 0.5 * d1 - d2, rtol=1e-5, atol=1e-6)


def test_block_weights_scale_per_block(tmp_path, base_path, base_sd):
    t = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": _g(5, 2, 1, 1),
         "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": _g(2, 5, 1, 1, seed=1),
         "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2.lora_up.weight": _g(5, 2),
         "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2.lora_down.weight": _g(2, 20, seed=2)}
    path = _lora_file(tmp_path, "lbw.safetensors", t)
    node = lora(str(path), 0.5, blocks={"IN01": 0.0, "OUT11": 2.0}, layout="sd1-supermerger_blocks")
    sd = lib_mecha.merge(bake(str(base_path), node), output_dtype="fp32").state_dict
    torch.testing.assert_close(sd[PROJ_IN], base_sd[PROJ_IN])  # IN01 weight 0
    d = ALGORITHMS["lora"].delta(_module(t, "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2"),
                                 None, (5, 20))
    torch.testing.assert_close(sd[OUT_FF], base_sd[OUT_FF] + 1.0 * d, rtol=1e-5, atol=1e-6)


def test_lora_for_another_architecture_says_which(tmp_path, base_path):
    t = {"lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": _g(1280, 1),
         "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": _g(1, 1280),
         "lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k.lora_up.weight": _g(640, 1),
         "lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k.lora_down.weight": _g(1, 2048)}
    path = _lora_file(tmp_path, "xl.safetensors", t)
    with pytest.raises(ArchitectureMismatch, match=r"xl.safetensors is for sdxl-sgm .*not sd1-ldm"):
        lib_mecha.merge(bake(str(base_path), lora(str(path))))
    assert inspect(str(path)).architecture.identifier == "sdxl-sgm"


def test_lora_matching_nothing_is_an_error(tmp_path, base_path):
    t = {"lora_unet_nowhere.lora_up.weight": _g(5, 2), "lora_unet_nowhere.lora_down.weight": _g(2, 5)}
    path = _lora_file(tmp_path, "none.safetensors", t)
    with pytest.raises(ArchitectureMismatch, match="matches nothing in sd1-ldm"):
        lib_mecha.merge(bake(str(base_path), lora(str(path))))


@pytest.mark.parametrize("tensors,message", [
    ({"lora_unet_x.lora_up.weight": _g(5, 3), "lora_unet_x.lora_down.weight": _g(2, 5)}, "up/down ranks disagree"),
    ({"lora_unet_x.lora_up.weight": _g(5, 2), "lora_unet_x.lora_down.weight": _g(2, 5),
      "lora_unet_x.alpha": torch.tensor(float("inf"))}, "alpha is not a number"),
    ({"lora_unet_x.lora_up.weight": _g(5, 2), "lora_unet_x.lora_down.weight": _g(2, 5),
      "lora_unet_x.hada_w1_a": _g(5, 2), "lora_unet_x.hada_w1_b": _g(2, 5),
      "lora_unet_x.hada_w2_a": _g(5, 2), "lora_unet_x.hada_w2_b": _g(2, 5)}, "both LoRA / LoCon and LoHa"),
])
def test_bad_lora_files_write_nothing(tmp_path, base_path, tensors, message):
    path = _lora_file(tmp_path, "bad.safetensors", tensors)
    out = tmp_path / "out.safetensors"
    with pytest.raises(SafetensorsError, match=message) as info:
        lib_mecha.merge(bake(str(base_path), lora(str(path))), str(out))
    assert "lora_unet_x" in str(info.value) and "bad.safetensors" in str(info.value)
    assert not out.exists() and not list(tmp_path.glob("*.tmp*"))


def test_truncated_lora_file(tmp_path, base_path, mixed_lora):
    path, _ = mixed_lora
    data = path.read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[: len(data) - 100])
    out = tmp_path / "out.safetensors"
    with pytest.raises(SafetensorsError, match="truncated.safetensors"):
        lib_mecha.merge(bake(str(base_path), lora(str(bad))), str(out))
    assert not out.exists()


def test_lora_delta_refuses_weight_dependent_modules(tmp_path, base_path, mixed_lora):
    path, _ = mixed_lora
    recipe = lib_mecha.model(str(base_path)) + lora_delta(lib_mecha.model(str(path)), 1.0)
    with pytest.raises((MergeSpaceError, ArchitectureMismatch)):
        lib_mecha.merge(recipe)


def test_apply_lora_serializes(base_path, mixed_lora):
    path, _ = mixed_lora
    text = lib_mecha.serialize(apply_lora(lib_mecha.model(str(base_path)), lib_mecha.model(str(path)), 0.5))
    assert 'merge "apply_lora" &0 &1 &' in text
    assert lib_mecha.deserialize(text) == apply_lora(lib_mecha.model(str(base_path)), lib_mecha.model(str(path)), 0.5)


def test_sdxl_openclip_q_and_v_land_in_their_rows_of_in_proj(tmp_path):
    base_sd = random_state_dict("sdxl-sgm", seed=2, dtype=torch.float32, shape_divisor=64, scale=0.1,
                                components=("clip_l", "clip_g", "diffuser"))
    base = tmp_path / "xl.safetensors"
    save_file(base_sd, str(base))
    key = "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"
    w = base_sd[key].shape[1]
    assert base_sd[key].shape == (3 * w, w)
    t = {"lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": _g(w, 2),
         "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": _g(2, w, seed=1),
         "text_encoder_2.text_model.encoder.layers.0.self_attn.v_proj.lora_B.weight": _g(w, 2, seed=2),
         "text_encoder_2.text_model.encoder.layers.0.self_attn.v_proj.lora_A.weight": _g(2, w, seed=3),
         "lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k.lora_up.weight": _g(10, 1, seed=4),
         "lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k.lora_down.weight": _g(1, 32, seed=5)}
    path = _lora_file(tmp_path, "xl_lora.safetensors", t)
    sd = lib_mecha.merge(bake(str(base), lora(str(path))), output_dtype="fp32").state_dict
    dq = t["lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"] @ \
        t["lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"]
    dv = t["text_encoder_2.text_model.encoder.layers.0.self_attn.v_proj.lora_B.weight"] @ \
        t["text_encoder_2.text_model.encoder.layers.0.self_attn.v_proj.lora_A.weight"]
    torch.testing.assert_close(sd[key][:w], base_sd[key][:w] + dq, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sd[key][w:2 * w], base_sd[key][w:2 * w])
    torch.testing.assert_close(sd[key][2 * w:], base_sd[key][2 * w:] + dv, rtol=1e-5, atol=1e-6)
    k2 = U + "input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight"
    assert not torch.equal(sd[k2], base_sd[k2])


SD_MECHA_TEXT = """version 0.1.0
model "{base}" model_config="sd1-ldm" merge_space="weight"
model "{lora}" model_config="sd1-kohya_kohya_lora" merge_space="weight"
merge "convert_'sd1-kohya_kohya_lora'_to_base" &1
merge "convert_'sd1-kohya'_to_'sd1-ldm'" &2
dict key=1.0
literal &4 model_config="singleton-mecha" merge_space="param"
merge "convert_singleton" &5
merge "add_difference" &0 &3 &6"""


def test_sd_mecha_lora_recipe_text(tmp_path):
    """sd-mecha's two converters read from .mecha text bake a LoRA (real shapes, two keys)."""
    base_sd = {Q_TE.replace("(12, 12)", ""): _g(768, 768) * 0.02, PROJ_IN: _g(320, 320, 1, 1) * 0.02}
    base = tmp_path / "sd1_part.safetensors"
    save_file(base_sd, str(base))
    t = {"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": _g(768, 2),
         "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": _g(2, 768, seed=1),
         "lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha": torch.tensor(1.0)}
    path = _lora_file(tmp_path, "sd1_lora.safetensors", t)
    recipe = lib_mecha.deserialize(SD_MECHA_TEXT.format(base=base, lora=path))
    sd = lib_mecha.merge(recipe, output_dtype="fp32").state_dict
    d = ALGORITHMS["lora"].delta(_module(t, "lora_te_text_model_encoder_layers_0_self_attn_q_proj"), None, (768, 768))
    torch.testing.assert_close(sd[Q_TE], base_sd[Q_TE] + d, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sd[PROJ_IN], base_sd[PROJ_IN])


def test_sd2_openclip_text_encoder_names():
    from lib_mecha.arch import resolve_architecture
    from lib_mecha.lora.matching import names_of
    names = names_of(resolve_architecture("sd2-ldm"))
    (part,) = names["lora_te_text_model_encoder_layers_5_self_attn_k_proj"]
    assert part.key == "cond_stage_model.model.transformer.resblocks.5.attn.in_proj_weight"
    assert part.row_range(3072) == (1024, 2048)
    assert names["lora_te_text_model_encoder_layers_5_mlp_fc2"][0].key == \
        "cond_stage_model.model.transformer.resblocks.5.mlp.c_proj.weight"


def test_flux_diffusers_lora_lands_in_fused_rows(tmp_path):
    base_sd = random_state_dict("flux-flux", seed=3, dtype=torch.float32, shape_divisor=64, scale=0.1,
                                components=("diffuser",))
    base = tmp_path / "flux.safetensors"
    save_file(base_sd, str(base))
    d = "model.diffusion_model."
    lin1 = base_sd[d + "single_blocks.0.linear1.weight"]
    h = lin1.shape[1]
    assert lin1.shape[0] == 7 * h
    t = {"transformer.single_transformer_blocks.0.attn.to_k.lora_A.weight": _g(2, h),
         "transformer.single_transformer_blocks.0.attn.to_k.lora_B.weight": _g(h, 2, seed=1),
         "transformer.single_transformer_blocks.0.proj_mlp.lora_A.weight": _g(2, h, seed=2),
         "transformer.single_transformer_blocks.0.proj_mlp.lora_B.weight": _g(4 * h, 2, seed=3),
         "transformer.transformer_blocks.0.attn.add_v_proj.lora_A.weight": _g(2, h, seed=4),
         "transformer.transformer_blocks.0.attn.add_v_proj.lora_B.weight": _g(h, 2, seed=5),
         "transformer.norm_out.linear.lora_A.weight": _g(2, h, seed=6),
         "transformer.norm_out.linear.lora_B.weight": _g(2 * h, 2, seed=7),
         "lora_unet_double_blocks_1_img_attn_proj.lora_down.weight": _g(2, h, seed=8),
         "lora_unet_double_blocks_1_img_attn_proj.lora_up.weight": _g(h, 2, seed=9)}
    path = _lora_file(tmp_path, "flux_lora.safetensors", t)
    sd = lib_mecha.merge(bake(str(base), lora(str(path))), output_dtype="fp32").state_dict

    def prod(name):
        return t[f"transformer.{name}.lora_B.weight"] @ t[f"transformer.{name}.lora_A.weight"]
    key = d + "single_blocks.0.linear1.weight"
    torch.testing.assert_close(sd[key][:h], base_sd[key][:h])
    torch.testing.assert_close(sd[key][h:2 * h], base_sd[key][h:2 * h] + prod("single_transformer_blocks.0.attn.to_k"))
    torch.testing.assert_close(sd[key][3 * h:], base_sd[key][3 * h:] + prod("single_transformer_blocks.0.proj_mlp"))
    key = d + "double_blocks.0.txt_attn.qkv.weight"
    torch.testing.assert_close(sd[key][2 * h:], base_sd[key][2 * h:] + prod("transformer_blocks.0.attn.add_v_proj"))
    torch.testing.assert_close(sd[key][:2 * h], base_sd[key][:2 * h])
    # diffusers' norm_out holds (scale, shift); the checkpoint holds (shift, scale)
    key = d + "final_layer.adaLN_modulation.1.weight"
    dn = prod("norm_out.linear")
    torch.testing.assert_close(sd[key][:h], base_sd[key][:h] + dn[h:])
    torch.testing.assert_close(sd[key][h:], base_sd[key][h:] + dn[:h])
    key = d + "double_blocks.1.img_attn.proj.weight"
    assert not torch.equal(sd[key], base_sd[key])


def test_lbw_short_form_of_17_values(tmp_path, base_path, base_sd):
    t = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": _g(5, 2, 1, 1),
         "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": _g(2, 5, 1, 1, seed=1),
         "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2.lora_up.weight": _g(5, 2),
         "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2.lora_down.weight": _g(2, 20, seed=2)}
    path = _lora_file(tmp_path, "lbw17.safetensors", t)
    values = "1,0,1,1,1,1,1,1,1,1,1,1,1,1,1,1,0.5"   # IN01 = 0, OUT11 = 0.5
    node = lora(str(path), 1.0, blocks=values, layout="sd1-supermerger_blocks")
    sd = lib_mecha.merge(bake(str(base_path), node), output_dtype="fp32").state_dict
    torch.testing.assert_close(sd[PROJ_IN], base_sd[PROJ_IN])
    d = ALGORITHMS["lora"].delta(_module(t, "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2"),
                                 None, (5, 20))
    torch.testing.assert_close(sd[OUT_FF], base_sd[OUT_FF] + 0.5 * d, rtol=1e-5, atol=1e-6)


def test_a_weight_dependent_lora_sees_the_weight_the_previous_lora_left(tmp_path, base_path, base_sd):
    name = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    t1 = {f"{name}.lora_up.weight": _g(12, 2), f"{name}.lora_down.weight": _g(2, 12, seed=1)}
    t2 = {f"{name}.weight": _g(12, seed=2), f"{name}.on_input": torch.tensor(0)}
    p1, p2 = _lora_file(tmp_path, "plain.safetensors", t1), _lora_file(tmp_path, "ia3.safetensors", t2)
    sd = lib_mecha.merge(bake(str(base_path), lora(str(p1), 0.5), lora(str(p2), 0.8)), output_dtype="fp32").state_dict
    w1 = base_sd[Q_TE] + 0.5 * (t1[f"{name}.lora_up.weight"] @ t1[f"{name}.lora_down.weight"])
    w2 = w1 + 0.8 * (w1 * t2[f"{name}.weight"][:, None])
    torch.testing.assert_close(sd[Q_TE], w2, rtol=1e-5, atol=1e-6)


def test_report_names_misfits_and_stray_tensors(tmp_path):
    from lib_mecha.arch import resolve_architecture
    from lib_mecha.lora.matching import match, read_lora
    tensors = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": ((320, 2, 1, 1), torch.float32),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": ((2, 320, 1, 1), torch.float32),
               "lora_unet_mid_block_attentions_0_proj_in.lora_up.weight": ((7, 2), torch.float32),
               "lora_unet_mid_block_attentions_0_proj_in.lora_down.weight": ((2, 7), torch.float32),
               "bundle_emb.x.string_to_param.*": ((1, 768), torch.float32)}
    m = match(read_lora("f.safetensors", tensors, lambda k: None), resolve_architecture("sd1-ldm"))
    assert m.matched == 1
    report = m.report()
    assert "1 of 2 modules" in report and "lora_unet_mid_block_attentions_0_proj_in" in report
    assert "ΔW is 7×7" in report and "1 tensors of f.safetensors are no LoRA module" in report


def test_a_lora_applies_to_a_merged_base(tmp_path, base_sd):
    """A LoRA on a step's result (a computed base, not a file) bakes like one on a file."""
    other = {k: v * 3 if v.is_floating_point() else v for k, v in base_sd.items()}
    save_file(base_sd, str(tmp_path / "x.safetensors"))
    save_file(other, str(tmp_path / "y.safetensors"))
    path = _lora_file(tmp_path, "one.safetensors", {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": _g(5, 2, 1, 1),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": _g(2, 5, 1, 1, seed=1),
        "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(2.0)})
    merged = lib_mecha.weighted_sum(lib_mecha.model("x"), lib_mecha.model("y"), alpha=0.5)
    out = lib_mecha.merge(apply_lora(merged, lib_mecha.model(str(path)), 0.5), model_dirs=[tmp_path],
                          output_dtype="fp32").state_dict
    delta = (_g(5, 2, 1, 1).flatten(1) @ _g(2, 5, 1, 1, seed=1).flatten(1)).reshape(5, 5, 1, 1)
    expected = 2 * base_sd[PROJ_IN] + 0.5 * delta  # alpha 2 / rank 2 = scale 1
    assert torch.allclose(out[PROJ_IN], expected, atol=1e-5)
    assert torch.equal(out[Q_TE], 2 * base_sd[Q_TE])
