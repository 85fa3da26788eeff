"""Hand-computed ΔW for the cases LyCORIS does not write, and clear errors for bad modules."""
from __future__ import annotations

import pytest
import torch

from lib_mecha.errors import SafetensorsError
from lib_mecha.lora import algorithms
from lib_mecha.lora.modules import detect_algorithm

A = algorithms.ALGORITHMS


def test_lora_alpha_over_rank():
    up, down = torch.randn(6, 2), torch.randn(2, 5)
    t = {"lora_up.weight": up, "lora_down.weight": down, "alpha": torch.tensor(1.0)}
    torch.testing.assert_close(A["lora"].delta(t, None, (6, 5)), up @ down * 0.5)


def test_lora_without_alpha_has_scale_one_and_scale_key_wins():
    up, down = torch.randn(6, 2), torch.randn(2, 5)
    t = {"lora_up.weight": up, "lora_down.weight": down}
    torch.testing.assert_close(A["lora"].delta(t, None, (6, 5)), up @ down)
    t["alpha"], t["scale"] = torch.tensor(1.0), torch.tensor(3.0)
    torch.testing.assert_close(A["lora"].delta(t, None, (6, 5)), up @ down * 3)


def test_lora_alpha_zero_gives_zero_like_the_webui():
    t = {"lora_up.weight": torch.randn(6, 2), "lora_down.weight": torch.randn(2, 5), "alpha": torch.tensor(0.0)}
    assert A["lora"].delta(t, None, (6, 5)).abs().max() == 0


def test_linear_lora_on_1x1_conv_and_conv_lora_shapes():
    up, down = torch.randn(8, 2, 1, 1), torch.randn(2, 4, 3, 3)
    t = {"lora_up.weight": up, "lora_down.weight": down}
    got = A["lora"].delta(t, None, (8, 4, 3, 3))
    expected = torch.einsum("or,rikl->oikl", up[:, :, 0, 0], down)
    torch.testing.assert_close(got, expected)
    t2 = {"lora_up.weight": torch.randn(8, 2), "lora_down.weight": torch.randn(2, 4)}
    assert A["lora"].delta(t2, None, (8, 4, 1, 1)).shape == (8, 4, 1, 1)


def test_inpainting_conv_in_is_zero_padded():
    t = {"lora_up.weight": torch.randn(8, 2, 1, 1), "lora_down.weight": torch.randn(2, 4, 3, 3)}
    got = A["lora"].delta(t, None, (8, 9, 3, 3))
    assert got.shape == (8, 9, 3, 3) and got[:, 4:].abs().max() == 0 and got[:, :4].abs().max() > 0


def test_peft_lora_bias():
    t = {"lora_up.weight": torch.randn(6, 2), "lora_down.weight": torch.randn(2, 5),
         "lora_up.bias": torch.randn(6), "alpha": torch.tensor(4.0)}
    torch.testing.assert_close(A["lora"].bias_delta(t), t["lora_up.bias"] * 2)


def test_dora_per_input_column_as_in_kohya():
    w = torch.randn(6, 5)
    up, down = torch.randn(6, 2), torch.randn(2, 5)
    m = torch.rand(1, 5) + 0.5
    t = {"lora_up.weight": up, "lora_down.weight": down, "dora_scale": m}
    merged = w + up @ down
    expected = merged * (m / merged.norm(dim=0, keepdim=True)) - w
    torch.testing.assert_close(A["lora"].delta(t, w, (6, 5)), expected)


def test_dora_per_output_row_vector_as_in_peft():
    w = torch.randn(6, 5)
    up, down = torch.randn(6, 2), torch.randn(2, 5)
    m = torch.rand(6) + 0.5
    t = {"lora_up.weight": up, "lora_down.weight": down, "dora_scale": m}
    merged = w + up @ down
    expected = merged * (m[:, None] / merged.norm(dim=1, keepdim=True)) - w
    torch.testing.assert_close(A["lora"].delta(t, w, (6, 5)), expected)


def test_glora_older_layout_the_webui_reads():
    w = torch.randn(6, 5)
    r = 2
    a1, a2 = torch.randn(r, 5), torch.randn(5, r)   # old: W @ a2 @ a1
    b1, b2 = torch.randn(r, 5), torch.randn(6, r)   # old: b2 @ b1
    t = {"a1.weight": a1, "a2.weight": a2, "b1.weight": b1, "b2.weight": b2, "alpha": torch.tensor(1.0)}
    expected = (w @ a2 @ a1 + b2 @ b1) * 0.5
    torch.testing.assert_close(A["glora"].delta(t, w, (6, 5)), expected)


