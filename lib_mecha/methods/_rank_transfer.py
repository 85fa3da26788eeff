"""A's sorted values put at B's ranks, without sorting whole tensors (``top_k_tensor_sum``'s core).

For every rank r in the band (a few intervals of ranks),

    result[i] = sort(A)[r]   at the element i of B's rank r,

and ``result[i] = A[i]`` elsewhere. B's ranks are those of torch's stable ascending float sort
(ties in index order, -0.0 equal to +0.0, NaN last); ``sort(A)`` is ascending with NaN last,
its zeros are +0.0 and its NaNs one NaN (torch's unstable sort leaves the sign of a zero and the
payload of a NaN to chance: equal values either way).

Sorting key-sized tensors is what made this slow: torch's sort streams key-sized index arrays
through memory, and float keys cost several times as much as 16/32-bit integer ones. So:

* Values that are all fp16 numbers have 16-bit order keys: checkpoints are stored in fp16 (or
  bf16, whose bits order the same way), and the engine hands such inputs over as they are
  (``stored_dtype``), or converted to float32, where they are checked for being fp16 numbers.
  ``sort(A)`` is A's key histogram read out in key order. B's rank of element i with key k is
  ``below[k] + (elements of key k before i)``: B is cut into chunks that fit the core's cache,
  each chunk is sorted stably by key (torch's 16-bit radix sort) and the count of each key in
  earlier chunks is carried along. Within a sorted chunk the ranks increase, so each interval
  of the band is one run of it.
* Other values get 32-bit order keys and one stable integer sort of the whole tensor.

Temporaries, in bytes per element: with fp16 numbers at most 2 (``sort(A)`` over the band, in
fp16), besides per-thread buffers of a few MB. Otherwise each 32-bit sort holds 28
while it runs (keys, sorted keys, int64 order, and the radix sort's own copies of both), one
after the other: at most 4 (``sort(A)``) + 28, then 4 + 8 (B's order). (Side by side on a granted
thread they would hold twice that, for the keys that run alone because they are the biggest.)
"""
from __future__ import annotations

import functools
import math
from typing import List, Optional, Tuple

import torch

from ..memory import Scratch
from ..workspace import Workspace, ranges
from ._trim import kth_smallest_magnitude

Runs = List[Tuple[int, int]]

CHUNK = 1 << 17   # elements of B sorted at once: its keys, order and ranks stay in the core's cache
PIECE = 1 << 17   # elements checked and keyed at once
SPAN = 1 << 20    # elements one thread takes at a time (a whole number of chunks)
KEYS = 1 << 16    # 16-bit keys and bit patterns
OFFSET = 1 << 15  # 16-bit key + OFFSET = its histogram bin
# the 16-bit float types, by the bit pattern of their +inf (larger magnitudes are NaNs)
INF_BITS = {torch.float16: 0x7C00, torch.bfloat16: 0x7F80}
SMALL = 1 << 17   # fewer elements than this are sorted whole (the fp16 tables cost about as much)
INT32_MAX = (1 << 31) - 1
FLOAT_INF_BITS = 0x7F800000


# --------------------------------------------------------------------------- order keys

def _half_keys_into(bits: torch.Tensor, keys: torch.Tensor, sign: torch.Tensor) -> None:
    """Order keys of fp16 bit patterns (int16): ``key = ±(bits & 0x7FFF)`` with the value's sign,
    so keys order as the values do and -0.0 gets +0.0's key 0."""
    torch.bitwise_right_shift(bits, 15, out=sign)           # 0 or -1
    torch.bitwise_and(bits, 0x7FFF, out=keys)
    keys.bitwise_xor_(sign).sub_(sign)                      # negated where sign = -1


