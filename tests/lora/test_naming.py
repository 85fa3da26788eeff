"""LoRA module names generated from the architectures' key tables, and key spellings."""
from __future__ import annotations

import pytest

from lib_mecha.arch import resolve_architecture
from lib_mecha.lora.formats import split_key
from lib_mecha.lora.naming import Part, dit_to_diffusers, ldm_unet_to_diffusers
from lib_mecha.lora.matching import names_of

U = "model.diffusion_model."


@pytest.fixture(scope="module")
def sd1():
    return names_of(resolve_architecture("sd1-ldm"))


@pytest.fixture(scope="module")
def sdxl():
    return names_of(resolve_architecture("sdxl-sgm"))


# well-known kohya names of SD1 LoRAs and the LDM weights they change
SD1_KNOWN = [
    ("lora_unet_down_blocks_0_attentions_0_proj_in", U + "input_blocks.1.1.proj_in.weight"),
    ("lora_unet_down_blocks_0_attentions_1_transformer_blocks_0_attn2_to_k",
     U + "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"),
    ("lora_unet_down_blocks_0_downsamplers_0_conv", U + "input_blocks.3.0.op.weight"),
    ("lora_unet_down_blocks_1_resnets_0_conv_shortcut", U + "input_blocks.4.0.skip_connection.weight"),
    ("lora_unet_down_blocks_3_resnets_1_conv2", U + "input_blocks.11.0.out_layers.3.weight"),
    ("lora_unet_mid_block_resnets_1_time_emb_proj", U + "middle_block.2.emb_layers.1.weight"),
    ("lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_0_proj",
     U + "middle_block.1.transformer_blocks.0.ff.net.0.proj.weight"),
    ("lora_unet_up_blocks_0_resnets_2_conv1", U + "output_blocks.2.0.in_layers.2.weight"),
    ("lora_unet_up_blocks_0_upsamplers_0_conv", U + "output_blocks.2.1.conv.weight"),
    ("lora_unet_up_blocks_1_upsamplers_0_conv", U + "output_blocks.5.2.conv.weight"),
    ("lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn1_to_out_0",
     U + "output_blocks.11.1.transformer_blocks.0.attn1.to_out.0.weight"),
    ("lora_unet_conv_in", U + "input_blocks.0.0.weight"),
    ("lora_unet_conv_out", U + "out.2.weight"),
    ("lora_unet_time_embedding_linear_1", U + "time_embed.0.weight"),
    ("lora_te_text_model_encoder_layers_0_self_attn_q_proj",
     "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"),
    ("lora_te_text_model_encoder_layers_11_mlp_fc2",
     "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight"),
    # kohya/A1111 also accept the LDM names themselves
    ("lora_unet_input_blocks_1_1_proj_in", U + "input_blocks.1.1.proj_in.weight"),
]


@pytest.mark.parametrize("name,key", SD1_KNOWN)
def test_sd1_names(sd1, name, key):
    parts = sd1[name]
    assert [p.key for p in parts] == [key]
    assert parts[0].rows is None


def test_sd1_bias_goes_with_weight(sd1):
    part = sd1["lora_unet_down_blocks_0_attentions_0_proj_in"][0]
    assert part.bias == U + "input_blocks.1.1.proj_in.bias"
    assert sd1["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"][0].bias is None


def test_every_sd1_unet_weight_has_one_diffusers_name(sd1):
    arch = resolve_architecture("sd1-ldm")
    unet_weights = [k for k in arch.keys if k.startswith(U) and k.endswith(".weight")]
    native = {"lora_unet_" + k[len(U):-len(".weight")].replace(".", "_") for k in unet_weights}
    by_key = {}
    for name, parts in sd1.items():
        if name.startswith("lora_unet_") and name not in native:
            for p in parts:
                by_key.setdefault(p.key, []).append(name)
    assert sorted(by_key) == sorted(unet_weights)
    assert all(len(v) == 1 for v in by_key.values())


SDXL_KNOWN = [
    ("lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k",
     U + "input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight"),
    ("lora_unet_down_blocks_1_attentions_0_transformer_blocks_1_attn2_to_k",
     U + "input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight"),
    ("lora_unet_output_blocks_0_1_proj_out", U + "output_blocks.0.1.proj_out.weight"),
    ("lora_unet_up_blocks_0_attentions_0_proj_out", U + "output_blocks.0.1.proj_out.weight"),
    ("lora_unet_up_blocks_0_upsamplers_0_conv", U + "output_blocks.2.2.conv.weight"),
    ("lora_unet_add_embedding_linear_2", U + "label_emb.0.2.weight"),
    ("lora_te1_text_model_encoder_layers_3_mlp_fc1",
     "conditioner.embedders.0.transformer.text_model.encoder.layers.3.mlp.fc1.weight"),
    ("lora_te2_text_model_encoder_layers_3_mlp_fc1",
     "conditioner.embedders.1.model.transformer.resblocks.3.mlp.c_fc.weight"),
    ("lora_te2_text_model_encoder_layers_3_self_attn_out_proj",
     "conditioner.embedders.1.model.transformer.resblocks.3.attn.out_proj.weight"),
]


@pytest.mark.parametrize("name,key", SDXL_KNOWN)
def test_sdxl_names(sdxl, name, key):
    assert [p.key for p in sdxl[name]] == [key]


def test_sdxl_openclip_qkv_are_row_slices_of_in_proj(sdxl):
    key = "conditioner.embedders.1.model.transformer.resblocks.3.attn.in_proj_weight"
    rows = {}
    for proj in ("q_proj", "k_proj", "v_proj"):
        (part,) = sdxl[f"lora_te2_text_model_encoder_layers_3_self_attn_{proj}"]
        assert part.key == key and part.bias == key.replace("_weight", "_bias")
        rows[proj] = part.row_range(3840)
    assert rows == {"q_proj": (0, 1280), "k_proj": (1280, 2560), "v_proj": (2560, 3840)}


