"""Block layouts: key -> block maps, the converters' routes and the blocks() helper."""
from collections import Counter

import pytest

import lib_mecha.arch as arch
import oracle
from fakectx import value_for
from lib_mecha.errors import ArchitectureMismatch, ParameterError
from lib_mecha.methods import build
from lib_mecha.recipe import MergeNode, literal

SD1 = "sd1-supermerger_blocks"
SDXL = "sdxl-supermerger_blocks"


@pytest.mark.parametrize("converter,layout_id,arch_id", [
    ("convert_sd1_blocks_to_ldm", SD1, "sd1-ldm"),
    ("convert_sdxl_blocks_to_sgm", SDXL, "sdxl-sgm"),
])
def test_key_to_block_map_equals_sd_mecha(converter, layout_id, arch_id):
    expected = oracle.block_map(converter, layout_id, arch_id)
    layout = arch.resolve_layout(layout_id)
    assert dict(layout.key_map()) == expected


def test_every_layout_puts_each_key_in_exactly_one_of_its_blocks():
    for layout_id in arch.layout_ids():
        layout = arch.resolve_layout(layout_id)
        table = arch.resolve_architecture(layout.architecture)
        mapping = layout.key_map()
        assert list(mapping) == list(table.keys)
        counts = Counter(mapping.values())
        empty = set(layout.blocks) - set(counts)
        assert not empty, f"{layout_id}: blocks without keys: {empty}"


def test_sd1_block_counts_and_spot_checks():
    layout = arch.resolve_layout(SD1)
    assert len(layout.blocks) == 26 and layout.blocks[0] == "BASE" and layout.blocks[-1] == "OUT11"
    counts = Counter(layout.key_map().values())
    # BASE: text encoder, VAE, EMA copy, scheduler buffers and the 4 time-embedding keys
    assert counts["BASE"] == 197 + 248 + 688 + 12 + 4
    assert counts["IN00"] == 2 and counts["IN03"] == 2 and counts["IN06"] == 2 and counts["IN09"] == 2
    assert counts["IN10"] == counts["IN11"] == 10  # res blocks without attention
    assert counts["OUT11"] == counts["OUT10"] + 4  # the final norm and conv
    spots = {
        "cond_stage_model.transformer.text_model.encoder.layers.3.mlp.fc1.weight": "BASE",
        "cond_stage_model.transformer.encoder.layers.3.mlp.fc1.weight": "BASE",  # alias name
        "first_stage_model.decoder.up.1.block.0.conv1.weight": "BASE",
        "model_ema.diffusion_modelinput_blocks11emb_layers1weight": "BASE",
        "alphas_cumprod": "BASE",
        "model.diffusion_model.time_embed.0.weight": "BASE",
        "model.diffusion_model.input_blocks.0.0.weight": "IN00",
        "model.diffusion_model.input_blocks.11.0.out_layers.3.weight": "IN11",
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_out.0.bias": "IN04",
        "model.diffusion_model.middle_block.1.proj_out.weight": "M00",
        "model.diffusion_model.output_blocks.2.1.conv.weight": "OUT02",
        "model.diffusion_model.output_blocks.5.2.conv.weight": "OUT05",
        "model.diffusion_model.out.2.weight": "OUT11",
    }
    for key, block in spots.items():
        assert layout.block_of(key) == block, key


def test_sdxl_block_counts_and_spot_checks():
    layout = arch.resolve_layout(SDXL)
    assert len(layout.blocks) == 21 and layout.blocks[-1] == "VAE"
    counts = Counter(layout.key_map().values())
    assert counts["VAE"] == 248
    assert counts["IN00"] == 2
    spots = {
        "conditioner.embedders.1.model.transformer.resblocks.5.attn.in_proj_weight": "BASE",
        "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": "BASE",
        "model.diffusion_model.label_emb.0.2.weight": "BASE",
        "first_stage_model.quant_conv.weight": "VAE",
        "model.diffusion_model.input_blocks.8.1.transformer_blocks.9.ff.net.2.weight": "IN08",
        "model.diffusion_model.middle_block.2.in_layers.0.bias": "M00",
        "model.diffusion_model.output_blocks.8.0.skip_connection.weight": "OUT08",
        "model.diffusion_model.out.0.weight": "OUT08",
        "v_pred": "BASE",
    }
    for key, block in spots.items():
        assert layout.block_of(key) == block, key


def _converter_node(layout_id, values):
    name = {SD1: "convert_sd1_blocks_to_ldm", SDXL: "convert_sdxl_blocks_to_sgm"}[layout_id]
    return build(name, literal(values, config=layout_id, merge_space="param"))