def _float_keys_into(x: torch.Tensor, keys: torch.Tensor, sign: torch.Tensor) -> None:
    """Order keys of float32 values (int32), as :func:`_half_keys_into`; NaN gets the largest key."""
    bits = x.view(torch.int32)
    torch.bitwise_right_shift(bits, 31, out=sign)
    torch.bitwise_and(bits, INT32_MAX, out=keys)
    keys.bitwise_xor_(sign).sub_(sign)
    low, high = torch.aminmax(keys)
    if int(low) < -FLOAT_INF_BITS or int(high) > FLOAT_INF_BITS:  # NaNs: one key, above +inf
        keys.masked_fill_(torch.isnan(x), INT32_MAX)


def _floats_of_keys_(keys: torch.Tensor) -> torch.Tensor:
    """Float32 values of order keys, in place (+0.0 for 0, a NaN for the NaN key)."""
    sign = torch.bitwise_and(keys, -(1 << 31))              # the sign bit alone
    keys.abs_().bitwise_or_(sign)
    return keys.view(torch.float32)


@functools.lru_cache(maxsize=None)
def _half_tables(device: torch.device, dtype: torch.dtype = torch.float16) -> Tuple[torch.Tensor, torch.Tensor]:
    """(bin of each 16-bit pattern in key order, value of each bin in ``dtype``, float16 or
    bfloat16: both keep the sign in the top bit and order magnitudes as integers)."""
    patterns = torch.arange(KEYS, dtype=torch.int32, device=device)
    bits = (patterns ^ OFFSET) - OFFSET                     # the int16 reading of the pattern
    magnitude = bits & 0x7FFF
    bins = torch.where(bits < 0, -magnitude, magnitude) + OFFSET
    keys = torch.arange(-OFFSET, OFFSET, dtype=torch.int32, device=device)
    value_bits = torch.where(keys < 0, (-keys) | 0x8000, keys)
    values = ((value_bits ^ OFFSET) - OFFSET).to(torch.int16).view(dtype)
    return bins.long(), values


# --------------------------------------------------------------------------- pass 1: fp16 check and counts

def _half_bits(x: torch.Tensor, scratch: Scratch) -> Optional[torch.Tensor]:
    """The fp16 bit patterns of ``x`` (int16), or None when some value is not an fp16 number."""
    size = x.numel()
    half = scratch.get("half", size, torch.float16)
    half.copy_(x)
    flipped = scratch.get("back", size, torch.float32).copy_(half).view(torch.int32)
    # exact when the round trip keeps every bit (NaNs that survive it are caught from the counts)
    flipped.bitwise_xor_(x.view(torch.int32))
    low, high = torch.aminmax(flipped)
    if int(low) != 0 or int(high) != 0:
        return None
    return half.view(torch.int16)


