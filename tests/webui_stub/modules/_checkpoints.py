"""The checkpoint registry shared by both flavours (A1111 and Forge modules/sd_models.py
CheckpointInfo, list_models, get_closet_checkpoint_match, select_checkpoint)."""
import collections
import hashlib
import os
import re
import sys

from modules import _flavour, hashes, paths, shared

model_dir = "Stable-diffusion"
model_path = os.path.abspath(os.path.join(paths.models_path, model_dir))
checkpoints_list = {}
checkpoint_aliases = {}
checkpoint_alisases = checkpoint_aliases
checkpoints_loaded = collections.OrderedDict()


def model_hash(filename):
    """The legacy 8-character hash: 64 KiB at offset 1 MiB; 'NOFILE' for a missing file."""
    try:
        with open(filename, "rb") as f:
            f.seek(0x100000)
            return hashlib.sha256(f.read(0x10000)).hexdigest()[0:8]
    except FileNotFoundError:
        return "NOFILE"


class CheckpointInfo:
    def __init__(self, filename):
        self.filename = filename
        abspath = os.path.abspath(filename)
        ckpt_dir = os.path.abspath(shared.cmd_opts.ckpt_dir) if shared.cmd_opts.ckpt_dir else None
        if ckpt_dir and abspath.startswith(ckpt_dir):
            name = abspath.replace(ckpt_dir, "")
        elif abspath.startswith(model_path):
            name = abspath.replace(model_path, "")
        else:
            name = os.path.basename(filename)
        name = name.lstrip("/\\")
        self.is_safetensors = os.path.splitext(filename)[1].lower() == ".safetensors"
        self.metadata = {}
        self.name = name
        self.name_for_extra = os.path.splitext(os.path.basename(filename))[0]
        self.model_name = os.path.splitext(name.replace("/", "_").replace("\\", "_"))[0]
        self.hash = model_hash(filename)
        self.sha256 = hashes.sha256_from_cache(self.filename, f"checkpoint/{name}")
        self.shorthash = self.sha256[0:10] if self.sha256 else None
        self.title = name if self.shorthash is None else f"{name} [{self.shorthash}]"
        stem = self.name_for_extra
        self.short_title = stem if self.shorthash is None else f"{stem} [{self.shorthash}]"
        self.ids = [self.hash, self.model_name, self.title, name, self.name_for_extra, f"{name} [{self.hash}]"]
        if self.shorthash:
            self.ids += [self.shorthash, self.sha256, f"{self.name} [{self.shorthash}]"]

    def register(self):
        checkpoints_list[self.title] = self
        for i in self.ids:
            checkpoint_aliases[i] = self

    def calculate_shorthash(self):
        """Hashes the whole file (and caches it in hashes.cache) unless already cached."""
        self.sha256 = hashes.sha256(self.filename, f"checkpoint/{self.name}")
        if self.sha256 is None:
            return None
        if self.shorthash == self.sha256[0:10]:
            return self.shorthash
        self.shorthash = self.sha256[0:10]
        self.ids += [self.shorthash, self.sha256, f"{self.name} [{self.shorthash}]"]
        old_title = self.title
        self.title = f"{self.name} [{self.shorthash}]"
        self.short_title = f"{self.name_for_extra} [{self.shorthash}]"
        checkpoints_list.pop(old_title, None)
        self.register()
        return self.shorthash

    def __repr__(self):
        # Forge's forge_hash is str(loading parameters), so this repr is part of a model's identity
        return str(dict(filename=self.filename, hash=self.hash))

    __str__ = __repr__


def list_models():
    """Clears and rebuilds the registry (A1111 and Forge; Forge also lists .gguf)."""
    checkpoints_list.clear()
    checkpoint_aliases.clear()
    exts = (".ckpt", ".safetensors", ".gguf") if _flavour.is_forge() else (".ckpt", ".safetensors")
    folders = [model_path] + ([shared.cmd_opts.ckpt_dir] if shared.cmd_opts.ckpt_dir else [])
    for folder in folders:
        # modelloader.load_models -> modules/util.py walk_files: os.walk(path, followlinks=True)
        for root, _, files in os.walk(folder, followlinks=True):
            for f in sorted(files):
                if f.lower().endswith(exts) and not f.lower().endswith((".vae.safetensors", ".vae.ckpt")):
                    CheckpointInfo(os.path.join(root, f)).register()


def checkpoint_tiles(use_short=False):
    """A1111 shows titles; Forge shows names without the hash (forge sd_models.py:161-162)."""
    if _flavour.is_forge():
        return [x.short_title if use_short else x.name for x in checkpoints_list.values()]
    return [x.short_title if use_short else x.title for x in checkpoints_list.values()]


re_strip_checksum = re.compile(r"\s*\[[^]]+]\s*$")


def get_closet_checkpoint_match(search_string):
    if not search_string:
        return None
    info = checkpoint_aliases.get(search_string)
    if info is not None:
        return info
    found = sorted([i for i in checkpoints_list.values() if search_string in i.title], key=lambda x: len(x.title))
    if found:
        return found[0]
    bare = re.sub(re_strip_checksum, "", search_string)
    found = sorted([i for i in checkpoints_list.values() if bare in i.title], key=lambda x: len(x.title))
    return found[0] if found else None


def select_checkpoint():
    """What generation loads: opts.sd_model_checkpoint through checkpoint_aliases, else the first
    checkpoint with a 'not found; loading fallback' message."""
    wanted = shared.opts.sd_model_checkpoint
    info = checkpoint_aliases.get(wanted)
    if info is not None:
        return info
    if not checkpoints_list:
        return None
    info = next(iter(checkpoints_list.values()))
    if wanted is not None:
        print(f"Checkpoint {wanted} not found; loading fallback {info.title}", file=sys.stderr)
    return info
