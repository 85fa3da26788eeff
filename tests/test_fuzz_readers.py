"""Fuzzing the two readers of untrusted text: 10 000 mutated .mecha texts and 10 000 mutated
safetensors headers (seeded, so a failure reproduces). Only our own errors may come out (the
MechaError family: one line naming the problem), and no input may take a second."""
from __future__ import annotations

import copy
import json
import random
import signal
import struct
import time

import pytest

import lib_mecha as mecha
from lib_mecha.errors import MechaError
from lib_mecha.io.header import parse_header

CASES = 10_000
LIMIT_SECONDS = 1.0


class Hang(Exception):
    pass


class Deadline:
    """Raises :class:`Hang` in the main thread when one input runs over ``LIMIT_SECONDS`` (where
    the system has interval timers; elsewhere the time is only measured)."""

    def __enter__(self):
        self.can_interrupt = hasattr(signal, "setitimer")
        if self.can_interrupt:
            self.previous = signal.signal(signal.SIGALRM, self._expired)
        return self

    def __exit__(self, *exc):
        if self.can_interrupt:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)

    @staticmethod
    def _expired(signum, frame):
        raise Hang(f"an input took more than {LIMIT_SECONDS} s")

    def run(self, call, data):
        if self.can_interrupt:
            signal.setitimer(signal.ITIMER_REAL, LIMIT_SECONDS)
        started = time.perf_counter()
        try:
            call(data)
        finally:
            if self.can_interrupt:
                signal.setitimer(signal.ITIMER_REAL, 0)
        assert time.perf_counter() - started < LIMIT_SECONDS, data


def fuzz(call, seeds, mutate, rng):
    """Feeds CASES mutations of the seeds to ``call``; returns how many were refused."""
    refused = 0
    with Deadline() as deadline:
        for case in range(CASES):
            data = mutate(rng.choice(seeds), rng)
            try:
                deadline.run(call, data)
            except MechaError as e:
                assert "\n" not in e.format_message(), (case, data)
                refused += 1
            except Exception as e:  # noqa: BLE001 - anything but our own errors is the failure looked for
                raise AssertionError(f"case {case}: {type(e).__name__}: {e}\ninput: {data!r}") from e
    return refused


# --- .mecha texts ----------------------------------------------------------------------------------

def mecha_seeds():
    a, b, c = mecha.model("a"), mecha.model("b.safetensors", "sd1-ldm"), mecha.model("dir/c")
    block = mecha.literal({"BASE": 0.0, "IN00": 0.25, "M00": 0.9}, "sd1-supermerger_blocks")
    recipes = [
        mecha.weighted_sum(a, b, alpha=0.3),
        mecha.add_difference(mecha.weighted_sum(a, b, alpha=block), c, a, alpha=0.5),
        mecha.clamp(a, b, c, stiffness=0.2),
        mecha.ties_sum_with_dropout(mecha.subtract(b, a), mecha.subtract(c, a), probability=0.4, seed=7),
        mecha.n_average(a, b, c),
    ]
    return [mecha.serialize(r) for r in recipes] + ['version 0.1.0\nmodel "a"  # a comment\r\n\n']


TOKENS = ["&", "&0", "&-1", "&99999", '"', "=", "\n", "\r\n", " ", "\t", "#", "\\", "merge ", "literal ",
          "dict ", "model ", "version 0.1.0\n", "0.1.0", "null", "true", "nan", "inf", "-inf", "1e400", "1e-400",
          "-0", "99999999999999999999999", "0x10", "é", "\u202e", "\x00", "\ufeff", "'", "(", "]", "{", "key=",
          "alpha=", "model_config=", "merge_space=", '"weighted_sum"', '"fallback"', "a" * 300]