class _HalfScan:
    """One pass over A and B: whether each holds only 16-bit float numbers (no NaN), A's counts
    by key bin, and B's counts by key bin in each span (for the keys before each span).

    The 16-bit type (``dtype``) is the inputs' own when they are float16 or bfloat16 (stored
    weights a method gets as they are: see ``stored_dtype`` in spec.py); float32 inputs are
    checked for being float16 numbers."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, work: Workspace):
        self.dtype = a.dtype if a.dtype in INF_BITS else torch.float16
        self.spans = ranges(a.numel(), SPAN)
        self.a_ok = self.b_ok = True
        a_counts = []                                     # each thread's counts of A's bit patterns
        b_counts = {}                                     # span start -> counts of B's bit patterns

        def make_state() -> Tuple[Scratch, torch.Tensor]:
            counts = torch.zeros(KEYS, dtype=torch.int64, device=a.device)
            a_counts.append(counts)
            return work.scratch(a), counts

        def scan(start: int, end: int, state: Tuple[Scratch, torch.Tensor]) -> None:
            scratch, counts = state
            if self.a_ok and not _patterns_into(a, start, end, scratch, "a"):
                self.a_ok = False
            if self.a_ok:
                counts += torch.bincount(scratch.get("a", end - start, torch.int32), minlength=KEYS)
            if self.b_ok and not _patterns_into(b, start, end, scratch, "b"):
                self.b_ok = False
            if self.b_ok:
                b_counts[start] = torch.bincount(scratch.get("b", end - start, torch.int32), minlength=KEYS)

        work.for_each_range(self.spans, scan, make_state)
        if self.a_ok:
            self.a_counts = _in_key_order(_sum(a_counts))
            self.a_ok = not _counts_nan(self.a_counts, self.dtype)
        if self.b_ok:
            self.b_span_counts = [_in_key_order(b_counts[s]) for s, _ in self.spans]
            self.b_counts = _sum(self.b_span_counts)
            self.b_ok = not _counts_nan(self.b_counts, self.dtype)


def _patterns_into(x: torch.Tensor, start: int, end: int, scratch: Scratch, name: str) -> bool:
    """Writes the 16-bit patterns of ``x[start:end]`` (0 to 65535, int32) into the scratch
    buffer ``name``; for float32 ``x``, piece by piece those of its fp16 conversion, and False
    when some value is not an fp16 number. A span is counted at once afterwards: each count
    allocates and adds 64 K bins."""
    patterns = scratch.get(name, end - start, torch.int32)
    if x.dtype in INF_BITS:
        patterns.copy_(x[start:end].view(torch.int16)).bitwise_and_(KEYS - 1)
        return True
    for s in range(start, end, PIECE):
        e = min(s + PIECE, end)
        bits = _half_bits(x[s:e], scratch)
        if bits is None:
            return False
        patterns[s - start:e - start].copy_(bits).bitwise_and_(KEYS - 1)
    return True


def _in_key_order(pattern_counts: torch.Tensor) -> torch.Tensor:
    """Counts by fp16 bit pattern -> counts by key bin (key + OFFSET; -0.0 and +0.0 share one)."""
    bins, _ = _half_tables(pattern_counts.device)
    return torch.zeros_like(pattern_counts).index_add_(0, bins, pattern_counts)


def _sum(tensors: List[torch.Tensor]) -> torch.Tensor:
    total = tensors[0].clone()
    for t in tensors[1:]:
        total += t
    return total


def _counts_nan(counts: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether counts by key bin hold NaNs (keys beyond those of the infinities)."""
    inf = INF_BITS[dtype]
    return bool(counts[:OFFSET - inf].any() or counts[OFFSET + inf + 1:].any())


# --------------------------------------------------------------------------- sort(A)

class _SortedA:
    """``sort(A)``: its length, counts below a value, k-th smallest magnitude and values by rank."""
    n: int

    def below(self, value: float) -> int:
        """Entries < value (NaN never)."""
        raise NotImplementedError

    def at_most(self, value: float) -> int:
        """Entries <= value (NaN never)."""
        raise NotImplementedError

    def kth_magnitude(self, k: int) -> float:
        """``sort(A).abs().kthvalue(k)`` for 1 <= k <= n (NaN counts as the largest)."""
        raise NotImplementedError

    def values(self, lo: int, hi: int, work: Workspace) -> torch.Tensor:
        """``sort(A)[lo:hi]`` (a 16-bit float type or float32)."""
        raise NotImplementedError


