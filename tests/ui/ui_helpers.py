"""Test data of the tab's tests: tiny real SD1 checkpoints and a LoRA, and a slow test method."""
from __future__ import annotations

import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from lib_mecha.arch.demo import random_state_dict

PROJ_IN = "model.diffusion_model.input_blocks.1.1.proj_in.weight"
LORA_MODULE = "lora_unet_down_blocks_0_attentions_0_proj_in"
STRAY_MODULE = "lora_unet_not_a_module_anywhere"
SLOW = "ui_test_slow_lerp"


def write_models(folder: Path, shape_divisor: int) -> Path:
    """a, b, c: SD1 checkpoints with every real key, plus lora_style: a kohya LoRA on one
    conv of model a's shape and one module that matches nothing."""
    folder.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate("abc"):
        sd = random_state_dict("sd1-ldm", seed, dtype=torch.float16, shape_divisor=shape_divisor)
        save_file(sd, str(folder / f"{name}.safetensors"))
        if name == "a":
            out_ch, in_ch = sd[PROJ_IN].shape[:2]
    g = torch.Generator().manual_seed(7)
    lora = {
        f"{LORA_MODULE}.lora_up.weight": torch.randn(out_ch, 2, 1, 1, generator=g),
        f"{LORA_MODULE}.lora_down.weight": torch.randn(2, in_ch, 1, 1, generator=g),
        f"{LORA_MODULE}.alpha": torch.tensor(1.0),
        f"{STRAY_MODULE}.lora_up.weight": torch.randn(4, 2, generator=g),
        f"{STRAY_MODULE}.lora_down.weight": torch.randn(2, 4, generator=g),
    }
    save_file(lora, str(folder / "lora_style.safetensors"), metadata={"ss_network_module": "networks.lora"})
    return folder


def register_slow_method(delay: float = 0.02):
    """A test-only method that sleeps per key (inside the method, never in the engine), so that
    a merge lasts long enough to be cancelled midway."""
    from lib_mecha.methods import Float, Tensor, merge_method, unregister
    from lib_mecha.methods.spec import SAME

    unregister(SLOW)

    @merge_method(name=SLOW, returns=SAME, label="Slow lerp (test)", category="test",
                  help="weighted_sum that waits a little per key; for cancellation tests")
    def slow(a=Tensor(SAME), b=Tensor(SAME), alpha=Float(0.5, soft_minimum=0.0, soft_maximum=1.0)):
        time.sleep(delay)
        return torch.lerp(a, b, alpha)
    return slow


SIZED = "ui_test_slow_by_size"


def register_sized_method(seconds_per_element: float):
    """A test-only method that waits in proportion to each key's size, as a merge limited by its
    reads and writes does: an honest ETA must come out right for it (the engine starts with the
    largest keys, so the share of keys done says little)."""
    from lib_mecha.methods import Float, Tensor, merge_method, unregister
    from lib_mecha.methods.spec import SAME

    unregister(SIZED)

    @merge_method(name=SIZED, returns=SAME, label="Slow by size (test)", category="test",
                  help="weighted_sum that waits in proportion to the key's size; for ETA tests")
    def sized(a=Tensor(SAME), b=Tensor(SAME), alpha=Float(0.5, soft_minimum=0.0, soft_maximum=1.0)):
        time.sleep(a.numel() * seconds_per_element)
        return torch.lerp(a, b, alpha)
    return sized
