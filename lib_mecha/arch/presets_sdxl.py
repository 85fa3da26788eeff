"""SDXL block-weight presets, made for the 21 blocks of ``sdxl-supermerger_blocks``.

SDXL's UNet has three levels, not four, and puts its attention deep:

* outer level, 320 channels, no attention: IN00 (conv_in), IN01-IN02, IN03 (downsample) and
  OUT06-OUT08 (with the final layers); fine texture and detail;
* ring level, 640 channels, 2 transformer layers per block: IN04-IN05, IN06 (downsample),
  OUT03-OUT05;
* core level, 1280 channels, 10 transformer layers per block: IN07-IN08, M00, OUT00-OUT02;
  composition, subject and most of the prompt following.

Values are the weight of model B. ``BASE`` (both text encoders, time and size embeddings) and
``VAE`` are 0 unless the preset is about them. The curves run over the 19 UNet blocks
IN00..OUT08 as x = 0 .. 1.
"""
from .layouts import unet_blocks
from .presets import cosine, curve, pick, smoothstep

BLOCKS = unet_blocks(9, ("VAE",))
UNET = BLOCKS[1:-1]
OUTER = ("IN00", "IN01", "IN02", "IN03", "OUT06", "OUT07", "OUT08")
RING = ("IN04", "IN05", "IN06", "OUT03", "OUT04", "OUT05")
CORE = ("IN07", "IN08", "M00", "OUT00", "OUT01", "OUT02")
IN = tuple(b for b in UNET if b.startswith("IN"))
OUT = tuple(b for b in UNET if b.startswith("OUT"))
ATTENTION = ("IN04", "IN05", "IN07", "IN08", "M00", "OUT00", "OUT01", "OUT02", "OUT03", "OUT04", "OUT05")
Z = {"BASE": 0, "VAE": 0}


def _levels(outer, ring, core):
    return {**Z, **{b: outer for b in OUTER}, **{b: ring for b in RING}, **{b: core for b in CORE}}


PRESETS = {
    "ALL_A": ("model A everywhere", pick(BLOCKS, ())),
    "ALL_B": ("model B everywhere, text encoders and VAE included", pick(BLOCKS, BLOCKS)),
    "UNET_B": ("model B's UNet with model A's text encoders and VAE", pick(BLOCKS, UNET, **Z)),
    "TEXT_B": ("model B's text encoders (BASE) on model A's UNet and VAE", pick(BLOCKS, ("BASE",))),
    "FLAT_25": ("25 % B in every UNet block", pick(BLOCKS, UNET, 0.25, **Z)),
    "FLAT_50": ("50 % B in every UNet block", pick(BLOCKS, UNET, 0.5, **Z)),
    "FLAT_75": ("75 % B in every UNet block", pick(BLOCKS, UNET, 0.75, **Z)),
    "GRAD_V": ("B at both ends of the UNet, falling linearly to A at the middle block",
               curve(UNET, lambda x: abs(1 - 2 * x), **Z)),
    "GRAD_A": ("A at both ends of the UNet, rising linearly to B at the middle block",
               curve(UNET, lambda x: 1 - abs(1 - 2 * x), **Z)),
    "SMOOTHSTEP": ("A to B along the UNet on a smoothstep curve", curve(UNET, smoothstep, **Z)),
    "REVERSE_SMOOTHSTEP": ("B to A along the UNet on a smoothstep curve",
                           curve(UNET, lambda x: 1 - smoothstep(x), **Z)),
    "COSINE": ("B to A along the UNet on a half cosine", curve(UNET, cosine, **Z)),
    "REVERSE_COSINE": ("A to B along the UNet on a half cosine", curve(UNET, lambda x: 1 - cosine(x), **Z)),
    "CORE": ("B in the 1280-channel core (IN07-IN08, M00, OUT00-OUT02): B's composition, A's detail",
             _levels(0, 0, 1)),
    "CORE_SOFT": ("B in the core, 50 % B in the 640-channel ring, A in the outer level", _levels(0, 0.5, 1)),
    "RING": ("B in the 640-channel ring (IN04-IN06, OUT03-OUT05) only", _levels(0, 1, 0)),
    "OUTER": ("B in the 320-channel outer level without attention: B's texture on A's composition",
              _levels(1, 0, 0)),
    "OUTER_SOFT": ("B in the outer level, 50 % B in the ring, A in the core", _levels(1, 0.5, 0)),
    "ATTENTION": ("B in every block that holds transformer layers, A in the pure convolution blocks",
                  pick(BLOCKS, ATTENTION, **Z)),
    "NO_ATTENTION": ("B in the blocks without transformer layers (outer level and downsamplers)",
                     pick(BLOCKS, tuple(b for b in UNET if b not in ATTENTION), **Z)),
    "IN_B": ("B in the input blocks, A in the middle and output blocks", pick(BLOCKS, IN, **Z)),
    "OUT_B": ("B in the output blocks, A in the input and middle blocks", pick(BLOCKS, OUT, **Z)),
    "OUT_CORE": ("B in the core output blocks OUT00-OUT02 only, where style is decoded", pick(BLOCKS, CORE[3:], **Z)),
    "MID_50": ("50 % B in the middle block and its neighbours IN08 and OUT00",
               pick(BLOCKS, ("IN08", "M00", "OUT00"), 0.5, **Z)),
    "VAE_B": ("model B's VAE only", pick(BLOCKS, ("VAE",))),
}
