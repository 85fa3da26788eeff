"""Detection from a file's keys (and shapes where names tie), and the explanation of a failure."""
from safetensors import safe_open
from safetensors.torch import save_file

import lib_mecha.arch as arch
from lib_mecha.arch.demo import random_state_dict
from lib_mecha.arch.detection import explain_detection


def _table(ident):
    return arch.resolve_architecture(ident)


def _shapes(ident, keys):
    t = _table(ident)
    return {k: t.keys[t.canonical(k)].shape for k in keys}


def _detect_file(path):
    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in keys}
    return arch.detect(keys, shapes), keys, shapes


def test_full_sd1_checkpoint_file(tmp_path):
    sd = random_state_dict("sd1-ldm", seed=0, shape_divisor=64, optional=True)
    assert any(k.startswith("model_ema.") for k in sd) and "betas" in sd
    path = tmp_path / "full.safetensors"
    save_file(sd, str(path))
    found, keys, shapes = _detect_file(path)
    assert found.identifier == "sd1-ldm"
    assert explain_detection(keys, shapes).startswith("recognised as sd1-ldm (knows 1831 of 1831 keys")


def test_pruned_sd1_without_ema_or_scheduler():
    t = _table("sd1-ldm")
    keys = [k for k in t.keys if t.component_of(k) in ("clip_l", "vae", "diffuser")]
    assert arch.detect(keys, _shapes("sd1-ldm", keys)) is t
    assert arch.detect(keys) is t


def test_unet_only_sd1():
    t = _table("sd1-ldm")
    keys = t.keys_of("diffuser")
    assert arch.detect(keys, _shapes("sd1-ldm", keys)) is t


def test_text_encoder_with_old_alias_names(tmp_path):
    t = _table("sd1-ldm")
    keys = []
    for k in t.keys:
        spec = t.keys[k]
        if spec.optional:
            continue
        keys.append(spec.aliases[0] if spec.component == "clip_l" else k)
    assert "cond_stage_model.transformer.encoder.layers.0.mlp.fc1.weight" in keys
    assert arch.detect(keys, _shapes("sd1-ldm", keys)) is t
    te_only = [k for k in keys if k.startswith("cond_stage_model.")]
    assert arch.detect(te_only) is t


def test_full_and_pruned_sdxl():
    t = _table("sdxl-sgm")
    assert arch.detect(list(t.mandatory)) is t
    pruned = [k for k in t.mandatory if ".layers.11." not in k and ".resblocks.31." not in k]
    assert arch.detect(pruned) is t


def test_refiner_is_not_base():
    t = _table("sdxl_refiner-sgm")
    assert arch.detect(list(t.mandatory)) is t
    unet = t.keys_of("diffuser")
    assert arch.detect(unet, _shapes("sdxl_refiner-sgm", unet)) is t


def test_unknown_file_is_none_and_explained():
    keys = ["encoder.layer.0.weight", "encoder.layer.0.bias", "head.weight"]
    assert arch.detect(keys) is None
    text = explain_detection(keys)
    assert text == ("unrecognised model: no known architecture shares a key with its 3 keys "
                    "(e.g. 'encoder.layer.0.weight', 'encoder.layer.0.bias', ...)")


def test_mostly_unknown_file_lists_closest_candidate_with_missing_and_unknown():
    t = _table("sd1-ldm")
    keys = list(t.keys_of("vae")) + [f"extra.block{i}.weight" for i in range(100)]
    assert arch.detect(keys) is None
    text = explain_detection(keys)
    assert text.startswith("unrecognised model; closest: sd1-ldm (knows 248 of 348 keys; 100 unknown, "
                           "e.g. 'extra.block0.weight', 'extra.block1.weight', ...;")
    assert "required keys missing, e.g. 'cond_stage_model.transformer.text_model.embeddings.token_embedding" in text
    assert "\n" not in text


def test_shape_mismatch_is_reported():
    t = _table("sd1-ldm")
    keys = list(t.mandatory)
    shapes = _shapes("sd1-ldm", keys)
    shapes["model.diffusion_model.input_blocks.0.0.weight"] = (320, 9, 3, 3)  # an inpainting model
    assert arch.detect(keys, shapes) is t
    assert ("1 with other shapes, e.g. 'model.diffusion_model.input_blocks.0.0.weight' is [320, 9, 3, 3], "
            "expected [320, 4, 3, 3]") in explain_detection(keys, shapes)


def test_empty_file():
    assert arch.detect([]) is None
    assert explain_detection([]) == "unrecognised model: the file holds no tensors"


def test_sd1_and_sd2_unet_only_files_tie_on_names_and_split_on_shapes():
    sd1, sd2 = _table("sd1-ldm"), _table("sd2-ldm")
    unet = sd1.keys_of("diffuser")
    assert set(unet) == set(sd2.keys_of("diffuser"))  # the same names...
    assert arch.detect(unet, _shapes("sd2-ldm", unet)) is sd2  # ...told apart by shapes
    assert arch.detect(unet, _shapes("sd1-ldm", unet)) is sd1
    assert arch.detect(list(sd2.mandatory)) is sd2


def test_sd3_family():
    for ident in ("sd3-comfyui", "sd3.5_large-comfyui", "sd3.5_medium-comfyui"):
        t = _table(ident)
        assert arch.detect(list(t.mandatory), _shapes(ident, t.mandatory)) is t, ident
    # an SD3 medium file is not taken for SD3.5 medium, even without shapes
    sd3 = _table("sd3-comfyui")
    assert arch.detect(list(sd3.mandatory)) is sd3


def test_flux_transformer_only_with_bare_names_and_schnell(tmp_path):
    t = _table("flux-flux")
    bare = [k[len("model.diffusion_model."):] for k in t.keys_of("diffuser")]
    assert "double_blocks.0.img_attn.qkv.weight" in bare
    assert arch.detect(bare) is t
    schnell = [k for k in bare if not k.startswith("guidance_in.")]
    assert arch.detect(schnell) is t
    assert explain_detection(schnell).startswith("recognised as flux-flux (knows 776 of 776 keys")


def test_sharded_checkpoint_keys_are_detected_as_one_model(tmp_path):
    import json
    sd = random_state_dict("flux-flux", seed=3, shape_divisor=512, components=("diffuser",))
    keys = list(sd)
    half = len(keys) // 2
    weight_map = {}
    for i, part in enumerate((keys[:half], keys[half:])):
        name = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k[len("model.diffusion_model."):]: sd[k] for k in part}, str(tmp_path / name))
        weight_map.update({k[len("model.diffusion_model."):]: name for k in part})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert arch.detect(list(index["weight_map"])).identifier == "flux-flux"
    # neither shard alone is more than a part, but each is still recognised by its names
    assert arch.detect(list(weight_map)[:half]).identifier == "flux-flux"
