"""Our generated tables equal sd-mecha 1.1.8's configurations where it has the architecture."""
import pytest
import torch

import lib_mecha.arch as arch
import oracle

ORACLE_IDS = ["sd1-ldm", "sdxl-sgm", "sd3-comfyui", "flux-flux", "sd1-supermerger_blocks", "sdxl-supermerger_blocks"]

# Deliberate differences: FLUX schnell has no guidance embedding, so one table serves dev and
# schnell only if guidance_in is optional (sd-mecha's table, written for dev, requires it).
OPTIONAL_HERE_ONLY = {"flux-flux": "model.diffusion_model.guidance_in."}


@pytest.mark.parametrize("identifier", ORACLE_IDS)
def test_table_equals_sd_mecha(identifier):
    expected = oracle.load(identifier)
    table = arch.resolve_architecture(identifier)
    # components in sd-mecha's order
    assert list(table.components) == list(expected)
    ours = {k: s for k, s in table.keys.items()}
    theirs = {k: (c, m) for c, keys in expected.items() for k, m in keys.items()}
    assert set(ours) == set(theirs), (sorted(set(ours) - set(theirs))[:5], sorted(set(theirs) - set(ours))[:5])
    for key, (component, meta) in theirs.items():
        spec = ours[key]
        assert spec.component == component, key
        assert list(spec.shape) == list(meta["shape"]), key
        assert spec.dtype == getattr(torch, meta["dtype"]), key
        assert sorted(spec.aliases) == sorted(meta.get("aliases", [])), key
        if key.startswith(OPTIONAL_HERE_ONLY.get(identifier, "\0")):
            assert spec.optional and not meta.get("optional", False), key
        else:
            assert spec.optional == bool(meta.get("optional", False)), key
