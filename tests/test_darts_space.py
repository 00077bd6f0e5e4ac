"""The DARTS search space (ops, mixed edges, supernet, genotypes) and the ``darts_eval`` network."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nb360.models import create_model
from nb360.models.darts_eval import DartsEvalNetwork, darts_eval
from nb360.search.darts_space import (
    NUM_EDGES,
    OPS,
    PRIMITIVES,
    STEPS,
    Genotype,
    MixedOp,
    Supernet,
    _edge_groups,
    _edge_index,
    channel_shuffle,
    derive_cell,
    derive_genotype,
    sample_genotype,
)
from nb360.tasks import get_task

# DARTS-V2 (Liu et al. 2019), as published with DARTS' 2D op names.
DARTS_V2 = {
    "normal": [
        ["sep_conv_3x3", 0],
        ["sep_conv_3x3", 1],
        ["sep_conv_3x3", 0],
        ["sep_conv_3x3", 1],
        ["sep_conv_3x3", 1],
        ["skip_connect", 0],
        ["skip_connect", 0],
        ["dil_conv_3x3", 2],
    ],
    "normal_concat": [2, 3, 4, 5],
    "reduce": [
        ["max_pool_3x3", 0],
        ["max_pool_3x3", 1],
        ["skip_connect", 2],
        ["max_pool_3x3", 1],
        ["max_pool_3x3", 0],
        ["skip_connect", 2],
        ["skip_connect", 2],
        ["max_pool_3x3", 1],
    ],
    "reduce_concat": [2, 3, 4, 5],
}


def spatial(dim: int, size: int) -> tuple[int, ...]:
    return (size,) * dim


def sample_input(task: str, size: int, batch: int = 2) -> torch.Tensor:
    spec = get_task(task)
    return torch.randn(batch, spec.input_shape[0], *spatial(spec.dim, size))


def one_hot(name: str) -> torch.Tensor:
    w = torch.zeros(len(PRIMITIVES))
    w[PRIMITIVES.index(name)] = 1.0
    return w


# ---------------------------------------------------------------------------------------------- ops


def test_op_table_matches_primitives() -> None:
    assert list(OPS) == list(PRIMITIVES)


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("name", PRIMITIVES)
def test_every_op_keeps_or_halves_the_shape(name: str, dim: int) -> None:
    torch.manual_seed(0)
    for stride, size, expected in [(1, 12, 12), (2, 12, 6), (2, 7, 4)]:
        op = OPS[name](8, stride, dim, True)
        out = op(torch.randn(2, 8, *spatial(dim, size)))
        assert out.shape == (2, 8, *spatial(dim, expected)), (name, stride, size)
    if name == "none":
        assert not out.any()


# ------------------------------------------------------------------------------------------- mixed edge


def test_channel_shuffle_interleaves_groups() -> None:
    x = torch.arange(8.0).view(1, 8, 1)
    assert channel_shuffle(x, 4).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]


def test_edge_weights_select_ops_and_pc_darts_bypasses_channels() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6, 6)
    plain = MixedOp(8, 1, 2, k=1)
    assert not plain(x, one_hot("none")).any()
    torch.testing.assert_close(plain(x, one_hot("skip_connect")), x)
    partial = MixedOp(8, 1, 2, k=4)
    out = partial(x, one_hot("none"))
    # Channels 0-1 went through the ops (zero), 2-7 bypassed them, then the channel shuffle.
    shuffled = channel_shuffle(torch.cat([torch.zeros_like(x[:, :2]), x[:, 2:]], dim=1), 4)
    torch.testing.assert_close(out, shuffled)
    assert (out == 0).all(dim=(0, 2, 3)).sum() == 2
    assert sum(p.numel() for p in partial.parameters()) < sum(p.numel() for p in plain.parameters())


# ---------------------------------------------------------------------------------------------- supernet


@pytest.mark.parametrize(
    ("task", "size", "k"),
    [("cifar100", 12, 4), ("fsd50k", 12, 1), ("darcy", 10, 4), ("ecg", 24, 4), ("deepsea", 24, 1)],
)
def test_supernet_output_shapes_and_gradients(task: str, size: int, k: int) -> None:
    torch.manual_seed(0)
    spec = get_task(task)
    net = Supernet(spec, C=4, layers=3, k=k)
    x = sample_input(task, size)
    out = net(x)
    if spec.output_kind == "dense":
        assert out.shape == (2, spec.num_outputs, *spatial(spec.dim, size))
    else:
        assert out.shape == (2, spec.num_outputs)
    out.square().mean().backward()
    arch, weights = net.arch_parameters(), net.weight_parameters()
    assert {id(p) for p in arch}.isdisjoint(id(p) for p in weights)
    assert len(arch) + len(weights) == len(list(net.parameters()))
    assert len(arch) == (2 if spec.output_kind == "dense" else 4)  # dense tasks: no reduction cells
    for p in arch:
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(p.grad is not None for p in weights)
    assert sum(float(p.grad.abs().sum()) for p in weights) > 0


def test_edge_groups_cover_every_edge_once() -> None:
    edges = [_edge_index(s, t) for sources, nodes in _edge_groups() for s in sources for t in nodes]
    assert sorted(edges) == list(range(NUM_EDGES))
    # Edge order within a node is by input, nodes one after another, as in DARTS' cell loop.
    assert [_edge_index(s, t) for t in range(STEPS) for s in range(2 + t)] == list(range(NUM_EDGES))
    # A group may only read states that exist once the previous groups have run.
    for g, (sources, nodes) in enumerate(_edge_groups()):
        assert max(sources) <= 1 + g and min(nodes) == g


def _pair(task: str, k: int, layers: int, arch_norm: str = "softmax") -> tuple[Supernet, Supernet]:
    """A batched supernet and the loop on the same parameters, in float64 so that the only difference
    left (the order of floating-point sums) is far below the tolerance."""
    torch.manual_seed(0)
    spec = get_task(task)
    batched = Supernet(spec, C=8, layers=layers, k=k, arch_norm=arch_norm).double()
    with torch.no_grad():  # architecture weights far from uniform, so that a mixed-up edge or op shows
        for p in batched.arch_parameters():
            p.copy_(torch.rand_like(p) if arch_norm == "simplex" else 2 * torch.randn_like(p))
    loop = Supernet(spec, C=8, layers=layers, k=k, arch_norm=arch_norm, impl="loop").double()
    loop.load_state_dict(batched.state_dict())
    return batched, loop


@pytest.mark.parametrize(
    ("task", "size", "k", "layers"),
    [
        ("cifar100", 9, 4, 3),  # normal, reduction (odd size), reduction after a reduction
        ("cifar100", 8, 1, 3),  # plain DARTS edges
        ("ecg", 21, 4, 3),  # 1D
        ("ecg", 16, 1, 3),
        ("darcy", 7, 4, 2),  # dense: normal cells only, per-pixel output
    ],
)
def test_batched_supernet_equals_the_loop(task: str, size: int, k: int, layers: int) -> None:
    batched, loop = _pair(task, k, layers, "simplex" if k == 1 else "softmax")
    assert batched.state_dict().keys() == loop.state_dict().keys()
    assert any(cell.reduction for cell in batched.cells) == (task != "darcy")
    x = sample_input(task, size, batch=3).double()
    out_b, out_l = batched(x), loop(x)
    torch.testing.assert_close(out_b, out_l)
    out_b.sin().sum().backward()
    out_l.sin().sum().backward()
    grads_l = {name: p.grad for name, p in loop.named_parameters()}
    for name, p in batched.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, grads_l[name], msg=name)
    for p in batched.arch_parameters():  # compared above, and not trivially zero
        assert p.grad.abs().sum() > 0
    # Running statistics and batch counts: the same after the training-mode pass.
    state_l = loop.state_dict()
    for name, value in batched.state_dict().items():
        torch.testing.assert_close(value, state_l[name], msg=name)
    batched.eval()
    loop.eval()
    torch.testing.assert_close(batched(x), loop(x))


def test_batched_cell_rejects_an_unknown_implementation() -> None:
    with pytest.raises(ValueError, match="impl must be one of"):
        Supernet(get_task("ecg"), C=4, layers=1, k=4, impl="fused")  # type: ignore[arg-type]


def test_supernet_reduction_cells_and_simplex_weights() -> None:
    spec = get_task("cifar100")
    net = Supernet(spec, C=4, layers=6, k=4, arch_norm="simplex")
    assert [cell.reduction for cell in net.cells] == [False, False, True, False, True, False]
    torch.testing.assert_close(net.op_weights("normal"), torch.full((NUM_EDGES, 8), 1 / 8))
    # Per-node edge normalisation: node i's 2 + i incoming edges share weight 1.
    assert net.edge_weights("reduce").tolist()[:5] == pytest.approx([0.5, 0.5, 1 / 3, 1 / 3, 1 / 3])
    dense = Supernet(get_task("darcy"), C=4, layers=6, k=4)
    assert not any(cell.reduction for cell in dense.cells)
    with pytest.raises(ValueError, match="not divisible"):
        Supernet(spec, C=6, layers=3, k=4)


# ---------------------------------------------------------------------------------------------- genotype


def test_genotype_derivation_on_hand_set_weights() -> None:
    w = torch.full((NUM_EDGES, len(PRIMITIVES)), 0.01)
    w[:, PRIMITIVES.index("none")] = 0.9  # the strongest everywhere, but never selected
    # Node 0 (edges 0, 1): both kept. Node 1 (edges 2-4): inputs 2 and 0. Node 2 (5-8): 3 and 1.
    # Node 3 (9-13): inputs 4 and 3; its input-0 edge is nearly as strong.
    picks = {
        0: ("sep_conv_3", 0.5),
        1: ("max_pool_3", 0.4),
        2: ("dil_conv_5", 0.3),
        4: ("skip_connect", 0.6),
        6: ("avg_pool_3", 0.7),
        8: ("sep_conv_5", 0.8),
        9: ("dil_conv_3", 0.19),
        13: ("skip_connect", 0.25),
        12: ("sep_conv_3", 0.2),
    }
    for edge, (name, value) in picks.items():
        w[edge, PRIMITIVES.index(name)] = value
    cell = derive_cell(w)
    assert cell == [
        ("sep_conv_3", 0),
        ("max_pool_3", 1),
        ("skip_connect", 2),
        ("dil_conv_5", 0),
        ("sep_conv_5", 3),
        ("avg_pool_3", 1),
        ("skip_connect", 4),
        ("sep_conv_3", 3),
    ]
    # PC-DARTS edge weights multiply in: boosting node 3's input-0 edge makes it win over input 4.
    edge_w = torch.ones(NUM_EDGES)
    edge_w[9] = 2.0
    assert derive_cell(w, edge_w)[6:] == [("dil_conv_3", 0), ("skip_connect", 4)]
    genotype = derive_genotype(w, w, edge_w, None, dim=1, dense=False)
    assert genotype.reduce == cell and genotype.normal != cell and genotype.dim == 1


def test_supernet_genotype_and_json_round_trip(tmp_path: Path) -> None:
    net = Supernet(get_task("darcy"), C=4, layers=2, k=4)
    with torch.no_grad():
        net.arch["alphas_normal"][:, PRIMITIVES.index("dil_conv_5")] = 5.0
    genotype = net.genotype()
    assert genotype.dense and genotype.dim == 2 and genotype.reduce == []
    assert {op for op, _ in genotype.normal} == {"dil_conv_5"}
    assert Genotype.from_json(genotype.to_json()) == genotype
    genotype.save(tmp_path / "g.json")
    assert Genotype.load(tmp_path / "g.json") == genotype
    # Published genotypes with DARTS' 2D names are read into ours.
    v2 = Genotype.from_json(json.dumps(DARTS_V2))
    assert v2.normal[0] == ("sep_conv_3", 0) and v2.reduce[0] == ("max_pool_3", 0) and v2.dim is None
    with pytest.raises(ValueError, match="cannot take input"):
        Genotype(normal=[("skip_connect", 2)] * 8, normal_concat=[2, 3, 4, 5])
    with pytest.raises(KeyError, match="unknown DARTS operation"):
        Genotype(normal=[("conv_7x7", 0)] * 8, normal_concat=[2, 3, 4, 5])


@pytest.mark.parametrize(("dim", "dense"), [(2, False), (1, False), (2, True)])
def test_sample_genotype_is_a_valid_random_architecture(dim: int, dense: bool) -> None:
    genotypes = [sample_genotype(np.random.default_rng(seed), dim=dim, dense=dense) for seed in range(300)]
    ops, inputs = Counter(), Counter()
    for g in genotypes:
        assert (g.dim, g.dense) == (dim, dense)
        assert Genotype.from_json(g.to_json()) == g  # valid: the constructor checks ops and inputs
        assert (g.reduce == []) == dense and (g.reduce_concat == []) == dense
        for cell in [g.normal] + ([] if dense else [g.reduce]):
            for node in range(STEPS):
                (op_a, a), (op_b, b) = cell[2 * node : 2 * node + 2]
                assert 0 <= a < b < 2 + node  # two distinct inputs of the node
                ops.update([op_a, op_b])
                inputs[(node, a, b)] += 1
    assert set(ops) == set(PRIMITIVES) - {"none"}
    assert len(inputs) == sum((2 + i) * (1 + i) // 2 for i in range(STEPS))  # every pair of every node
    # Deterministic for a seed, different across seeds.
    assert sample_genotype(np.random.default_rng(7), dim=dim, dense=dense) == genotypes[7]
    assert len({g.to_json() for g in genotypes}) == len(genotypes)


# ---------------------------------------------------------------------------------------------- darts_eval


@pytest.mark.parametrize(("task", "size"), [("cifar100", 12), ("cosmic", 10), ("satellite", 23)])
def test_darts_eval_from_a_genotype_file(task: str, size: int, tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = get_task(task)
    genotype = Supernet(spec, C=4, layers=3, k=4).genotype()
    path = tmp_path / "genotype.json"
    genotype.save(path)
    model = create_model("darts_eval", spec, genotype=str(path), layers=4, channels=4, drop_path=0.2)
    assert isinstance(model, DartsEvalNetwork)
    x = sample_input(task, size)
    out = model(x)
    expected = (
        (spec.num_outputs, *spatial(spec.dim, size)) if spec.output_kind == "dense" else (spec.num_outputs,)
    )
    assert out.shape == (2, *expected)
    out.mean().backward()
    model.eval()
    torch.testing.assert_close(model(x), model(x))  # no drop-path at evaluation


def test_darts_eval_checks_the_genotype_kind() -> None:
    point = Genotype.from_json(json.dumps({**DARTS_V2, "dim": 2, "dense": False}))
    with pytest.raises(ValueError, match="1D"):
        darts_eval(get_task("ecg"), genotype=point)
    with pytest.raises(ValueError, match="point task"):
        darts_eval(get_task("darcy"), genotype=point)
    dense_only = dataclasses.replace(point, reduce=[], reduce_concat=[], dense=None)
    with pytest.raises(ValueError, match="reduction cell"):
        darts_eval(get_task("cifar100"), genotype=dense_only)
    assert darts_eval(get_task("darcy"), genotype=dense_only, layers=2, channels=4) is not None


def test_darts_v2_parameter_count_on_cifar100() -> None:
    model = darts_eval(get_task("cifar100"), genotype=Genotype.from_json(json.dumps(DARTS_V2)))
    n_params = sum(p.numel() for p in model.parameters())
    head = model.head
    assert isinstance(head, nn.Linear) and head.in_features == 576
    print(f"DARTS-V2, 20 cells, C=36, CIFAR-100: {n_params:,} parameters")
    # DARTS reports ~3.3M for CIFAR-10 (auxiliary head excluded); CIFAR-100's head adds 576 * 90 weights.
    cifar10 = n_params - 90 * 577
    assert 3.3e6 <= cifar10 <= 3.4e6
    assert 3.35e6 <= n_params <= 3.45e6