class _HalfSortedA(_SortedA):
    """``sort(A)`` of 16-bit float numbers (``dtype``), from the counts of their keys."""

    def __init__(self, counts: torch.Tensor, dtype: torch.dtype):
        self.counts, self.dtype = counts, dtype
        self.n = int(counts.sum())
        self.cumulative = torch.cumsum(counts, 0)
        self.bin_values = _half_tables(counts.device, dtype)[1]

    def _bin(self, value: float) -> int:
        bits = int(torch.tensor(value, dtype=self.dtype).view(torch.int16))
        magnitude = bits & 0x7FFF
        return (-magnitude if bits < 0 else magnitude) + OFFSET

    def below(self, value: float) -> int:
        b = self._bin(value)
        return int(self.cumulative[b - 1]) if b > 0 else 0

    def at_most(self, value: float) -> int:
        return int(self.cumulative[self._bin(value)])

    def kth_magnitude(self, k: int) -> float:
        # magnitude m (bits of |v|) is held by keys +m and -m
        by_magnitude = self.counts[OFFSET:].clone()
        by_magnitude[1:] += self.counts[1:OFFSET].flip(0)
        m = int(torch.searchsorted(torch.cumsum(by_magnitude, 0), k))
        return float(self.bin_values[OFFSET + m])

    def values(self, lo: int, hi: int, work: Workspace) -> torch.Tensor:
        """Read out in chunks: a marker at the first rank of each bin, a running sum of the markers
        gives each rank's bin, and the bin gives the value."""
        present = torch.nonzero(self.counts).squeeze(1)
        ends = self.cumulative[present]                   # one past each present bin's last rank
        starts = ends - self.counts[present]
        values = self.bin_values[present]
        out = torch.empty(hi - lo, dtype=self.dtype, device=self.counts.device)

        def read_out(start: int, end: int, scratch: Scratch) -> None:
            r0, r1 = lo + start, lo + end
            first = int(torch.searchsorted(ends, r0, right=True))
            last = int(torch.searchsorted(ends, r1 - 1, right=True))
            marks = scratch.get("marks", end - start, torch.int32).zero_()
            marks.index_fill_(0, starts[first + 1:last + 1] - r0, 1)
            marks[0] = first
            torch.cumsum(marks, 0, out=marks)
            torch.index_select(values, 0, marks, out=out[start:end])

        work.for_each_range(ranges(hi - lo, 4 * CHUNK), read_out, lambda: work.scratch(out))
        return out


class _FloatSortedA(_SortedA):
    """``sort(A)`` of any float32 values: a stable 32-bit integer sort of their order keys."""

    def __init__(self, a: torch.Tensor, work: Workspace):
        self.a, self.work = a, work
        self.n = a.numel()
        keys = work.empty(self.n, torch.int32, a.device)
        _keys_of(a, keys, work)
        keys = torch.sort(keys).values
        self.not_nan = int(torch.searchsorted(keys, INT32_MAX))  # NaNs have the largest key
        self.sorted = _floats_of_keys_(keys)

    def _search(self, value: float, right: bool) -> int:
        target = torch.tensor([value], dtype=torch.float32, device=self.sorted.device)
        return int(torch.searchsorted(self.sorted[:self.not_nan], target, right=right))

    def below(self, value: float) -> int:
        return self._search(value, right=False)

    def at_most(self, value: float) -> int:
        return self._search(value, right=True)

    def kth_magnitude(self, k: int) -> float:
        return float(kth_smallest_magnitude(self.a, k, self.work))

    def values(self, lo: int, hi: int, work: Workspace) -> torch.Tensor:
        return self.sorted[lo:hi]


def _keys_of(x: torch.Tensor, keys: torch.Tensor, work: Workspace) -> None:
    """32-bit order keys of ``x`` into ``keys``, slice by slice."""
    def body(start: int, end: int, scratch: Scratch) -> None:
        _float_keys_into(x[start:end], keys[start:end], scratch.get("sign32", end - start, torch.int32))

    work.for_each_range(ranges(x.numel(), CHUNK), body, lambda: work.scratch(x))


# --------------------------------------------------------------------------- the band

def band_runs(sorted_a: _SortedA, start: int, end: int, inverted: bool) -> Runs:
    """The ranks r with ``low <= |sort(A)[r]| <= high`` as increasing disjoint intervals, or their
    complement when inverted; low and high are the start-th and end-th smallest magnitudes
    (-1 for a 0th)."""
    n = sorted_a.n
    low = sorted_a.kth_magnitude(start) if start > 0 else -1.0
    high = sorted_a.kth_magnitude(end) if end > 0 else -1.0
    runs: Runs = []
    if not (math.isnan(low) or math.isnan(high) or high < 0):
        if low <= 0:   # |v| >= low holds for every value: -high <= v <= high
            runs = [(sorted_a.below(-high), sorted_a.at_most(high))]
        else:          # -high <= v <= -low or low <= v <= high
            runs = [(sorted_a.below(-high), sorted_a.at_most(-low)), (sorted_a.below(low), sorted_a.at_most(high))]
        runs = [(r0, r1) for r0, r1 in runs if r0 < r1]
    if inverted:
        bounds = [0] + [r for run in runs for r in run] + [n]
        runs = [(r0, r1) for r0, r1 in zip(bounds[::2], bounds[1::2]) if r0 < r1]
    return runs


