"""largest_magnitude: the one-pass max |t| that DELLA's ranks and perpendicular_component rely on."""
import math

import torch

from lib_mecha.methods._values import largest_magnitude


def test_largest_magnitude_takes_the_sign_into_account_and_propagates_nan():
    assert largest_magnitude(torch.tensor([0.5, -3.0, 2.0])) == 3.0
    assert largest_magnitude(torch.tensor([0.5, 3.0, -2.0])) == 3.0
    assert largest_magnitude(torch.tensor([-0.0])) == 0.0
    assert largest_magnitude(torch.tensor([1.0, -math.inf])) == math.inf
    assert math.isnan(largest_magnitude(torch.tensor([1.0, math.nan, 5.0])))
    x = torch.randn(1000, dtype=torch.float64)
    assert largest_magnitude(x) == float(torch.linalg.vector_norm(x, math.inf))
