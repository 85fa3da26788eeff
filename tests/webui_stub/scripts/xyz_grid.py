"""scripts/xyz_grid.py: the X/Y/Z plot, as A1111 1.10 and Forge 2 run it (both files read at
AUTOMATIC1111/stable-diffusion-webui v1.10.1 and lllyasviel/stable-diffusion-webui-forge dfdcbab6;
the behaviour below is the same in both). Written for the stand-in, not copied:

* ``AxisOption(label, type, apply, format_value=, confirm=, cost=, choices=, prepare=)`` and the
  module-level list ``axis_options``, which ``Script.ui`` filters once, when the UI is built
  (``AxisOptionImg2Img`` entries only for img2img, ``AxisOptionTxt2Img`` only for txt2img);
* each axis's values (``process_axis``): ``[0]`` for "Nothing"; the dropdown's list when the axis
  has ``choices`` and text mode is off; else ``prepare(text)`` when the axis has one; else the text
  split at commas (csv, quotes respected, blanks stripped). For int and float axes each value may
  be a range: ``a-b`` (step 1), ``a-b (+s)`` (step s, end included), ``a-b [n]`` (n values);
  every value is converted with ``type``, then ``confirm(p, values)`` runs, all before any cell;
* the axis with the strictly highest ``cost`` runs outermost, then the costlier of the other two;
  with no strict winner Z is outermost and X innermost;
* before the cells, the three axes and their values are put in ``shared.state.xyz_plot_x/y/z``
  as ``AxisInfo(axis, values)``;
* "Checkpoint name" sets ``p.override_settings["sd_model_checkpoint"]``, which the cell's
  ``process_images`` loads (A1111 ``apply_checkpoint``; Forge also refreshes its loading parameters);
* a cell copies ``p`` (``copy.copy``: a shallow copy), calls ``apply(copy, value, values)`` for
  X, Y then Z, and generates the copy with ``process_images``; an error there is reported and the
  cell left empty, an error in ``apply`` ends the grid;
* after the cells (also after an error), ``SharedSettingsStackHelper.__exit__`` calls
  ``sd_models.reload_model_weights()``;
* the result's first image is the grid; the cells' images follow when "Include Sub Images" is on.
"""
import csv
import io
from collections import namedtuple
from copy import copy

from PIL import Image

from modules import processing, scripts, sd_models, shared
from modules.scripts import Control

cells_run = []        # (ix, iy, iz) in the order the cells ran, for the tests
AxisInfo = namedtuple("AxisInfo", ["axis", "values"])


def apply_field(field):
    def apply(p, x, xs):
        setattr(p, field, x)
    return apply


def do_nothing(p, x, xs):
    pass


def apply_checkpoint(p, x, xs):
    info = sd_models.get_closet_checkpoint_match(x)
    if info is None:
        raise RuntimeError(f"Unknown checkpoint: {x}")
    p.override_settings["sd_model_checkpoint"] = info.name


def format_value_add_label(p, opt, x):
    return f"{opt.label}: {x}"


class AxisOption:
    def __init__(self, label, type, apply, format_value=format_value_add_label, confirm=None, cost=0.0,
                 choices=None, prepare=None):
        self.label = label
        self.type = type
        self.apply = apply
        self.format_value = format_value
        self.confirm = confirm
        self.cost = cost
        self.choices = choices
        self.prepare = prepare


class AxisOptionImg2Img(AxisOption):
    is_img2img = True


class AxisOptionTxt2Img(AxisOption):
    is_img2img = False


axis_options = [
    AxisOption("Nothing", str, do_nothing, format_value=lambda p, opt, x: ""),
    AxisOption("Seed", int, apply_field("seed")),
    AxisOption("Steps", int, apply_field("steps")),
    AxisOption("CFG Scale", float, apply_field("cfg_scale")),
    AxisOption("Checkpoint name", str, apply_checkpoint, cost=1.0),
]


def split_csv(text):
    return [v.strip() for row in csv.reader(io.StringIO(text or ""), skipinitialspace=True) for v in row]


def _range(text, number):
    """``a-b``, ``a-b (+s)``, ``a-b [n]`` → values; None when ``text`` is no range."""
    import re
    num = r"[+-]?\s*\d+(?:\.\d*)?"
    m = re.fullmatch(rf"\s*({num})\s*-\s*({num})\s*(?:\(([+-]\d+(?:\.\d*)?)\s*\)|\[(\d+)\s*\])?\s*", text)
    if m is None:
        return None
    start, end = number(m[1].replace(" ", "")), number(m[2].replace(" ", ""))
    if m[4] is not None:
        n = int(m[4])
        return [number(start + (end - start) * i / (n - 1)) for i in range(n)] if n > 1 else [start]
    step = number(m[3]) if m[3] is not None else 1
    out, v = [], start
    while (v <= end + 1e-9) if step > 0 else (v >= end - 1e-9):
        out.append(number(v))
        v += step
    return out