# --------------------------------------------------------------------------- B's ranks

def _key_segments(counts: torch.Tensor, runs: Runs) -> List[Tuple[int, int]]:
    """The bins of B's keys whose ranks meet the runs, as merged ``[first, end)`` bin ranges."""
    ends = torch.cumsum(counts, 0)                        # one past each bin's last rank
    segments: List[Tuple[int, int]] = []
    for r0, r1 in runs:
        first = int(torch.searchsorted(ends, r0, right=True))
        end = int(torch.searchsorted(ends, r1 - 1, right=True)) + 1
        if segments and first <= segments[-1][1]:
            segments[-1] = (segments[-1][0], max(end, segments[-1][1]))
        else:
            segments.append((first, end))
    return segments


def _place_by_half_keys(result: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scan: _HalfScan, runs: Runs,
                        source: torch.Tensor, lo: int, work: Workspace) -> None:
    """``result`` = A, with ``source[r - lo]`` at B's rank r for r in the runs: chunk by chunk.

    Only the entries of B whose keys can reach the runs get ranks: after a chunk is sorted they
    are one run of it per segment of keys (:func:`_key_segments`)."""
    device = a.device
    total = scan.b_counts
    segments = _key_segments(total, runs)
    firsts = torch.cumsum(total, 0) - total - lo          # rank - lo of each key's first entry
    carried = {}                                          # span start -> that of each key's next entry, by segment
    before = [firsts[b0:b1].to(torch.int32) for b0, b1 in segments]
    for (s, _), counts in zip(scan.spans, scan.b_span_counts):
        carried[s] = [x.clone() for x in before]
        for x, (b0, b1) in zip(before, segments):
            x += counts[b0:b1]
    # sorted chunk entries from the segment's first key to its last
    key_bounds = [torch.tensor([b0 - OFFSET - 1, b1 - 1 - OFFSET], dtype=torch.int16, device=device)
                  for b0, b1 in segments]
    rank_bounds = torch.tensor([r - lo for run in runs for r in run], dtype=torch.int32, device=device)
    steps = torch.arange(CHUNK, dtype=torch.int32, device=device)
    every_rank = runs == [(0, a.numel())]                 # then every entry gets a value from source

    def place(start: int, end: int, scratch: Scratch) -> None:
        next_ranks = carried[start]
        for s in range(start, end, CHUNK):
            size = min(s + CHUNK, end) - s
            half = b[s:s + size] if b.dtype in INF_BITS else scratch.get("half", size, torch.float16).copy_(
                b[s:s + size])
            keys = scratch.get("keys", size, torch.int16)
            _half_keys_into(half.view(torch.int16), keys, scratch.get("sign16", size, torch.int16))
            order = scratch.get("order", size, torch.int64)
            torch.sort(keys, stable=True, out=(scratch.get("sorted_keys", size, torch.int16), order))
            keys = scratch.get("sorted_keys", size, torch.int16)
            out = result[s:s + size]
            if not every_rank:
                out.copy_(a[s:s + size])
            for (b0, _), bounds, next_rank in zip(segments, key_bounds, next_ranks):
                q0, q1 = torch.searchsorted(keys, bounds, right=True).tolist()
                if q0 < q1:
                    _place_segment(out, keys[q0:q1], order[q0:q1], b0 - OFFSET, next_rank, rank_bounds, source,
                                   steps, scratch)

    work.for_each_range(scan.spans, place, lambda: work.scratch(a))


