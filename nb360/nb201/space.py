"""The NAS-Bench-201 cell space and its official index order (nb201.md 6.1).

A cell has 4 nodes; node ``j`` sums ``op(node_i)`` over its 6 input edges ``i < j``, and node 3 is the
output. Each edge carries one of five operations, so there are 5**6 = 15,625 cells. Their indices are those
of NAS-Bench-201 / NATS-Bench's topology space: the cells enumerated node by node (node 1 slowest, within a
node the edge from node 0 slowest), then shuffled by Python's ``random`` seeded with 88.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import random
from collections.abc import Sequence

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NODES = 4  # node 0 is the cell's input, node 3 its output
EDGES = tuple((i, j) for j in range(1, NODES) for i in range(j))  # (from, to) in arch-string order
NUM_ARCHS = len(OPS) ** len(EDGES)
SHUFFLE_SEED = 88
# sha256 of the 15,625 strings in index order joined by "\n" (nb201.md 6.1)
ORDER_SHA256 = "83abc799e45cf34e9d2163654668ab998b9a54d01c39e72ca1f71f2cdf356d84"

Arch = tuple[str, ...]  # one op per edge, in EDGES order


def to_str(arch: Sequence[str]) -> str:
    """The official string: ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``."""
    if len(arch) != len(EDGES):
        raise ValueError(f"a cell has {len(EDGES)} edges, got {len(arch)} ops: {arch!r}")
    nodes = []
    for j in range(1, NODES):
        nodes.append("|" + "|".join(f"{arch[k]}~{i}" for k, (i, to) in enumerate(EDGES) if to == j) + "|")
    return "+".join(nodes)


def parse(text: str) -> Arch:
    """The ops of an official arch string, in EDGES order; a malformed string raises ValueError."""
    nodes = text.split("+")
    ops: list[str] = []
    if len(nodes) != NODES - 1:
        raise ValueError(f"{text!r}: an NB201 cell has {NODES - 1} nodes separated by '+'")
    for j, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|")):
            raise ValueError(f"{text!r}: node {j} must be written |op~i|...|")
        edges = node[1:-1].split("|")
        if len(edges) != j:
            raise ValueError(f"{text!r}: node {j} has {len(edges)} input edges, expected {j}")
        for i, edge in enumerate(edges):
            op, _, source = edge.partition("~")
            if op not in OPS or source != str(i):
                raise ValueError(f"{text!r}: edge {edge!r} of node {j} is not op~{i} with op in {OPS}")
            ops.append(op)
    return tuple(ops)


@functools.cache
def arch_strings() -> tuple[str, ...]:
    """All 15,625 arch strings in the official index order."""
    per_node = [list(itertools.product(OPS, repeat=j)) for j in range(1, NODES)]
    cells = [to_str(n1 + n2 + n3) for n1, n2, n3 in itertools.product(*per_node)]
    random.Random(SHUFFLE_SEED).shuffle(cells)  # the same sequence as random.seed(88); random.shuffle
    return tuple(cells)


@functools.cache
def _index_of() -> dict[str, int]:
    return {s: i for i, s in enumerate(arch_strings())}


def index_of(arch: str | Sequence[str]) -> int:
    """The official index of a cell, given as a string or a sequence of ops."""
    text = arch if isinstance(arch, str) else to_str(arch)
    try:
        return _index_of()[text]
    except KeyError:
        parse(text)  # a malformed string says why
        raise ValueError(f"{text!r} is not a cell of the NB201 space") from None


def arch_of(index: int) -> Arch:
    """The ops of cell ``index``."""
    if not 0 <= index < NUM_ARCHS:
        raise IndexError(f"NB201 cell index {index} is outside 0..{NUM_ARCHS - 1}")
    return parse(arch_strings()[index])


def order_digest() -> str:
    return hashlib.sha256("\n".join(arch_strings()).encode()).hexdigest()


def check_order() -> None:
    """Raise if this Python's ``random`` does not reproduce the official order (its check values)."""
    if order_digest() != ORDER_SHA256:
        raise RuntimeError("the NB201 index order does not match the official one (random.shuffle changed?)")
