"""ΔW of every algorithm against the ``lycoris-lora`` package, on files that package writes.

For each configuration a tiny model (Linear, 3×3 Conv2d, 1×1 Conv2d, LayerNorm) is wrapped by
``lycoris.create_lycoris``, every LoRA parameter is randomised, the network is saved with its
own ``save_weights``, and the file is read back with safetensors. Our ΔW for each module
(computed from the file's tensors and the module's original weight) must equal the change LyCORIS
makes to the layer at multiplier 1.

That change is read from the wrapped layer's forward pass (one-hot probes: a Linear's output
for the identity is Wᵀ + b; a conv's centre output for a one-hot kernel-sized input is one
column of W), because in lycoris-lora 4.1.3 ``get_diff_weight``/``get_merged_weight`` of LoHa
and LoKr apply alpha/rank twice while the forward pass (training and inference) applies it once;
the forward pass is what a trained file means. Norm modules are read with ``get_merged_weight``.
"""
from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import load_file

from lib_mecha.lora.modules import detect_algorithm

lycoris = pytest.importorskip("lycoris", reason="lycoris-lora (test-only dependency) is not installed")
logging.getLogger("lycoris").setLevel(logging.ERROR)


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(32, 64)
        self.conv = torch.nn.Conv2d(16, 32, 3, padding=1)
        self.pw = torch.nn.Conv2d(32, 16, 1)
        self.ln = torch.nn.LayerNorm(64)

    def forward(self, x):
        return x


# (id, create_lycoris keyword arguments); dims are chosen so each LoKr variant really appears
CONFIGS = [
    ("lora", dict(algo="lora", linear_dim=4, linear_alpha=2)),
    ("lora-noalpha-scale1", dict(algo="lora", linear_dim=4, linear_alpha=4)),
    ("lora-tucker", dict(algo="lora", linear_dim=4, linear_alpha=3, use_tucker=True)),
    ("dora-out", dict(algo="lora", linear_dim=4, linear_alpha=2, dora_wd=True, wd_on_output=True)),
    ("dora-in", dict(algo="lora", linear_dim=4, linear_alpha=2, dora_wd=True, wd_on_output=False)),
    ("loha", dict(algo="loha", linear_dim=4, linear_alpha=2)),
    ("loha-tucker", dict(algo="loha", linear_dim=4, linear_alpha=2, use_tucker=True)),
    ("loha-dora", dict(algo="loha", linear_dim=4, linear_alpha=2, dora_wd=True)),
    ("lokr-factorised", dict(algo="lokr", linear_dim=2, linear_alpha=1, factor=4)),
    ("lokr-both", dict(algo="lokr", linear_dim=1, linear_alpha=1, factor=8, decompose_both=True)),
    ("lokr-full", dict(algo="lokr", linear_dim=64, linear_alpha=64, full_matrix=True)),
    ("lokr-tucker", dict(algo="lokr", linear_dim=2, linear_alpha=1, factor=4, use_tucker=True)),
    ("lokr-dora", dict(algo="lokr", linear_dim=2, linear_alpha=1, factor=4, dora_wd=True)),
    ("ia3", dict(algo="ia3")),
    ("ia3-input", dict(algo="ia3", train_on_input=True)),
    ("glora", dict(algo="glora", linear_dim=4, linear_alpha=2)),
    ("oft", dict(algo="diag-oft", linear_dim=4)),
    ("oft-constrained", dict(algo="diag-oft", linear_dim=4, constraint=1e-3)),
    ("oft-rescaled", dict(algo="diag-oft", linear_dim=4, rescaled=True)),
    ("boft", dict(algo="boft", linear_dim=2)),
    ("boft-rescaled", dict(algo="boft", linear_dim=2, rescaled=True)),
    ("full", dict(algo="full")),
    ("norm", dict(algo="lora", linear_dim=4, linear_alpha=2, train_norm=True)),
]


def _make(kwargs, tmp_path, seed):
    torch.manual_seed(seed)
    model = Tiny()
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    net = lycoris.create_lycoris(model, 1.0, preset="full", **kwargs)
    net.apply_to()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("rescale"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (0.05 if "oft" in name else 0.3))
    path = tmp_path / "lyco.safetensors"
    net.save_weights(str(path), torch.float32, {})
    return model, net, path, original