def _place_segment(out: torch.Tensor, keys: torch.Tensor, order: torch.Tensor, first_key: int,
                   next_rank: torch.Tensor, rank_bounds: torch.Tensor, source: torch.Tensor,
                   steps: torch.Tensor, scratch: Scratch) -> None:
    """For sorted chunk entries whose keys lie in one segment: the rank of entry p is
    ``next_rank[key] + p - (entries of the chunk with a smaller key)``; those in the runs take
    their value from ``source``. ``next_rank`` then moves past the chunk."""
    size = keys.numel()
    bins = scratch.get("bins", size, torch.int32)
    bins.copy_(keys).sub_(first_key)
    counts = torch.bincount(bins, minlength=next_rank.numel()).to(torch.int32)
    first_rank = scratch.get("first_rank", counts.numel(), torch.int32)
    torch.cumsum(counts, 0, out=first_rank)
    first_rank.sub_(counts).neg_().add_(next_rank)
    next_rank.add_(counts)
    ranks = torch.index_select(first_rank, 0, bins, out=scratch.get("ranks", size, torch.int32))
    ranks.add_(steps[:size])
    cuts = torch.searchsorted(ranks, rank_bounds).tolist()
    for p0, p1 in zip(cuts[::2], cuts[1::2]):
        if p0 < p1:
            values = torch.index_select(source, 0, ranks[p0:p1], out=scratch.get("values", p1 - p0, source.dtype))
            if values.dtype != out.dtype:
                values = scratch.get("float_values", p1 - p0, out.dtype).copy_(values)
            out.scatter_(0, order[p0:p1], values)


def _b_order(b: torch.Tensor, work: Workspace) -> torch.Tensor:
    """B's stable ascending order (int64), from its 32-bit order keys."""
    keys = work.empty(b.numel(), torch.int32, b.device)
    _keys_of(b, keys, work)
    return torch.sort(keys, stable=True).indices


def _place_by_order(result: torch.Tensor, order: torch.Tensor, runs: Runs, source: torch.Tensor, lo: int,
                    work: Workspace) -> None:
    """``result[order[r]] = source[r - lo]`` for r in the runs."""
    pieces = [(r0 + s, min(r0 + s + CHUNK, r1)) for r0, r1 in runs for s in range(0, r1 - r0, CHUNK)]

    def place(index: int, _: int, state) -> None:
        r0, r1 = pieces[index]
        result.scatter_(0, order[r0:r1], source[r0 - lo:r1 - lo].to(result.dtype))

    work.for_each_range([(i, i + 1) for i in range(len(pieces))], place)


# --------------------------------------------------------------------------- all together

def transfer(a: torch.Tensor, b: torch.Tensor, start: int, end: int, inverted: bool, work: Workspace) -> torch.Tensor:
    """The rearranged A of ``top_k_tensor_sum`` for 1-D ``a`` and ``b`` of equal size (fewer than
    2^31 elements) and one dtype, float32, float16 or bfloat16: the band is the ranks of the
    ``start``-th to ``end``-th smallest magnitudes of A (their complement when inverted), as
    :func:`band_runs` says. The result has A's dtype."""
    a, b = a.contiguous(), b.contiguous()
    # below SMALL elements the 64 K-bin tables of the 16-bit keys cost more than sorting
    scan = _HalfScan(a, b, work) if a.numel() >= SMALL else None
    if a.dtype != torch.float32 and not (scan is not None and scan.a_ok and scan.b_ok):
        # 16-bit values that are few or hold NaNs: as float32 (exact, and back)
        return transfer(a.float(), b.float(), start, end, inverted, work).to(a.dtype)
    # A's sort first: its 4 bytes per element stay while B's sort holds 28
    sorted_a = _HalfSortedA(scan.a_counts, scan.dtype) if scan is not None and scan.a_ok else _FloatSortedA(a, work)
    runs = band_runs(sorted_a, start, end, inverted)
    if not runs:
        return a.clone()
    lo, hi = runs[0][0], runs[-1][1]
    if scan is not None and scan.b_ok:
        result = work.empty_like(a)
        _place_by_half_keys(result, a, b, scan, runs, sorted_a.values(lo, hi, work), lo, work)
    else:
        order = _b_order(b, work)
        result = a.clone()
        _place_by_order(result, order, runs, sorted_a.values(lo, hi, work), lo, work)
    return result
