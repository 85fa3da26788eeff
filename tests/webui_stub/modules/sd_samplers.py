"""modules/sd_samplers.py, the part an extension's sampler list reads (A1111 1.10, the same in
Forge 2.x): ``all_samplers`` holds every sampler's data (k-diffusion's, then the timestep ones,
then LCM); ``visible_sampler_names()`` returns their names minus those the user hid in the
settings (``opts.hide_samplers``, read when ``set_samplers()`` runs)."""
from collections import namedtuple

from modules import shared

SamplerData = namedtuple("SamplerData", ["name", "constructor", "aliases", "options"])

# a few of the real names, in the host's order (sd_samplers_kdiffusion, sd_samplers_timesteps, sd_samplers_lcm)
all_samplers = [SamplerData(name, None, [], {}) for name in
                ("DPM++ 2M", "DPM++ SDE", "Euler a", "Euler", "Heun", "DDIM", "PLMS", "UniPC", "LCM")]
all_samplers_map = {x.name: x for x in all_samplers}
samplers = []
samplers_hidden = set()


def set_samplers():
    global samplers, samplers_hidden
    samplers_hidden = set(shared.opts.data.get("hide_samplers", []))
    samplers = all_samplers


def visible_sampler_names():
    return [x.name for x in samplers if x.name not in samplers_hidden]


set_samplers()
