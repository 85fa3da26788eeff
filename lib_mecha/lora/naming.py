"""The names LoRA files give to a checkpoint's modules, generated from the checkpoint's own keys.

Every LoRA module name is handled in kohya's flat form (``lora_unet_…``, ``lora_te_…``,
``lora_te1_…``): :mod:`.formats` flattens the dotted diffusers/PEFT names into it. For each
weight of an architecture this module yields the flat names a LoRA may use for it:

* the network's own path flattened (``lora_unet_input_blocks_4_1_proj_in`` for SDXL's SGM UNet,
  ``lora_unet_double_blocks_0_img_attn_qkv`` for FLUX);
* the diffusers path of the same module, derived by the renaming rules below from the
  network's structure (``lora_unet_down_blocks_1_attentions_0_proj_in``), which is what SD1/SD2
  kohya files and every diffusers/PEFT file use;
* for text encoders, the Hugging Face CLIP / T5 path; OpenCLIP's fused ``in_proj_weight`` is the
  q, k and v projections stacked, so each of those names targets one third of its rows.

A name can target a row slice of a fused weight (diffusers' separate q, k, v of FLUX and SD3),
and a few diffusers modules hold their two halves in the other order (``norm_out``: scale then
shift, where the original has shift then scale); :class:`Part` records both.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

from ..arch.base import Architecture

UNET_PREFIX = "model.diffusion_model."
TEXT_COMPONENTS = ("clip_l", "clip_h", "clip_g", "t5xxl")


@dataclass(frozen=True)
class Part:
    """Where one LoRA module's ΔW goes: ``rows`` of ``key`` (None: all of it), and the bias.

    ``rows`` is ``(start, stop, total)`` in units of ``1/total`` of the key's first dimension
    (q, k, v of a fused qkv are (0, 1, 3), (1, 2, 3), (2, 3, 3)), so it holds for any width.
    """

    key: str
    bias: Optional[str] = None
    rows: Optional[Tuple[int, int, int]] = None
    swap_halves: bool = False

    def row_range(self, n: int) -> Optional[Tuple[int, int]]:
        """The rows of a first dimension of size ``n`` (None: all of them)."""
        if self.rows is None:
            return None
        start, stop, total = self.rows
        return n * start // total, n * stop // total


def flat(path: str) -> str:
    return path.replace(".", "_")


# --- LDM / SGM UNet -> diffusers ---------------------------------------------------------

_RESNET = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
           "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}
_UNET_FIXED = {"time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2",
               "label_emb.0.0": "add_embedding.linear_1", "label_emb.0.2": "add_embedding.linear_2",
               "input_blocks.0.0": "conv_in", "out.0": "conv_norm_out", "out.2": "conv_out"}
_ATTN_PARTS = ("norm", "proj_in", "proj_out", "transformer_blocks")


def _resnet(rest: str) -> Optional[str]:
    return _RESNET.get(rest)


def ldm_unet_to_diffusers(path: str, res_blocks: int = 2) -> Optional[str]:
    """The diffusers name of an LDM/SGM UNet module path (``input_blocks.1.1.proj_in`` →
    ``down_blocks.0.attentions.0.proj_in``), or None for paths diffusers lacks."""
    if path in _UNET_FIXED:
        return _UNET_FIXED[path]
    per_down, per_up = res_blocks + 1, res_blocks + 1
    m = re.fullmatch(r"input_blocks\.(\d+)\.(\d+)\.(.+)", path)
    if m:
        n, sub, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        level, j = divmod(n - 1, per_down)
        if sub == 0 and rest == "op":
            return f"down_blocks.{level}.downsamplers.0.conv"
        if sub == 0 and _resnet(rest):
            return f"down_blocks.{level}.resnets.{j}.{_resnet(rest)}"
        if sub == 1 and rest.split(".")[0] in _ATTN_PARTS:
            return f"down_blocks.{level}.attentions.{j}.{rest}"
        return None
    m = re.fullmatch(r"middle_block\.(\d)\.(.+)", path)
    if m:
        sub, rest = int(m.group(1)), m.group(2)
        if sub in (0, 2) and _resnet(rest):
            return f"mid_block.resnets.{sub // 2}.{_resnet(rest)}"
        if sub == 1:
            return f"mid_block.attentions.0.{rest}"
        return None
    m = re.fullmatch(r"output_blocks\.(\d+)\.(\d+)\.(.+)", path)
    if m:
        n, sub, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        level, j = divmod(n, per_up)
        if sub == 0 and _resnet(rest):
            return f"up_blocks.{level}.resnets.{j}.{_resnet(rest)}"
        if rest == "conv":
            return f"up_blocks.{level}.upsamplers.0.conv"
        if sub == 1 and rest.split(".")[0] in _ATTN_PARTS:
            return f"up_blocks.{level}.attentions.{j}.{rest}"
    return None


# --- FLUX and SD3 (MMDiT) -> diffusers ---------------------------------------------------

_FLUX_FIXED = {
    "img_in": "x_embedder", "txt_in": "context_embedder",
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
    "final_layer.linear": "proj_out",
}
_FLUX_DOUBLE = {"img_mod.lin": "norm1.linear", "txt_mod.lin": "norm1_context.linear",
                "img_attn.proj": "attn.to_out.0", "txt_attn.proj": "attn.to_add_out",
                "img_mlp.0": "ff.net.0.proj", "img_mlp.2": "ff.net.2",
                "txt_mlp.0": "ff_context.net.0.proj", "txt_mlp.2": "ff_context.net.2",
                "img_attn.norm.query_norm": "attn.norm_q", "img_attn.norm.key_norm": "attn.norm_k",
                "txt_attn.norm.query_norm": "attn.norm_added_q", "txt_attn.norm.key_norm": "attn.norm_added_k"}
_FLUX_SINGLE = {"linear2": "proj_out", "modulation.lin": "norm.linear",
                "norm.query_norm": "attn.norm_q", "norm.key_norm": "attn.norm_k"}

_SD3_FIXED = {"x_embedder.proj": "pos_embed.proj", "context_embedder": "context_embedder",
              "t_embedder.mlp.0": "time_text_embed.timestep_embedder.linear_1",
              "t_embedder.mlp.2": "time_text_embed.timestep_embedder.linear_2",
              "y_embedder.mlp.0": "time_text_embed.text_embedder.linear_1",
              "y_embedder.mlp.2": "time_text_embed.text_embedder.linear_2",
              "final_layer.linear": "proj_out"}
_SD3_BLOCK = {"x_block.attn.proj": "attn.to_out.0", "context_block.attn.proj": "attn.to_add_out",
              "x_block.attn2.proj": "attn2.to_out.0",
              "x_block.mlp.fc1": "ff.net.0.proj", "x_block.mlp.fc2": "ff.net.2",
              "context_block.mlp.fc1": "ff_context.net.0.proj", "context_block.mlp.fc2": "ff_context.net.2",
              "x_block.adaLN_modulation.1": "norm1.linear",
              "x_block.attn.ln_q": "attn.norm_q", "x_block.attn.ln_k": "attn.norm_k",
              "context_block.attn.ln_q": "attn.norm_added_q", "context_block.attn.ln_k": "attn.norm_added_k",
              "x_block.attn2.ln_q": "attn2.norm_q", "x_block.attn2.ln_k": "attn2.norm_k"}
_QKV = ("to_q", "to_k", "to_v")
_ADD_QKV = ("add_q_proj", "add_k_proj", "add_v_proj")


def _thirds(base: str, names, total: int = 3) -> List[Tuple[str, Tuple[int, int, int], bool]]:
    return [(f"{base}.{n}", (i, i + 1, total), False) for i, n in enumerate(names)]


def dit_to_diffusers(path: str, shape: Tuple[int, ...]) -> List[Tuple[str, Optional[Tuple[int, int, int]], bool]]:
    """Diffusers names of a FLUX or SD3 module path, each with its row slice and halves swap."""
    width = shape[1] if len(shape) > 1 else shape[0]
    if path in _FLUX_FIXED:
        return [(_FLUX_FIXED[path], None, False)]
    if path == "final_layer.adaLN_modulation.1":
        return [("norm_out.linear", None, True)]
    m = re.fullmatch(r"double_blocks\.(\d+)\.(.+)", path)
    if m:
        b, rest = f"transformer_blocks.{m.group(1)}", m.group(2)
        if rest == "img_attn.qkv":
            return _thirds(b + ".attn", _QKV)
        if rest == "txt_attn.qkv":
            return _thirds(b + ".attn", _ADD_QKV)
        return [(f"{b}.{_FLUX_DOUBLE[rest]}", None, False)] if rest in _FLUX_DOUBLE else []
    m = re.fullmatch(r"single_blocks\.(\d+)\.(.+)", path)
    if m:
        b, rest = f"single_transformer_blocks.{m.group(1)}", m.group(2)
        if rest == "linear1":  # q, k, v (width rows each), then the MLP's input (the rest)
            total = shape[0] // width
            return _thirds(b + ".attn", _QKV, total) + [(b + ".proj_mlp", (3, total, total), False)]
        return [(f"{b}.{_FLUX_SINGLE[rest]}", None, False)] if rest in _FLUX_SINGLE else []
    if path in _SD3_FIXED:
        return [(_SD3_FIXED[path], None, False)]
    m = re.fullmatch(r"joint_blocks\.(\d+)\.(.+)", path)
    if m:
        b, rest = f"transformer_blocks.{m.group(1)}", m.group(2)
        if rest == "x_block.attn.qkv":
            return _thirds(b + ".attn", _QKV)
        if rest == "context_block.attn.qkv":
            return _thirds(b + ".attn", _ADD_QKV)
        if rest == "x_block.attn2.qkv":
            return _thirds(b + ".attn2", _QKV)
        if rest == "context_block.adaLN_modulation.1":
            # the last block's context side only has (shift, scale), stored swapped by diffusers
            return [(b + ".norm1_context.linear", None, shape[0] == 2 * width)]
        return [(f"{b}.{_SD3_BLOCK[rest]}", None, False)] if rest in _SD3_BLOCK else []
    return []


# --- text encoders -----------------------------------------------------------------------

_OPENCLIP = [(r"transformer\.resblocks\.(\d+)\.attn\.out_proj", r"text_model.encoder.layers.\1.self_attn.out_proj"),
             (r"transformer\.resblocks\.(\d+)\.mlp\.c_fc", r"text_model.encoder.layers.\1.mlp.fc1"),
             (r"transformer\.resblocks\.(\d+)\.mlp\.c_proj", r"text_model.encoder.layers.\1.mlp.fc2"),
             (r"transformer\.resblocks\.(\d+)\.ln_1", r"text_model.encoder.layers.\1.layer_norm1"),
             (r"transformer\.resblocks\.(\d+)\.ln_2", r"text_model.encoder.layers.\1.layer_norm2"),
             (r"ln_final", "text_model.final_layer_norm"),
             (r"token_embedding", "text_model.embeddings.token_embedding")]


def _text_root(key: str) -> Optional[Tuple[str, str]]:
    """(network-relative path, style) of a text-encoder key, style in hf / openclip / t5."""
    i = key.find("text_model.")
    if i >= 0:
        return key[i:], "hf"
    m = re.search(r"(transformer\.resblocks\..*|ln_final\..*|token_embedding\..*)$", key)
    if m:
        return m.group(1), "openclip"
    i = key.find("encoder.block.")
    if i >= 0:
        return key[i:], "t5"
    i = key.find("encoder.final_layer_norm")
    if i >= 0:
        return key[i:], "t5"
    return None


def text_names(key: str, shape) -> List[Tuple[str, Optional[Tuple[int, int, int]]]]:
    """HF-style names (without prefix) of a text encoder weight, with row slices."""
    root = _text_root(key)
    if root is None:
        return []
    path, style = root
    if style == "openclip":
        m = re.fullmatch(r"transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)", path)
        if m:
            base = f"text_model.encoder.layers.{m.group(1)}.self_attn"
            return [(f"{base}.{p}", (i, i + 1, 3)) for i, p in enumerate(("q_proj", "k_proj", "v_proj"))]
        module = _module_path(path)
        for pattern, repl in _OPENCLIP:
            if re.fullmatch(pattern, module):
                return [(re.sub(pattern, repl, module), None)]
        return []
    return [(_module_path(path), None)]


def _module_path(key: str) -> str:
    for suffix in (".weight", ".bias", ".scale"):
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return key


def text_prefixes(arch: Architecture, component: str) -> Tuple[str, ...]:
    """kohya prefixes of a text encoder: ``lora_te`` when the model has one, else te1/te2/te3."""
    texts = [c for c in arch.components if c in TEXT_COMPONENTS]
    if len(texts) == 1:
        return ("lora_te", "lora_te1")
    if component == "clip_l":
        return ("lora_te1",)
    if component == "clip_g":
        return ("lora_te2",)
    # T5 is kohya's te3; diffusers calls FLUX's T5 text_encoder_2, which formats flattens to te2
    return ("lora_te3",) if "clip_g" in texts else ("lora_te3", "lora_te2")


# --- one architecture --------------------------------------------------------------------

def _weight_keys(arch: Architecture) -> Iterator[Tuple[str, str, Optional[str]]]:
    """(weight key, module path, bias key) for every trainable weight of the architecture."""
    for key, spec in arch.keys.items():
        if not spec.dtype.is_floating_point or spec.component in ("vae", "ema", "scheduler"):
            continue
        if key.endswith(".weight") or key.endswith(".scale"):
            module = key.rsplit(".", 1)[0]
            bias = module + ".bias"
        elif key.endswith("in_proj_weight"):
            module = key[: -len("_weight")]
            bias = module + "_bias"
        else:
            continue
        yield key, module, bias if bias in arch.keys else None


def lora_names(arch: Architecture) -> Dict[str, List[Part]]:
    """Every flat LoRA module name the architecture answers to, with where its ΔW goes."""
    out: Dict[str, List[Part]] = {}

    def add(name: str, part: Part):
        parts = out.setdefault(name, [])
        if part not in parts:
            parts.append(part)

    for key, module, bias in _weight_keys(arch):
        spec = arch.keys[key]
        shape = tuple(spec.shape)
        if key.startswith(UNET_PREFIX):
            path = module[len(UNET_PREFIX):]
            add("lora_unet_" + flat(path), Part(key, bias))
            if "double_blocks." in path or "single_blocks." in path or "joint_blocks." in path or \
                    path in _FLUX_FIXED or path in _SD3_FIXED or path.startswith("final_layer."):
                for name, rows, swap in dit_to_diffusers(path, shape):
                    add("lora_unet_" + flat(name), Part(key, bias, rows, swap))
            else:
                name = ldm_unet_to_diffusers(path)
                if name:
                    add("lora_unet_" + flat(name), Part(key, bias))
        elif spec.component in TEXT_COMPONENTS:
            for prefix in text_prefixes(arch, spec.component):
                for name, rows in text_names(key, shape):
                    add(f"{prefix}_{flat(name)}", Part(key, bias, rows))
    return out
