"""modules/processing.py, the parts previews rely on:

* ``process_images`` makes sure of the model first: A1111 calls ``sd_models.reload_model_weights()``
  (so it reloads whatever ``opts.sd_model_checkpoint`` resolves to), Forge calls
  ``forge_model_reload()`` (forge processing.py:801-812); both again per batch;
* conds are cached in class attributes keyed with ``shared.sd_model.sd_checkpoint_info``
  (forge processing.py:431), so an in-place weight swap reuses stale conds unless cleared;
* every script hook is guarded by ``if p.scripts is not None``: always-visible scripts'
  ``before_process`` runs first, before the model check, and ``process`` after it (forge
  processing.py:815-907);
* ``extra_generation_params`` become ``Key: value`` pairs of the infotext (quoted when needed);
* ``state.interrupted`` stops before the next image.
"""
import random
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from modules import _flavour, _net, infotext_utils, shared

need_global_unload = False


@dataclass(repr=False)
class StableDiffusionProcessing:
    prompt: str = ""
    negative_prompt: str = ""
    styles: List[str] = None
    seed: int = -1
    subseed: int = -1
    sampler_name: str = None
    scheduler: str = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    outpath_samples: str = None
    outpath_grids: str = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    override_settings: Dict[str, Any] = None
    override_settings_restore_afterwards: bool = True
    disable_extra_networks: bool = False
    extra_generation_params: Dict[str, Any] = None

    cached_c = [None, None, None]
    cached_uc = [None, None, None]

    def __post_init__(self):
        self.extra_generation_params = dict(self.extra_generation_params or {})
        self.override_settings = dict(self.override_settings or {})
        self.scripts = None
        self.script_args = None
        self.closed = False

    def close(self):
        self.closed = True

    def clear_prompt_cache(self):
        StableDiffusionProcessing.cached_c = [None, None, None]
        StableDiffusionProcessing.cached_uc = [None, None, None]


@dataclass(repr=False)
class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    enable_hr: bool = False
    refiner_checkpoint: Optional[str] = None
    hr_checkpoint_name: Optional[str] = None


class Processed:
    def __init__(self, p, images, infotexts=None):
        self.images = images
        self.infotexts = list(infotexts or [])
        self.info = self.infotexts[0] if self.infotexts else ""
        self.seed = p.seed
        self.prompt = p.prompt
        self.width, self.height = p.width, p.height

    def js(self):
        """The ``info`` field of the API's answer (modules/processing.py ``Processed.js``)."""
        import json
        return json.dumps({"seed": self.seed, "infotexts": self.infotexts})


def fix_seed(p):
    if p.seed is None or int(p.seed) == -1:
        p.seed = random.randrange(4294967294)


def _ensure_model():
    from modules import sd_models
    if _flavour.is_forge():
        return sd_models.forge_model_reload()[0]
    sd_models.reload_model_weights()
    return shared.sd_model


def _cond(model, prompt):
    key = (prompt, model.sd_checkpoint_info)
    cache = StableDiffusionProcessing.cached_c
    if cache[0] is not None and cache[0] == key:
        return cache[1]
    if _flavour.is_forge():
        cond = model.get_learned_conditioning([prompt])
    else:
        text_encoder = [p for k, p in model.named_parameters() if k.startswith("cond_stage_model.")]
        cond = _net.fingerprint(*text_encoder, [prompt])
    StableDiffusionProcessing.cached_c = [key, cond, None]
    return cond


def _weights(model):
    if _flavour.is_forge():
        fo = model.forge_objects
        return [*fo.unet.model.diffusion_model.parameters(), *fo.vae.first_stage_model.parameters()]
    return [p for k, p in model.named_parameters() if not k.startswith("cond_stage_model.")]


def create_infotext(p, seed):
    generation_params = {"Steps": p.steps, "Sampler": p.sampler_name, "CFG scale": p.cfg_scale, "Seed": seed,
                         "Size": f"{p.width}x{p.height}", "Model hash": p.sd_model_hash, "Model": p.sd_model_name,
                         **p.extra_generation_params}
    line = ", ".join(f"{k}: {infotext_utils.quote(v)}" for k, v in generation_params.items() if v is not None)
    return f"{p.prompt}\nNegative prompt: {p.negative_prompt}\n{line}"


def process_images(p):
    if p.scripts is not None:
        p.scripts.before_process(p)
    model = _ensure_model()
    p.sd_model_name = model.sd_checkpoint_info.name_for_extra
    p.sd_model_hash = model.sd_model_hash
    fix_seed(p)
    if p.scripts is not None:
        p.scripts.process(p)
    images, infotexts = [], []
    for i in range(p.batch_size * p.n_iter):
        if shared.state.interrupted:
            break
        model = _ensure_model()  # "model can be changed for example by refiner"
        seed = int(p.seed) + i
        value = _net.fingerprint(*_weights(model), _cond(model, p.prompt), seed, p.steps, p.cfg_scale)
        images.append(_net.render(p.width, p.height, value))
        infotexts.append(create_infotext(p, seed))
    return Processed(p, images, infotexts)