def test_converter_route_gives_each_key_its_block_value():
    values = {b: i / 100 for i, b in enumerate(arch.resolve_layout(SD1).blocks)}
    node = _converter_node(SD1, values)
    assert value_for(node, "model.diffusion_model.input_blocks.5.1.norm.weight") == values["IN05"]
    assert value_for(node, "model.diffusion_model.output_blocks.0.0.in_layers.0.weight") == values["OUT00"]
    assert value_for(node, "first_stage_model.encoder.conv_in.weight") == values["BASE"]
    assert value_for(node, "cond_stage_model.transformer.embeddings.token_embedding.weight") == values["BASE"]


def test_partial_dict_yields_nothing_alone_and_the_default_under_fallback():
    node = _converter_node(SD1, {"IN00": 0.1, "M00": 0.9})
    assert value_for(node, "model.diffusion_model.middle_block.0.in_layers.0.weight") == 0.9
    assert value_for(node, "model.diffusion_model.output_blocks.3.0.in_layers.0.weight") is None
    wrapped = arch.blocks(SD1, {"IN00": 0.1, "M00": 0.9}, default=0.25)
    assert isinstance(wrapped, MergeNode) and wrapped.method == "fallback"
    table = arch.resolve_architecture("sd1-ldm")
    got = {k: value_for(wrapped, k) for k in table.keys}
    assert all(v is not None for v in got.values())  # no key without a value
    assert got["model.diffusion_model.input_blocks.0.0.weight"] == 0.1
    assert got["model.diffusion_model.output_blocks.3.0.in_layers.0.weight"] == 0.25
    assert got["alphas_cumprod"] == 0.25


def test_partial_dict_without_default_is_refused():
    with pytest.raises(ParameterError, match=r"no value for block\(s\) BASE, IN01"):
        arch.blocks(SD1, {"IN00": 0.1})


def test_full_dict_needs_no_fallback():
    values = {b: 0.5 for b in arch.resolve_layout(SDXL).blocks}
    node = arch.blocks(SDXL, values)
    assert node.method == "convert_sdxl_blocks_to_sgm"
    assert value_for(node, "first_stage_model.decoder.conv_out.bias") == 0.5


def test_unknown_block_name_names_it_with_a_suggestion():
    with pytest.raises(ParameterError, match=r"'IN12' is not a block of sd1-supermerger_blocks") as e:
        arch.blocks(SD1, {"IN12": 0.5}, default=0)
    assert "IN11" in e.value.format_message() or "IN02" in e.value.format_message()
    with pytest.raises(ParameterError, match=r"'MID' is not a block of sdxl-supermerger_blocks"):
        arch.blocks(SDXL, {"MID": 0.5}, default=0)
    # also when the dict arrives through a recipe (e.g. read from a .mecha file)
    node = _converter_node(SD1, {"OUT1": 0.5})
    with pytest.raises(ParameterError, match="'OUT1'.*did you mean"):
        value_for(node, "model.diffusion_model.out.0.weight")


def test_layout_for_another_architecture():
    with pytest.raises(ArchitectureMismatch, match="sd1-supermerger_blocks is for sd1-ldm, not sdxl-sgm"):
        arch.blocks(SD1, {}, default=0.5, architecture="sdxl-sgm")
    node = _converter_node(SD1, {"BASE": 0.5})
    with pytest.raises(ArchitectureMismatch, match="sdxl-sgm") as e:
        value_for(node, "model.diffusion_model.label_emb.0.0.weight")
    assert "sdxl-supermerger_blocks" in e.value.format_message()


def test_keys_outside_every_table_still_get_a_block():
    node = arch.blocks(SD1, {"BASE": 0.5}, default=0.1)
    assert value_for(node, "model.diffusion_model.some_extra_layer.weight") == 0.1  # OUT11 by the rule
    assert value_for(node, "lora_unet_whatever") == 0.5


def test_values_as_list_and_string():
    layout = arch.resolve_layout(SD1)
    as_list = arch.blocks(SD1, [i / 25 for i in range(26)])
    mapping = dict(as_list.args[0].mapping)
    assert list(mapping) == list(layout.blocks) and mapping["M00"] == 13 / 25
    text = ",".join(["0.5"] * 13 + [""] + ["1"] * 12)
    node = arch.blocks(SD1, text, default=0.0)
    assert value_for(node, "model.diffusion_model.middle_block.0.in_layers.0.weight") == 0.0
    assert value_for(node, "model.diffusion_model.out.0.weight") == 1.0
    with pytest.raises(ParameterError, match="25 values for the 26 blocks"):
        arch.blocks(SD1, ",".join(["1"] * 25))
    with pytest.raises(ParameterError, match="'abc' for block IN00"):
        arch.blocks(SD1, "0," + ",".join(["abc"] + ["1"] * 24))


