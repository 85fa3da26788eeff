"""Before and after: the same preview from the loaded merge and from the original checkpoint.

Run under the host's lock (``WebUIHost.compare``): the merge's images first, then the original
checkpoint's keys are streamed back (only the keys the merge wrote), the same seed and settings
generate again, and the merge is streamed back in, also when that generation fails. There is never
a second copy of the model: the swap back costs a re-merge of the merged keys.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any, List, Optional, Tuple

from ..errors import HostError

Images = List[Tuple[Any, str]]          # (PIL image, infotext)


@dataclass
class Comparison:
    merged: Images
    original: Images
    seed: int
    restore: Any = None                  # LiveReport of writing the original back
    reload: Any = None                   # LiveReport of loading the merge again

    def timing(self) -> str:
        """``original back in 1.2 s (1131 keys), merge again in 9.8 s (1131 keys)``."""
        parts = []
        if self.restore is not None:
            parts.append(f"original back in {self.restore.seconds:.1f} s ({self.restore.keys_restored} keys)")
        if self.reload is not None:
            parts.append(f"merge again in {self.reload.seconds:.1f} s ({self.reload.keys_merged} keys)")
        return ", ".join(parts)


def compare_locked(host, params) -> Comparison:
    """The comparison, for a host whose lock the caller holds (see the module docstring)."""
    merge = host.loaded_merge()
    if merge is None:
        raise HostError("no merge is loaded", "press 'Merge & load' first: Compare shows the original beside it")
    seed = int(params.seed) if params.seed is not None and int(params.seed) >= 0 else random.randrange(4294967294)
    params = replace(params, seed=seed, save=False)
    merged = host._generate_locked(params, {})
    restore = host.restore_within()
    reload: Optional[Any] = None
    try:
        original = host._generate_locked(params, {})
    finally:
        reload = host.hot_load_within(merge.recipe, merge.ident, merge.options)
    return Comparison(merged, original, seed, restore, reload)