def _probe(layer):
    """Inputs whose outputs expose the weight: (x, output index) for a Linear or a Conv2d."""
    if isinstance(layer, torch.nn.Linear):
        return torch.eye(layer.in_features), lambda y: y
    kh, kw = layer.kernel_size
    n = layer.in_channels * kh * kw
    x = torch.eye(n).reshape(n, layer.in_channels, kh, kw)
    ph, pw = layer.padding
    return x, lambda y: y[:, :, ph, pw]


def _original_forward(layer, weight, bias):
    if isinstance(layer, torch.nn.Linear):
        return lambda x: torch.nn.functional.linear(x, weight, bias)
    return lambda x: torch.nn.functional.conv2d(x, weight, bias, layer.stride, layer.padding)


def _expected(lora, model_layer, weight, bias):
    """(ΔW, Δbias) of the wrapped layer at multiplier 1; ``weight``/``bias`` are the originals."""
    if isinstance(model_layer, torch.nn.LayerNorm):
        weight, bias = lora.get_merged_weight(multiplier=1.0)
        org = lora.org_module[0]
        d_b = None if bias is None else (bias - org.bias).detach()
        return (weight - org.weight).detach(), d_b
    x, pick = _probe(model_layer)
    old = _original_forward(model_layer, weight, bias)
    with torch.no_grad():
        new = pick(lora.forward(x)) - pick(old(x))
        zero = torch.zeros_like(x[:1])
        d_b = (pick(lora.forward(zero)) - pick(old(zero)))[0]
    d_w = (new - d_b).T.reshape(lora.shape if hasattr(lora, "shape") else model_layer.weight.shape)
    return d_w, d_b


def _modules(state):
    out = {}
    for key, value in state.items():
        module, _, name = key.partition(".")
        out.setdefault(module, {})[name] = value
    return out


@pytest.mark.parametrize("ident,kwargs", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_delta_matches_lycoris(ident, kwargs, tmp_path):
    model, net, path, original = _make(kwargs, tmp_path, seed=len(ident))
    by_module = _modules(load_file(str(path)))
    assert by_module, f"{ident}: lycoris saved nothing"
    checked = 0
    for lora in net.loras:
        tensors = by_module.pop(lora.lora_name)
        layer_name = lora.lora_name[len("lycoris_"):]
        layer = getattr(model, layer_name)
        base = original[layer_name + ".weight"]
        algo = detect_algorithm(lora.lora_name, tensors, where="test")
        expected_w, expected_b = _expected(lora, layer, base, original.get(layer_name + ".bias"))
        with torch.no_grad():
            got = algo.delta(tensors, base, tuple(base.shape))
        assert got.shape == base.shape
        scale = expected_w.abs().max().item() + 1e-6
        assert scale > 1e-4, f"{ident}/{lora.lora_name}: lycoris made no change; the test would prove nothing"
        where = f"{ident}/{lora.lora_name} ({algo.name})"
        torch.testing.assert_close(got, expected_w.reshape(base.shape), rtol=2e-4, atol=2e-5 * scale,
                                   msg=lambda m, where=where: f"{where}: {m}")
        got_b = algo.bias_delta(tensors) if algo.bias_delta else None
        if got_b is None:
            torch.testing.assert_close(expected_b, torch.zeros_like(expected_b), rtol=0, atol=1e-5)
        else:
            torch.testing.assert_close(got_b, expected_b, rtol=1e-4, atol=1e-5)
        checked += 1
    assert not by_module, f"{ident}: modules in the file that lycoris did not create: {sorted(by_module)}"
    assert checked >= 2


def test_lokr_variants_really_differ(tmp_path):
    """The LoKr configurations above must produce the file layouts they are named after."""
    layouts = {}
    for ident, kwargs in CONFIGS:
        if not ident.startswith("lokr"):
            continue
        _, net, path, _ = _make(kwargs, tmp_path, seed=1)
        keys = {k.partition(".")[2] for k in load_file(str(path))}
        layouts[ident] = keys
    assert "lokr_w2_a" in layouts["lokr-factorised"] and "lokr_w1" in layouts["lokr-factorised"]
    assert "lokr_w1_a" in layouts["lokr-both"]
    assert "lokr_w2" in layouts["lokr-full"] and "lokr_w1" in layouts["lokr-full"]
    assert "lokr_t2" in layouts["lokr-tucker"]
