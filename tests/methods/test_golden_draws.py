"""Golden outputs of the seeded methods: a change of their random stream must not go unnoticed.

RULE. A recipe with a seed must give the same merge in every version that reads it. Whatever
changes one of the values below (the draws, their seeding, how a method uses them) changes what
every saved .mecha file with a seed produces. Such a change goes with a bump of
``lib_mecha.__version__`` (lib_mecha/__init__.py): set STREAM_VERSION to the new version and
write the new values here in the same commit (``MECHA_PRINT_GOLDEN=1 pytest -s`` on this file
prints them). Never update the values without the bump.

The inputs hold small whole numbers, so sums and products are exact whatever the order of the
arithmetic: the hashes pin the draws, not the rounding of one machine. torch's normal draws
(add_noise, truncate_rank's probe) are those of its x86-64 CPU builds, CI's.
"""
from __future__ import annotations

import hashlib
import os

import pytest
import torch

import lib_mecha
from lib_mecha.methods import all_methods
from lib_mecha.methods.seeding import key_generator
from lib_mecha.methods.spectral import randomized_svd
from method_calls import TEST_KEY, raw

STREAM_VERSION = "0.1.0"  # the lib_mecha version whose random streams the values below pin

CALLS = {
    "DARE": ("ties_sum_with_dropout", 3, dict(probability=0.5, della_eps=0.0, seed=11)),
    "DELLA": ("ties_sum_with_dropout", 3, dict(probability=0.5, della_eps=0.1, seed=11)),
    "dropout": ("dropout", 3, dict(probability=0.5, seed=11)),
    "add_noise": ("add_noise", 1, dict(alpha=2.0 ** -10, seed=11, skip_out_and_norm=False)),
}
GOLDEN = {
    "DARE": "0a8fddc10347e44d104f8a76d563fac1",
    "DELLA": "ffc8de7d8c77b3938b54718250f0deb1",
    "dropout": "14881421146173fb159092f177fd23d0",
    "add_noise": "05af1fbb73bceffe80524f02bb973a99",
    "truncate_rank probe": "d46933b754b84c4a55db2b0609cf0dbf",
}


def inputs(count: int):
    g = torch.Generator().manual_seed(2024)
    return [torch.randint(-8, 9, (96, 64), generator=g).float() for _ in range(count)]


def digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()[:32]


def output_of(case: str) -> torch.Tensor:
    if case == "truncate_rank probe":
        return torch.randn(64, 3, generator=key_generator(11, TEST_KEY, "svd"), dtype=torch.float32)
    name, count, kwargs = CALLS[case]
    return raw(name, *inputs(count), **kwargs)


def release(version: str):
    return tuple(int(part) for part in version.split(".")[:3])


def test_the_values_belong_to_a_released_stream():
    if os.environ.get("MECHA_PRINT_GOLDEN"):
        print({case: digest(output_of(case)) for case in GOLDEN})
    assert release(STREAM_VERSION) <= release(lib_mecha.__version__)


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_a_seeded_method_gives_its_golden_output(case):
    assert digest(output_of(case)) == GOLDEN[case], (
        f"{case}: the random stream changed; see this file's RULE (bump lib_mecha.__version__, then the values)")


def test_truncate_rank_uses_the_pinned_probe():
    a = inputs(1)[0]
    expected_u, expected_s, expected_vh = randomized_svd(a, 3, 2, key_generator(11, TEST_KEY, "svd",
                                                                                fresh_when_none=False))
    got = raw("truncate_rank", a, rank=3, approximate_basis_seed=11)
    assert torch.equal(got, ((expected_u[:, :3] * expected_s[:3]) @ expected_vh[:3]).reshape(a.shape))


def test_every_seeded_method_is_pinned_here():
    stochastic = {name for name, spec in all_methods().items()
                  if spec.stochastic and spec.func.__module__.startswith("lib_mecha.methods.")}
    assert stochastic == {name for name, _, _ in CALLS.values()} | {"truncate_rank"}
