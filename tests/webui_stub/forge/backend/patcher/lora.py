"""backend/patcher/lora.py LoraLoader: LoRAs are baked into the weights in place, with the pre-LoRA
parameters kept in ``backup``; ``refresh`` puts the backups back (replacing the Parameter objects)
before applying the new patches, and does nothing while the patch hash is unchanged unless forced
(forge lora.py:344-446)."""
import torch

from backend import utils


class LoraLoader:
    def __init__(self, model):
        self.model = model
        self.backup = {}
        self.loaded_hash = str([])

    @torch.inference_mode()
    def refresh(self, lora_patches, offload_device=torch.device("cpu"), force_refresh=False):
        hashes = str(list(lora_patches.keys()))
        if hashes == self.loaded_hash and not force_refresh:
            return
        for k, w in self.backup.items():
            utils.set_attr_raw(self.model, k, torch.nn.Parameter(w, requires_grad=False))
        self.backup = {}
        for key, delta in lora_patches.items():
            weight = utils.get_attr(self.model, key)
            if key not in self.backup:
                self.backup[key] = weight.detach().to(offload_device)
            utils.set_attr_raw(self.model, key, torch.nn.Parameter(weight + delta, requires_grad=False))
        self.loaded_hash = hashes
