"""Classic SD1 block-weight presets (the published SuperMerger / MBW figures).

Values are the weight of model B per block of ``sd1-supermerger_blocks``. The 25 UNet blocks
IN00..IN11, M00, OUT00..OUT11 are positions x = 0 .. 1; ``BASE`` (text encoder, VAE) is 0
unless said otherwise. Curves are generated from their formulas; TRUE_CUBIC_HERMITE is a
spline without a closed form here, so its published values are listed.
"""
from .layouts import unet_blocks
from .presets import cosine, curve, fold, pick, smoothstep

BLOCKS = unet_blocks(12)
UNET = BLOCKS[1:]  # IN00 .. OUT11
IN, OUT = UNET[:12], UNET[13:]


def _ends(n: int):
    """The n blocks nearest each end of the UNet (the outer, high-resolution layers)."""
    return UNET[:n] + UNET[-n:]


_TRUE_HERMITE = (0, 0.199031876929012, 0.325761959876543, 0.424641927083333, 0.498456790123457,
                 0.549991560570988, 0.58203125, 0.597360869984568, 0.598765432098765, 0.589029947916667,
                 0.570939429012346, 0.547278886959876, 0.520833333333333, 0.49438777970679,
                 0.470727237654321, 0.45263671875, 0.442901234567901, 0.444305796682099,
                 0.459635416666667, 0.491675106095678, 0.543209876543211, 0.617024739583333,
                 0.715904706790124, 0.842634789737655, 1)


def _fake_hermite(x):
    return 25 / 6 * x - 9.5 * x ** 2 + 19 / 3 * x ** 3


def _listed(values, reverse=False):
    return {"BASE": 0, **{b: (1 - v if reverse else v) for b, v in zip(UNET, values)}}


