"""add_cosine_a / add_cosine_b: hand-computed similarities."""
import math

import torch

from method_calls import raw

T = torch.tensor


def test_cosine_a_keeps_a_where_columns_agree_and_takes_b_where_they_do_not():
    a = T([[1.0, 1.0], [0.0, 1.0]])
    b = T([[2.0, -1.0], [0.0, 1.0]])  # column 0 parallel (s = 1), column 1 orthogonal (s = 0)
    result = raw("add_cosine_a", a, b, alpha=0.0)
    assert torch.allclose(result[:, 0], a[:, 0])
    assert torch.allclose(result[:, 1], b[:, 1])


def test_cosine_a_alpha_one_gives_b():
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    assert torch.allclose(raw("add_cosine_a", a, b, alpha=1.0), b)


def test_cosine_a_partial_similarity():
    a, b = T([1.0, 0.0]), T([1.0, 1.0])
    s = 1 / math.sqrt(2)
    k = 1 - (s - 0.5)
    assert torch.allclose(raw("add_cosine_a", a, b, alpha=0.5), a + k * (b - a), atol=1e-6)


def test_cosine_b_averages_column_and_whole_tensor_similarity():
    a = T([[1.0, 1.0], [0.0, 1.0]])
    b = T([[2.0, -1.0], [0.0, 1.0]])
    whole = float((a * b).sum() / (a.norm() * b.norm()))
    k = 1 - torch.clamp((T([1.0, 0.0]) + whole) / 2, 0, 1)
    assert torch.allclose(raw("add_cosine_b", a, b, alpha=0.0), torch.lerp(a, b, k), atol=1e-6)


def test_cosine_of_zero_columns_is_zero_not_nan():
    a, b = torch.zeros(3, 2), torch.zeros(3, 2)
    assert torch.isfinite(raw("add_cosine_b", a, b, alpha=0.0)).all()