def mutate_text(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 4)):
        n = len(text)
        i, j = sorted(rng.randrange(n + 1) for _ in range(2))
        op = rng.randrange(6)
        if op == 0:
            text = text[:i] + text[j:]                              # delete a span
        elif op == 1:
            text = text[:i] + text[i:j] * rng.randint(2, 3) + text[j:]  # repeat a span
        elif op == 2:
            text = text[:i] + rng.choice(TOKENS) + text[i:]          # insert a token
        elif op == 3 and n:
            text = text[:i] + chr(rng.randrange(0x20, 0x250)) + text[i + 1:]  # replace a character
        elif op == 4:
            lines = text.split("\n")
            rng.shuffle(lines)                                       # lines out of order
            text = "\n".join(lines)
        else:
            text = text[:i]                                          # truncate
    return text


def test_mutated_mecha_texts_give_only_our_errors_and_never_hang():
    refused = fuzz(mecha.deserialize, mecha_seeds(), mutate_text, random.Random(16))
    assert CASES // 2 < refused < CASES  # most mutations break the text, some keep it valid


# --- safetensors headers ---------------------------------------------------------------------------

class InMemory:
    """The reader parse_header takes, over bytes."""

    def __init__(self, data: bytes):
        self.data = data

    def read_into(self, buffer: memoryview, offset: int) -> int:
        chunk = self.data[offset:offset + len(buffer)]
        buffer[:len(chunk)] = chunk
        return len(chunk)


def file_bytes(header: dict, data_size: int) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + bytes(data_size)


def header_seeds():
    return [file_bytes({"__metadata__": {"format": "pt", "note": "x"},
                        "w": {"dtype": "F16", "shape": [2, 3], "data_offsets": [0, 12]},
                        "b": {"dtype": "F32", "shape": [3], "data_offsets": [12, 24]},
                        "ids": {"dtype": "I64", "shape": [1, 2], "data_offsets": [24, 40]}}, 40),
            file_bytes({"e": {"dtype": "BF16", "shape": [0], "data_offsets": [0, 0]},
                        "f": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}}, 4)]


VALUES = [None, True, -1, 0, 1, 2 ** 63, 2 ** 64, -2 ** 70, 1.5, float("inf"), "F32", "Q7", "", [], [1],
          [0, 2 ** 64], [[1]], {}, {"a": 1}, "x" * 70, [3, -1], [1e308, 1]]


def mutate_header(blob: bytes, rng: random.Random) -> bytes:
    length = struct.unpack("<Q", blob[:8])[0]
    header, data = json.loads(blob[8:8 + length]), blob[8 + length:]
    for _ in range(rng.randint(1, 3)):  # structural: keys, dtypes, shapes, offsets, metadata
        key = rng.choice(list(header))
        field = rng.choice(["dtype", "shape", "data_offsets", None])
        if field is None or not isinstance(header[key], dict):
            header[key] = copy.deepcopy(rng.choice(VALUES))
        elif rng.random() < 0.2:
            header[key].pop(field, None)
        else:
            header[key][field] = copy.deepcopy(rng.choice(VALUES))
    text = json.dumps(header).encode()
    blob = struct.pack("<Q", len(text)) + text + data
    for _ in range(rng.randint(0, 3)):  # raw: flipped bytes, a wrong length, a cut
        op = rng.randrange(3)
        if op == 0 and blob:
            at = rng.randrange(len(blob))
            blob = blob[:at] + bytes([rng.randrange(256)]) + blob[at + 1:]
        elif op == 1:
            blob = struct.pack("<Q", rng.choice([0, 1, len(text) - 1, len(text) + 1, 2 ** 63, 2 ** 64 - 1])) + blob[8:]
        else:
            blob = blob[:rng.randrange(len(blob) + 1)]
    return blob


def test_mutated_safetensors_headers_give_only_our_errors_and_never_hang():
    refused = fuzz(lambda blob: parse_header("fuzzed.safetensors", InMemory(blob), len(blob)),
                   header_seeds(), mutate_header, random.Random(16))
    assert CASES // 2 < refused < CASES


@pytest.mark.parametrize("mutate, seeds", [(mutate_text, mecha_seeds), (mutate_header, header_seeds)])
def test_the_mutations_are_seeded(mutate, seeds):
    first = [mutate(s, random.Random(3)) for s in seeds()]
    assert first == [mutate(s, random.Random(3)) for s in seeds()]