PRESETS = {
    "GRAD_V": ("B at both ends of the UNet, falling linearly to A at the middle block",
               curve(UNET, lambda x: abs(1 - 2 * x), BASE=0)),
    "GRAD_A": ("A at both ends of the UNet, rising linearly to B at the middle block",
               curve(UNET, lambda x: 1 - abs(1 - 2 * x), BASE=0)),
    "FLAT_25": ("25 % B in every UNet block", pick(BLOCKS, UNET, 0.25, BASE=0)),
    "FLAT_75": ("75 % B in every UNet block", pick(BLOCKS, UNET, 0.75, BASE=0)),
    "WRAP08": ("B in the 4 outermost blocks at each end (IN00-IN03, OUT08-OUT11)", pick(BLOCKS, _ends(4), BASE=0)),
    "WRAP12": ("B in the 6 outermost blocks at each end (IN00-IN05, OUT06-OUT11)", pick(BLOCKS, _ends(6), BASE=0)),
    "WRAP14": ("B in the 7 outermost blocks at each end (IN00-IN06, OUT05-OUT11)", pick(BLOCKS, _ends(7), BASE=0)),
    "WRAP16": ("B in the 8 outermost blocks at each end (IN00-IN07, OUT04-OUT11)", pick(BLOCKS, _ends(8), BASE=0)),
    "MID12_50": ("50 % B in the deep blocks IN05-OUT05, A elsewhere",
                 pick(BLOCKS, UNET[5:19], 0.5, BASE=0)),
    "OUT07": ("B in the last 7 output blocks (OUT05-OUT11)", pick(BLOCKS, OUT[5:], BASE=0)),
    "OUT12": ("B in all 12 output blocks", pick(BLOCKS, OUT, BASE=0)),
    "OUT12_5": ("B in all output blocks and 50 % B in the middle block", {**pick(BLOCKS, OUT, BASE=0), "M00": 0.5}),
    "RING08_SOFT": ("B in rings IN06-IN08 and OUT03-OUT05, 50 % on their edges",
                    {**pick(BLOCKS, IN[6:9] + OUT[3:6], BASE=0),
                     "IN05": 0.5, "IN09": 0.5, "OUT02": 0.5, "OUT06": 0.5}),
    "RING08_5": ("B in rings IN06-IN09 and OUT02-OUT05", pick(BLOCKS, IN[6:10] + OUT[2:6], BASE=0)),
    "RING10_5": ("B in rings IN05-IN09 and OUT02-OUT06", pick(BLOCKS, IN[5:10] + OUT[2:7], BASE=0)),
    "RING10_3": ("B in rings IN06-IN10 and OUT01-OUT05", pick(BLOCKS, IN[6:11] + OUT[1:6], BASE=0)),
    "SMOOTHSTEP": ("A to B along the UNet on a smoothstep curve", curve(UNET, smoothstep, BASE=0)),
    "REVERSE-SMOOTHSTEP": ("B to A along the UNet on a smoothstep curve",
                           curve(UNET, lambda x: 1 - smoothstep(x), BASE=0)),
    "SMOOTHSTEP*2": ("smoothstep doubled and folded: A at both ends, B at the middle block",
                     curve(UNET, lambda x: fold(2 * smoothstep(x)), BASE=0)),
    "R_SMOOTHSTEP*2": ("the reverse of SMOOTHSTEP*2: B at both ends, A at the middle block",
                       curve(UNET, lambda x: 1 - fold(2 * smoothstep(x)), BASE=0)),
    "SMOOTHSTEP*3": ("smoothstep tripled and folded: A-B-A-B along the UNet",
                     curve(UNET, lambda x: fold(3 * smoothstep(x)), BASE=0)),
    "R_SMOOTHSTEP*3": ("the reverse of SMOOTHSTEP*3", curve(UNET, lambda x: 1 - fold(3 * smoothstep(x)), BASE=0)),
    "SMOOTHSTEP*4": ("smoothstep quadrupled and folded: two A-B-A waves along the UNet",
                     curve(UNET, lambda x: fold(4 * smoothstep(x)), BASE=0)),
    "R_SMOOTHSTEP*4": ("the reverse of SMOOTHSTEP*4", curve(UNET, lambda x: 1 - fold(4 * smoothstep(x)), BASE=0)),
    "SMOOTHSTEP/2": ("one smoothstep up to the middle block and back down",
                     curve(UNET, lambda x: smoothstep(fold(2 * x)), BASE=0)),
    "R_SMOOTHSTEP/2": ("the reverse of SMOOTHSTEP/2", curve(UNET, lambda x: 1 - smoothstep(fold(2 * x)), BASE=0)),
    "SMOOTHSTEP/3": ("three smoothstep half-waves along the UNet",
                     curve(UNET, lambda x: smoothstep(fold(3 * x)), BASE=0)),
    "R_SMOOTHSTEP/3": ("the reverse of SMOOTHSTEP/3", curve(UNET, lambda x: 1 - smoothstep(fold(3 * x)), BASE=0)),
    "SMOOTHSTEP/4": ("four smoothstep half-waves along the UNet",
                     curve(UNET, lambda x: smoothstep(fold(4 * x)), BASE=0)),
    "R_SMOOTHSTEP/4": ("the reverse of SMOOTHSTEP/4", curve(UNET, lambda x: 1 - smoothstep(fold(4 * x)), BASE=0)),
    "COSINE": ("B to A along the UNet on a half cosine", curve(UNET, cosine, BASE=0)),
    "REVERSE_COSINE": ("A to B along the UNet on a half cosine", curve(UNET, lambda x: 1 - cosine(x), BASE=0)),
    "TRUE_CUBIC_HERMITE": ("a cubic Hermite spline from A through a 60 % B plateau to B",
                           _listed(_TRUE_HERMITE)),
    "TRUE_REVERSE_CUBIC_HERMITE": ("the reverse of TRUE_CUBIC_HERMITE", _listed(_TRUE_HERMITE, reverse=True)),
    "FAKE_CUBIC_HERMITE": ("a single cubic from A through a 50-57 % B plateau to B",
                           curve(UNET, _fake_hermite, BASE=0)),
    "FAKE_REVERSE_CUBIC_HERMITE": ("the reverse of FAKE_CUBIC_HERMITE",
                                   curve(UNET, lambda x: 1 - _fake_hermite(x), BASE=0)),
    "ALL_A": ("model A everywhere", pick(BLOCKS, (), BASE=0)),
    "ALL_B": ("model B everywhere, text encoder and VAE included", pick(BLOCKS, BLOCKS)),
}

# SD2 has the SD1 block structure: the same figures apply. The SDXL refiner's 4-level UNet has
# the same 25 UNet blocks plus a VAE block, kept at A except in ALL_B.
SD2_PRESETS = PRESETS
REFINER_PRESETS = {name: (description, {**values, "VAE": values["BASE"]}) for name, (description, values)
                   in PRESETS.items()}