def axis_values(p, opt, text, dropdown, csv_mode):
    if opt.label == "Nothing":
        return [0]
    if opt.choices is not None and not csv_mode:
        values = list(dropdown or [])
    elif opt.prepare is not None:
        values = opt.prepare(text)
    else:
        values = split_csv(text)
    if opt.type in (int, float):
        expanded = []
        for v in values:
            if str(v).strip() == "":
                continue
            r = _range(str(v), opt.type)
            expanded.extend(r if r is not None else [v])
        values = expanded
    values = [opt.type(v) for v in values]
    if opt.confirm:
        opt.confirm(p, values)
    return values


def loop_order(x_opt, y_opt, z_opt):
    """Outermost first: the strictly costliest axis, then the costlier of the two others."""
    c = {"x": x_opt.cost, "y": y_opt.cost, "z": z_opt.cost}
    for first, (a, b) in (("x", ("y", "z")), ("y", ("x", "z")), ("z", ("x", "y"))):
        if c[first] > c[a] and c[first] > c[b]:
            second = a if c[a] > c[b] else b
            return first, second, ({"x", "y", "z"} - {first, second}).pop()
    return "z", "y", "x"


class SharedSettingsStackHelper:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        sd_models.reload_model_weights()


class Script(scripts.Script):
    def title(self):
        return "X/Y/Z plot"

    def ui(self, is_img2img):
        self.current_axis_options = [o for o in axis_options
                                     if type(o) is AxisOption or o.is_img2img == is_img2img]
        labels = [o.label for o in self.current_axis_options]
        controls = []
        for axis, default in (("X", labels[1]), ("Y", labels[0]), ("Z", labels[0])):
            controls += [Control(f"{axis} type", default, labels), Control(f"{axis} values", ""),
                         Control(f"{axis} values", [], [])]
        controls += [Control("Draw legend", True), Control("Include Sub Images", False),
                     Control("Include Sub Grids", False), Control("Keep -1 for seeds", False),
                     Control("Vary seeds for X", False), Control("Vary seeds for Y", False),
                     Control("Vary seeds for Z", False), Control("Grid margins (px)", 0),
                     Control("Use text inputs instead of dropdowns", False)]
        return controls

    def run(self, p, x_type, x_values, x_values_dropdown, y_type, y_values, y_values_dropdown, z_type, z_values,
            z_values_dropdown, draw_legend, include_lone_images, include_sub_grids, no_fixed_seeds, vary_seeds_x,
            vary_seeds_y, vary_seeds_z, margin_size, csv_mode):
        if not no_fixed_seeds:
            processing.fix_seed(p)
        opts = [self.current_axis_options[t or 0] for t in (x_type, y_type, z_type)]
        values = [axis_values(p, o, text, drop, csv_mode)
                  for o, text, drop in zip(opts, (x_values, y_values, z_values),
                                           (x_values_dropdown, y_values_dropdown, z_values_dropdown))]
        axes = dict(zip("xyz", zip(opts, values)))
        shared.state.xyz_plot_x, shared.state.xyz_plot_y, shared.state.xyz_plot_z = (
            AxisInfo(o, v) for o, v in zip(opts, values))
        outer, middle, inner = loop_order(*opts)
        cells = {}

        def cell(index):
            if shared.state.interrupted:
                return
            pc = copy(p)
            pc.styles = list(pc.styles or [])
            for name in "xyz":
                opt, vals = axes[name]
                opt.apply(pc, vals[index[name]], vals)
            cells_run.append((index["x"], index["y"], index["z"]))
            try:
                cells[index["x"], index["y"], index["z"]] = processing.process_images(pc)
            except Exception as exc:       # errors.display(e, "generating image for xyz plot")
                scripts.errors_reported.append(("xyz cell", exc))

        with SharedSettingsStackHelper():
            for i in range(len(axes[outer][1])):
                for j in range(len(axes[middle][1])):
                    for k in range(len(axes[inner][1])):
                        cell({outer: i, middle: j, inner: k})
        order = [(ix, iy, iz) for iz in range(len(values[2])) for iy in range(len(values[1]))
                 for ix in range(len(values[0]))]
        images = [cells[i].images[0] if i in cells else Image.new("RGB", (p.width, p.height)) for i in order]
        infotexts = [cells[i].infotexts[0] if i in cells else "" for i in order]
        grid = Image.new("RGB", (p.width * len(values[0]), p.height * len(values[1]) * len(values[2])))
        for n, img in enumerate(images):
            grid.paste(img, ((n % len(values[0])) * p.width, (n // len(values[0])) * p.height))
        result = processing.Processed(p, [grid] + (images if include_lone_images else []),
                                      [infotexts[0]] + (infotexts if include_lone_images else []))
        return result