def test_transformer_layouts_spot_checks():
    flux = arch.resolve_layout("flux-mecha_blocks")
    assert len(flux.blocks) == 61 and flux.blocks[:3] == ("BASE", "IN", "DOUBLE00")
    assert flux.blocks[-3:] == ("SINGLE37", "OUT", "VAE")
    spots = {
        "double_blocks.3.img_mlp.0.weight": "DOUBLE03",  # bare transformer name (alias)
        "model.diffusion_model.double_blocks.18.txt_attn.norm.key_norm.scale": "DOUBLE18",
        "model.diffusion_model.single_blocks.37.linear2.weight": "SINGLE37",
        "model.diffusion_model.guidance_in.in_layer.weight": "IN",
        "model.diffusion_model.txt_in.bias": "IN",
        "model.diffusion_model.final_layer.linear.weight": "OUT",
        "text_encoders.t5xxl.transformer.encoder.block.3.layer.1.DenseReluDense.wo.weight": "BASE",
        "text_encoders.clip_l.transformer.text_model.final_layer_norm.bias": "BASE",
        "vae.encoder.down.0.block.1.conv2.weight": "VAE",
    }
    for key, block in spots.items():
        assert flux.block_of(key) == block, key
    counts = Counter(flux.key_map().values())
    assert counts["DOUBLE00"] == 24 and counts["SINGLE00"] == 8 and counts["OUT"] == 4 and counts["VAE"] == 244
    sd3 = arch.resolve_layout("sd3-mecha_blocks")
    assert len(sd3.blocks) == 28
    assert sd3.block_of("model.diffusion_model.joint_blocks.23.context_block.attn.qkv.weight") == "JOINT23"
    assert sd3.block_of("model.diffusion_model.pos_embed") == "IN"
    assert sd3.block_of("model.diffusion_model.context_embedder.weight") == "IN"
    assert sd3.block_of("model.model_sampling.sigmas") == "BASE"
    assert sd3.block_of("first_stage_model.decoder.conv_in.weight") == "VAE"
    counts = Counter(sd3.key_map().values())
    assert counts["JOINT00"] == 20 and counts["JOINT23"] == 14
    large = arch.resolve_layout("sd3.5_large-mecha_blocks")
    assert large.blocks[-3] == "JOINT37"
    refiner = arch.resolve_layout("sdxl_refiner-mecha_blocks")
    assert refiner.block_of("model.diffusion_model.label_emb.0.0.weight") == "BASE"
    assert refiner.block_of("model.diffusion_model.input_blocks.11.0.in_layers.0.weight") == "IN11"
    assert refiner.block_of("first_stage_model.post_quant_conv.weight") == "VAE"
    sd2 = arch.resolve_layout("sd2-supermerger_blocks")
    assert sd2.block_of("cond_stage_model.model.transformer.resblocks.3.attn.in_proj_weight") == "BASE"


def test_flux_converter_route():
    values = {b: i for i, b in enumerate(arch.resolve_layout("flux-mecha_blocks").blocks)}
    node = arch.blocks("flux-mecha_blocks", values)
    assert node.method == "convert_flux_blocks_to_flux"
    assert value_for(node, "model.diffusion_model.single_blocks.0.linear1.weight") == values["SINGLE00"]
    with pytest.raises(ArchitectureMismatch, match="flux-mecha_blocks is for flux-flux, but the model being "
                                                   "merged is sd3-comfyui"):
        value_for(node, "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight")


def test_layout_inferred_from_a_plain_block_dict():
    from lib_mecha.arch.block_weights import layout_for_block_dict
    assert layout_for_block_dict({"IN00": 1, "OUT11": 0}) == SD1
    assert layout_for_block_dict({"IN00": 1, "OUT11": 0}, "sd2-ldm") == "sd2-supermerger_blocks"
    assert layout_for_block_dict({"IN00": 1, "VAE": 0}, "sdxl-sgm") == SDXL
    assert layout_for_block_dict({"DOUBLE03": 1}) == "flux-mecha_blocks"
    assert layout_for_block_dict({"model.diffusion_model.out.0.weight": 1}) is None