def test_ia3_scales_rows():
    w = torch.randn(4, 3)
    t = {"weight": torch.tensor([1.0, 2.0, 0.0, -1.0]), "on_input": torch.tensor(0)}
    torch.testing.assert_close(A["ia3"].delta(t, w, (4, 3)), w * t["weight"][:, None])


def test_oft_with_zero_blocks_changes_nothing_and_constraint_limits():
    w = torch.randn(8, 3)
    t = {"oft_blocks": torch.zeros(2, 4, 4), "alpha": torch.tensor(0.0)}
    assert A["oft"].delta(t, w, (8, 3)).abs().max() == 0
    blocks = torch.randn(2, 4, 4)
    free = A["oft"].delta({"oft_blocks": blocks, "alpha": torch.tensor(0.0)}, w, (8, 3))
    tight = A["oft"].delta({"oft_blocks": blocks, "alpha": torch.tensor(1e-4)}, w, (8, 3))
    assert tight.norm() < 0.01 * free.norm()
    # a rotation keeps every column's norm within each block
    rotated = w + free
    torch.testing.assert_close(rotated[:4].norm(dim=0), w[:4].norm(dim=0))


def test_full_and_norm_diffs():
    d, db = torch.randn(4, 3), torch.randn(4)
    t = {"diff": d, "diff_b": db}
    torch.testing.assert_close(A["full"].delta(t, None, (4, 3)), d)
    torch.testing.assert_close(A["full"].bias_delta(t), db)
    t = {"w_norm": torch.randn(7), "b_norm": torch.randn(7)}
    torch.testing.assert_close(A["norm"].delta(t, None, (7,)), t["w_norm"])
    torch.testing.assert_close(A["norm"].bias_delta(t), t["b_norm"])


def test_half_precision_inputs_are_computed_in_float32():
    up, down = torch.randn(6, 2).half(), torch.randn(2, 5).half()
    got = A["lora"].delta({"lora_up.weight": up, "lora_down.weight": down}, None, (6, 5))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, up.float() @ down.float())


# --- bad input ---------------------------------------------------------------------------

def _err(tensors, module="lora_unet_mid_block_attentions_0_proj_in"):
    with pytest.raises(SafetensorsError) as info:
        detect_algorithm(module, tensors, where="bad.safetensors")
    text = str(info.value)
    assert "bad.safetensors" in text and module in text
    return text


def test_ranks_disagree_names_the_module():
    text = _err({"lora_up.weight": (6, 4), "lora_down.weight": (2, 5)})
    assert "up/down ranks disagree" in text and "[6, 4]" in text and "[2, 5]" in text


def test_alpha_not_a_number():
    assert "alpha is not a number" in _err({"lora_up.weight": (6, 2), "lora_down.weight": (2, 5),
                                             "alpha": torch.tensor(float("nan"))})
    assert "alpha is not a number" in _err({"lora_up.weight": (6, 2), "lora_down.weight": (2, 5),
                                             "alpha": torch.zeros(3)})
    assert "alpha is not a number" in _err({"lora_up.weight": (6, 2), "lora_down.weight": (2, 5),
                                             "alpha": torch.tensor(True)})


def test_two_algorithms_in_one_module():
    text = _err({"lora_up.weight": (6, 2), "lora_down.weight": (2, 5), "hada_w1_a": (6, 2),
                 "hada_w1_b": (2, 5), "hada_w2_a": (6, 2), "hada_w2_b": (2, 5)})
    assert "LoRA / LoCon and LoHa" in text


def test_missing_factor_and_unknown_tensors():
    assert "missing lora_up.weight" in _err({"lora_down.weight": (2, 5)})
    assert "no known algorithm" in _err({"something": (2, 5)})
    assert "lokr_w1_a and lokr_w1_b ranks disagree" in _err(
        {"lokr_w1_a": (2, 3), "lokr_w1_b": (4, 2), "lokr_w2": (3, 3)})


def test_good_modules_detect():
    lora = {"lora_up.weight": (6, 2), "lora_down.weight": (2, 5), "alpha": ()}
    assert detect_algorithm("m", lora, "f").name == "lora"
    assert detect_algorithm("m", {"oft_blocks": (2, 4, 4)}, "f").name == "oft"
    assert detect_algorithm("m", {"weight": (4,), "on_input": ()}, "f").name == "ia3"
    assert detect_algorithm("m", {"diff": (4, 3), "diff_b": (4,)}, "f").name == "full"
