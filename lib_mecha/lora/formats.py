"""LoRA file key names → (module, tensor): kohya, LyCORIS, diffusers and PEFT spellings.

Every spelling is brought to kohya's: a flat module name (``lora_unet_…``, ``lora_te1_…``) and
the tensor's name within the module in LyCORIS terms (``lora_up.weight``, ``hada_w1_a``, …).

=====================================================  ===========================================
file key                                               module, tensor
=====================================================  ===========================================
``lora_unet_x_y.lora_down.weight`` (kohya)             ``lora_unet_x_y``, ``lora_down.weight``
``lycoris_x_y.hada_w1_a`` (LyCORIS)                    ``lora_unet_x_y`` / ``lora_te…``, ``hada_w1_a``
``unet.x.y.lora_A.weight`` (PEFT)                      ``lora_unet_x_y``, ``lora_down.weight``
``unet.x.y.lora.up.weight`` (diffusers)                ``lora_unet_x_y``, ``lora_up.weight``
``unet.x.attn1.processor.to_q_lora.down.weight``       ``lora_unet_x_attn1_to_q``, ``lora_down.weight``
``text_encoder.x.lora_B.weight`` / ``text_encoder_2.`` ``lora_te1_x`` / ``lora_te2_x``
``transformer.x.lora_A.weight`` (FLUX/SD3 diffusers)   ``lora_unet_x``, ``lora_down.weight``
``diffusion_model.x.lora_A.weight`` (ai-toolkit)       ``lora_unet_x``, ``lora_down.weight``
=====================================================  ===========================================
"""
from __future__ import annotations

import re
from typing import Dict, Iterable, List, Optional, Tuple

from ..errors import SafetensorsError

# the tensor names a module may hold (longest first, so "lora_up.weight" wins over "weight")
_TENSORS = sorted({
    "lora_up.weight", "lora_down.weight", "lora_mid.weight", "lora_up.bias", "alpha", "scale", "dora_scale",
    "dora_magnitude",
    "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2",
    "lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t1", "lokr_t2",
    "a1.weight", "a2.weight", "b1.weight", "b2.weight", "bm.weight",
    "oft_blocks", "oft_diag", "rescale", "on_input", "weight",
    "diff", "diff_b", "w_norm", "b_norm",
}, key=len, reverse=True)

# other spellings of the same tensors
_SYNONYMS = [
    ("lora_A.weight", "lora_down.weight"), ("lora_B.weight", "lora_up.weight"), ("lora_B.bias", "lora_up.bias"),
    ("lora_A.default.weight", "lora_down.weight"), ("lora_B.default.weight", "lora_up.weight"),
    ("lora.down.weight", "lora_down.weight"), ("lora.up.weight", "lora_up.weight"),
    ("lora_linear_layer.down.weight", "lora_down.weight"), ("lora_linear_layer.up.weight", "lora_up.weight"),
    # peft's DoRA magnitude: one value per output channel, whatever its shape ((out,) for a linear
    # layer, (1, out, 1, 1) for a convolution), unlike kohya's and LyCORIS's dora_scale
    ("lora_magnitude_vector", "dora_magnitude"), ("lora_magnitude_vector.default", "dora_magnitude"),
    ("lora_magnitude_vector.weight", "dora_magnitude"),
]

_PREFIXES = [  # dotted prefix -> kohya prefix; tried in order
    ("base_model.model.unet.", "lora_unet_"), ("base_model.model.", None),
    ("model.diffusion_model.", "lora_unet_"), ("diffusion_model.", "lora_unet_"), ("unet.", "lora_unet_"),
    ("transformer.", "lora_unet_"),
    ("text_encoder_3.", "lora_te3_"), ("text_encoder_2.", "lora_te2_"), ("text_encoder.", "lora_te1_"),
    ("te3.", "lora_te3_"), ("te2.", "lora_te2_"), ("te1.", "lora_te1_"), ("te.", "lora_te_"),
]

# old diffusers attention processors: "<attn>.processor.to_q_lora.down.weight"
_PROCESSOR = re.compile(r"^(.*?)\.processor\.(to_q|to_k|to_v|to_out|add_q_proj|add_k_proj|add_v_proj|to_add_out)_lora"
                        r"\.(down|up)\.weight$")


def split_key(key: str) -> Optional[Tuple[str, str]]:
    """``(flat module name, tensor name)`` of one LoRA file key, or None when the key is not a
    LoRA tensor at all (metadata-like entries such as ``lora_te_text_model…position_ids``)."""
    m = _PROCESSOR.match(key)
    if m:
        target = "to_out.0" if m.group(2) == "to_out" else m.group(2)
        return flat_module(f"{m.group(1)}.{target}"), f"lora_{m.group(3)}.weight"
    for other, ours in _SYNONYMS:
        if key.endswith("." + other):
            return flat_module(key[: -len(other) - 1]), ours
    for name in _TENSORS:
        if key.endswith("." + name):
            return flat_module(key[: -len(name) - 1]), name
    return None


def flat_module(module: str) -> str:
    """A module path in kohya's flat form."""
    if module.startswith("lycoris_"):
        # LyCORIS names a wrapped network's modules "lycoris_<path>": kohya's prefixes when it
        # wrapped a whole pipeline, else the bare path of the network it was given
        rest = module[len("lycoris_"):]
        if rest.startswith(("unet_", "te_", "te1_", "te2_", "te3_", "transformer_")):
            module = "lora_" + rest
        elif rest.startswith("text_model_"):
            module = "lora_te_" + rest
        else:
            module = "lora_unet_" + rest
    if module.startswith("lora_transformer_"):
        module = "lora_unet_" + module[len("lora_transformer_"):]
    if module.startswith("lora_") and "." not in module:
        return module
    for dotted, kohya in _PREFIXES:
        if module.startswith(dotted):
            rest = module[len(dotted):]
            if kohya is None:
                return flat_module(rest)
            return kohya + rest.replace(".", "_")
    if module.startswith("text_model."):
        return "lora_te_" + module.replace(".", "_")
    return "lora_unet_" + module.replace(".", "_")


def group(keys: Iterable[str], where: str) -> Tuple[Dict[str, Dict[str, str]], List[str]]:
    """Group a file's keys by module: ``{module: {tensor name: file key}}``, and the keys that are
    not LoRA tensors.

    Raises:
        SafetensorsError: two keys of the file spell the same tensor of one module (say both
            ``x.lora_A.weight`` and ``x.lora_down.weight``).
    """
    modules: Dict[str, Dict[str, str]] = {}
    other: List[str] = []
    for key in keys:
        split = split_key(key)
        if split is None:
            other.append(key)
            continue
        module, tensor = split
        tensors = modules.setdefault(module, {})
        if tensor in tensors:
            raise SafetensorsError(where, f"LoRA module {module!r}: keys {tensors[tensor]!r} and {key!r} "
                                          f"are both its {tensor}")
        tensors[tensor] = key
    return modules, other
