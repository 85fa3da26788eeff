"""Selection networks: straight-line ``min``/``max`` code that picks one rank of n values
elementwise (the exact median of a neighbourhood, the median of other window widths).

Batcher's odd-even merge sort on the next power of two of wires, pruned to the operations the
wanted output depends on, then given registers so that a block's temporaries are reused.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import torch


@dataclass(frozen=True)
class Network:
    """Straight-line code selecting one rank of ``inputs`` values: value ``inputs + i`` is
    ``ops[i][0]`` (``torch.minimum`` or ``torch.maximum``) of values ``ops[i][1]`` and ``ops[i][2]``;
    the last value (or input ``result`` when there are no ops) is the answer."""
    inputs: int
    ops: Tuple[Tuple[Callable, int, int], ...]
    result: int


def batcher_pairs(n: int) -> List[Tuple[int, int]]:
    """Batcher's odd-even merge sort of n wires (a power of two) as compare-exchange pairs (i, j),
    i < j, the smaller value going to i. Depth first (each half sorted before the merge): the
    values a stretch of the network works on stay few, and in cache."""
    pairs: List[Tuple[int, int]] = []

    def merge(first: int, last: int, stride: int) -> None:  # wires first..last, every stride-th
        if 2 * stride < last - first:
            merge(first, last, 2 * stride)
            merge(first + stride, last, 2 * stride)
            pairs.extend((i, i + stride) for i in range(first + stride, last - stride, 2 * stride))
        else:
            pairs.append((first, first + stride))

    def sort(first: int, last: int) -> None:
        if first < last:
            middle = (first + last) // 2
            sort(first, middle)
            sort(middle + 1, last)
            merge(first, last, 1)

    sort(0, n - 1)
    return pairs


@functools.lru_cache(maxsize=None)
def selection_network(count: int, rank: int) -> Network:
    """The ``rank``-th smallest (from 0) of ``count`` values: Batcher's network on the next power of
    two of wires (the extra ones -inf below and +inf above, resolved while building), keeping only
    the min/max operations the output depends on. Of the padding choices tried, the shortest."""
    wires = 1 << max(count - 1, 0).bit_length()
    candidates = {0, wires - count, min(max(wires // 2 - rank, 0), wires - count)}
    return min((_pruned_network(count, rank, low, wires) for low in sorted(candidates)), key=lambda n: len(n.ops))


def _pruned_network(count: int, rank: int, low: int, wires: int) -> Network:
    below, above = "below", "above"  # the padding wires' constant values, -inf and +inf
    state = [below] * low + list(range(count)) + [above] * (wires - count - low)
    definitions: Dict[int, Tuple[Callable, int, int]] = {}
    for i, j in batcher_pairs(wires):
        a, b = state[i], state[j]
        if a == below or b == above:  # already in order
            continue
        if a == above or b == below:  # in reverse order: the pair swaps, nothing to compute
            state[i], state[j] = b, a
            continue
        smaller, larger = count + len(definitions), count + len(definitions) + 1
        definitions[smaller], definitions[larger] = (torch.minimum, a, b), (torch.maximum, a, b)
        state[i], state[j] = smaller, larger
    result = state[low + rank]
    needed, pending = set(), [result]
    while pending:
        value = pending.pop()
        if value in definitions and value not in needed:
            needed.add(value)
            pending.extend(definitions[value][1:])
    order = sorted(needed)  # definitions come after their arguments
    renumber = {old: count + new for new, old in enumerate(order)}
    renumber.update((i, i) for i in range(count))
    ops = tuple((definitions[v][0], renumber[definitions[v][1]], renumber[definitions[v][2]]) for v in order)
    return Network(count, ops, renumber[result])


@functools.lru_cache(maxsize=None)
def selection_program(count: int, rank: int) -> Tuple[Tuple[Tuple[Callable, int, int, int], ...], int, int]:
    """:func:`selection_network` with its values assigned to registers: ``(op, a, b, destination)``
    steps over registers 0..count-1 (the inputs), ``count..count+temporaries-1`` (reused once
    their last reader has run: the ops are elementwise, so a destination may be an argument) and
    -1 (the output). Returns (steps, temporaries, the input that is the answer when there are no steps)."""
    network = selection_network(count, rank)
    last_read = {}
    for step, (_, a, b) in enumerate(network.ops):
        last_read[a] = last_read[b] = step
    register = {i: i for i in range(count)}
    free: List[int] = []
    temporaries = 0
    steps = []
    for step, (op, a, b) in enumerate(network.ops):
        arguments = register[a], register[b]
        for value in (a, b):
            if last_read[value] == step and value >= count:
                free.append(register.pop(value))
        if step == len(network.ops) - 1:
            destination = -1
        elif free:
            destination = free.pop()
        else:
            destination = count + temporaries
            temporaries += 1
        register[count + step] = destination
        steps.append((op, *arguments, destination))
    return tuple(steps), temporaries, network.result
