"""Merge options: one frozen dataclass, with the help text next to each field.

The command line and the WebUI settings are generated from these fields, so a new option
appears everywhere at once.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..errors import ParameterError

DTYPE_NAMES = {
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "fp64": torch.float64, "float64": torch.float64, "double": torch.float64,
}
KEEP = "keep"


def parse_dtype(name, *, allow_keep: bool = False, option: str = "dtype"):
    """``"fp16"``/``"bf16"``/``"fp32"``/``"fp64"`` (and their torch names) → torch dtype;
    ``"keep"`` when allowed. torch dtypes pass through."""
    if isinstance(name, torch.dtype):
        return name
    if allow_keep and name == KEEP:
        return KEEP
    key = str(name).lower().removeprefix("torch.")
    if key in DTYPE_NAMES:
        return DTYPE_NAMES[key]
    choices = ["fp16", "bf16", "fp32", "fp64"] + ([KEEP] if allow_keep else [])
    raise ParameterError("merge", option, f"unknown dtype {name!r}", f"choose one of {', '.join(choices)}")


def parse_device(name) -> torch.device:
    """A device name (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``...) as a torch device.

    Raises:
        ParameterError: a name torch does not know.
    """
    if isinstance(name, torch.device):
        return name
    try:
        return torch.device(str(name).strip())
    except (RuntimeError, ValueError, TypeError):
        raise ParameterError("merge", "device", f"unknown device {name!r}",
                             "use cpu, cuda, cuda:1, mps, ...") from None


def available_devices() -> List[str]:
    """The devices this torch can merge on here: ``cpu``; ``cuda`` when there is a CUDA GPU (and
    ``cuda:0``, ``cuda:1``... when there are several); ``mps`` on an Apple GPU."""
    out = ["cpu"]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        out += ["cuda"] + ([f"cuda:{i}" for i in range(count)] if count > 1 else [])
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def require_device(name) -> torch.device:
    """``name`` as a torch device that this torch can compute on now.

    Raises:
        ParameterError: an unknown device, or one this machine or this torch build lacks (a CUDA
            device with a CPU-only torch, a GPU index past the last GPU...).
    """
    device = parse_device(name)
    if device.type == "cpu":
        return device
    if device.type == "cuda" and not torch.cuda.is_available():
        built = "has no usable CUDA GPU" if torch.version.cuda or torch.version.hip else "is a CPU-only build"
        raise ParameterError("merge", "device", f"{name!r} is not available: this torch {torch.__version__} {built}",
                             "use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ParameterError("merge", "device", f"{name!r} is not available: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s), counted from cuda:0")
    if device.type == "meta":
        raise ParameterError("merge", "device", "'meta' holds no data: nothing can be merged on it", "use --device cpu")
    mps = getattr(torch.backends, "mps", None)
    if device.type == "mps" and not (mps is not None and mps.is_available()):
        raise ParameterError("merge", "device", f"{name!r} is not available: this machine or torch build has no "
                                                f"Apple GPU (MPS)", "use --device cpu")
    try:
        torch.empty(1, device=device)  # any other missing device or index says so here
    except Exception as e:  # torch raises RuntimeError, AssertionError, ValueError... by backend
        problem = (str(e).strip() or type(e).__name__).splitlines()[0].split(". ")[0][:200]
        raise ParameterError("merge", "device", f"{name!r} is not available: {problem}", "use --device cpu") from None
    return device


def _opt(default, help: str, **meta):
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class MergeOptions:
    device: str = _opt("cpu", "device the merge computes on: cpu, cuda, cuda:1, mps, or what the host gives")
    compute_dtype: str = _opt("fp32", "dtype of the arithmetic", choices=("fp32", "fp64", "fp16", "bf16"))
    output_dtype: str = _opt("fp16", "dtype of floating-point outputs; 'keep' keeps each input's own",
                             choices=("fp16", "bf16", "fp32", KEEP), flags=("--dtype", "--output-dtype"))
    threads: int = _opt(2, "worker threads: keys merged at once, or all of them on one key too big to share the "
                           "memory budget with another of its size; 0 merges on the calling thread")
    torch_threads: int = _opt(1, "torch intra-op threads on each of the merge's own threads (other threads "
                                 "keep theirs); 0 leaves torch's setting alone. The worker threads already "
                                 "merge keys in parallel")
    memory_budget_mb: int = _opt(512, "upper bound for tensors in flight, in MiB; large elementwise keys "
                                      "are merged in chunks to stay inside it, and a whole-tensor key larger "
                                      "than it runs alone; besides it, one finished key per thread may wait "
                                      "to be written")
    vram_budget_mb: Optional[int] = _opt(None, "upper bound for the merge's memory on a GPU, in MiB; a key that does "
                                               "not fit is merged on the CPU instead. Default: half of the VRAM "
                                               "free when the merge starts", type=int)
    model_dirs: Tuple[str, ...] = _opt((), "folders searched for relative model names, in order",
                                       flags=("--models-dir", "--model-dir"))
    overwrite: bool = _opt(False, "replace an existing output file")
    fallback_model: Optional[str] = _opt(None, "take keys the recipe cannot produce from this model")

    def __post_init__(self):
        parse_device(self.device)
        parse_dtype(self.compute_dtype, option="compute_dtype")
        parse_dtype(self.output_dtype, allow_keep=True, option="output_dtype")
        if int(self.threads) < 0:
            raise ParameterError("merge", "threads", f"must be 0 or more, got {self.threads}")
        if int(self.torch_threads) < 0:
            raise ParameterError("merge", "torch_threads", f"must be 0 or more, got {self.torch_threads}")
        if int(self.memory_budget_mb) < 16:
            raise ParameterError("merge", "memory_budget_mb", f"must be at least 16, got {self.memory_budget_mb}")
        if self.vram_budget_mb is not None and int(self.vram_budget_mb) <= 0:
            raise ParameterError("merge", "vram_budget_mb", f"must be more than 0, got {self.vram_budget_mb}",
                                 "leave it out for half of the free VRAM")
        object.__setattr__(self, "model_dirs", tuple(str(d) for d in self.model_dirs))

    @property
    def torch_compute_dtype(self) -> torch.dtype:
        return parse_dtype(self.compute_dtype)

    @property
    def torch_output_dtype(self):
        return parse_dtype(self.output_dtype, allow_keep=True)

    def with_(self, **changes) -> "MergeOptions":
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ParameterError("merge", sorted(unknown)[0], "no such option",
                                 "options are: " + ", ".join(sorted(known)))
        return replace(self, **changes)

    @classmethod
    def describe(cls) -> Dict[str, Dict[str, Any]]:
        return {f.name: {"default": f.default, **f.metadata} for f in fields(cls)}