def test_sdxl_has_no_single_text_encoder_prefix(sdxl):
    assert not any(n.startswith("lora_te_") for n in sdxl)


def test_ldm_to_diffusers_rejects_unknown_paths():
    assert ldm_unet_to_diffusers("input_blocks.1.7.foo") is None
    assert ldm_unet_to_diffusers("not_a_unet") is None


def _rows(entries, n):
    return [(name, Part("k", rows=rows).row_range(n), swap) for name, rows, swap in entries]


def test_flux_names_from_native_paths():
    h = 3072
    assert _rows(dit_to_diffusers("double_blocks.0.img_attn.qkv", (3 * h, h)), 3 * h) == [
        ("transformer_blocks.0.attn.to_q", (0, h), False), ("transformer_blocks.0.attn.to_k", (h, 2 * h), False),
        ("transformer_blocks.0.attn.to_v", (2 * h, 3 * h), False)]
    assert _rows(dit_to_diffusers("double_blocks.5.txt_attn.qkv", (3 * h, h)), 3 * h)[1] == \
        ("transformer_blocks.5.attn.add_k_proj", (h, 2 * h), False)
    single = _rows(dit_to_diffusers("single_blocks.2.linear1", (7 * h, h)), 7 * h)
    assert single == [("single_transformer_blocks.2.attn.to_q", (0, h), False),
                      ("single_transformer_blocks.2.attn.to_k", (h, 2 * h), False),
                      ("single_transformer_blocks.2.attn.to_v", (2 * h, 3 * h), False),
                      ("single_transformer_blocks.2.proj_mlp", (3 * h, 7 * h), False)]
    # the same fractions hold for a narrower test model
    assert _rows(dit_to_diffusers("single_blocks.2.linear1", (7 * 8, 8)), 56)[3] == \
        ("single_transformer_blocks.2.proj_mlp", (24, 56), False)
    assert dit_to_diffusers("single_blocks.2.linear2", (h, 5 * h)) == \
        [("single_transformer_blocks.2.proj_out", None, False)]
    assert dit_to_diffusers("final_layer.adaLN_modulation.1", (2 * h, h)) == [("norm_out.linear", None, True)]
    assert dit_to_diffusers("double_blocks.0.img_mod.lin", (6 * h, h)) == \
        [("transformer_blocks.0.norm1.linear", None, False)]


def test_sd3_names_from_native_paths():
    h = 1536
    assert _rows(dit_to_diffusers("joint_blocks.3.context_block.attn.qkv", (3 * h, h)), 3 * h)[0] == \
        ("transformer_blocks.3.attn.add_q_proj", (0, h), False)
    assert dit_to_diffusers("joint_blocks.3.x_block.mlp.fc2", (h, 4 * h)) == \
        [("transformer_blocks.3.ff.net.2", None, False)]
    # the last block's context side holds only (shift, scale): diffusers swaps it
    assert dit_to_diffusers("joint_blocks.23.context_block.adaLN_modulation.1", (2 * h, h)) == \
        [("transformer_blocks.23.norm1_context.linear", None, True)]


SPELLINGS = [
    ("lora_unet_a_b.lora_down.weight", ("lora_unet_a_b", "lora_down.weight")),
    ("lycoris_unet_a_b.hada_w1_a", ("lora_unet_a_b", "hada_w1_a")),
    ("lycoris_down_blocks_0_resnets_0_conv1.lokr_w1", ("lora_unet_down_blocks_0_resnets_0_conv1", "lokr_w1")),
    ("unet.down_blocks.0.attentions.0.proj_in.lora_A.weight",
     ("lora_unet_down_blocks_0_attentions_0_proj_in", "lora_down.weight")),
    ("unet.down_blocks.0.attentions.0.proj_in.lora.up.weight",
     ("lora_unet_down_blocks_0_attentions_0_proj_in", "lora_up.weight")),
    ("unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.down.weight",
     ("lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_out_0", "lora_down.weight")),
    ("text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight",
     ("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", "lora_up.weight")),
    ("text_encoder_2.text_model.encoder.layers.0.mlp.fc1.lora_A.weight",
     ("lora_te2_text_model_encoder_layers_0_mlp_fc1", "lora_down.weight")),
    ("transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight",
     ("lora_unet_single_transformer_blocks_0_attn_to_q", "lora_down.weight")),
    ("diffusion_model.double_blocks.0.img_attn.qkv.lora_B.weight",
     ("lora_unet_double_blocks_0_img_attn_qkv", "lora_up.weight")),
    ("base_model.model.down_blocks.0.resnets.0.conv1.lora_A.weight",
     ("lora_unet_down_blocks_0_resnets_0_conv1", "lora_down.weight")),
    ("unet.up_blocks.0.resnets.0.conv1.lora_magnitude_vector",
     ("lora_unet_up_blocks_0_resnets_0_conv1", "dora_magnitude")),
    ("lora_unet_x.alpha", ("lora_unet_x", "alpha")),
    ("lora_unet_x.diff_b", ("lora_unet_x", "diff_b")),
    ("ss_metadata_is_not_a_tensor", None),
]


@pytest.mark.parametrize("key,expected", SPELLINGS)
def test_key_spellings(key, expected):
    assert split_key(key) == expected


def test_part_is_a_value():
    assert Part("a", None, (0, 3)) == Part("a", None, (0, 3))
