"""The DenseNAS search space (layout, supernet, FLOPs estimate, derivation, architectures, random sampling)
and the ``densenas_net`` evaluation network."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nb360.models.densenas_net as densenas_net_module  # registers "densenas_net"
from nb360.models import create_model
from nb360.models.densenas_net import DenseNASNet, arch_params, densenas_net
from nb360.search.densenas_space import (
    STACK_OPS,
    ArchBlock,
    DenseArch,
    DenseSupernet,
    SpaceLayout,
    arch_flops,
    arch_param_count,
    build_layout,
    densenas_objective,
    sample_arch,
)
from nb360.tasks import get_task

# A small 2-stage space: nodes 0 (stem), 1-2 (stage 1), 3-4 (stage 2), 5 (tail).
SMALL = {"widths": ((4, 6), (8, 10)), "layers_per_block": 1, "connect": 3}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def hook_flops(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """MFLOPs of one input, counted by forward hooks on every convolution and linear layer (weights only):
    an implementation independent of the analytic formulas."""
    total = 0

    def hook(m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Linear):
            total += m.in_features * m.out_features * out.shape[0]
        else:
            total += out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d)
    ]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    for h in handles:
        h.remove()
    return total / 1e6


def random_path(layout: SpaceLayout, rng: np.random.Generator) -> list[int]:
    path = [0]
    while path[-1] != layout.tail:
        succ = layout.out_edges[path[-1]]
        path.append(succ[rng.integers(len(succ))])
    return path


def set_one_hot(net: DenseSupernet, path: list[int], ops: dict[int, list[int]]) -> None:
    """Arch logits +-1e4: node ``path[n]`` goes to ``path[n+1]``, block ``j``'s layers pick ``ops[j]``; logits
    off the path stay random (their weight is then exactly 0)."""
    lay = net.layout
    with torch.no_grad():
        for a, b in itertools.pairwise(path):
            if len(lay.out_edges[a]) == 1:  # a single successor has no betas
                continue
            betas = torch.full((len(lay.out_edges[a]),), -1e4)
            betas[lay.slot(a, b)] = 1e4
            net.arch[f"betas_{a}"].copy_(betas)
        for j, chosen in ops.items():
            alphas = torch.full((lay.layers[j], len(STACK_OPS)), -1e4)
            alphas[torch.arange(len(chosen)), torch.tensor(chosen)] = 1e4
            net.arch[f"alphas_{j}"].copy_(alphas)


# ------------------------------------------------------------------------------------------- layout


def test_layout_connects_the_next_blocks_of_the_same_or_next_stage() -> None:
    lay = build_layout(get_task("cifar100"), **SMALL)
    assert lay.widths == (32, 4, 6, 8, 10, 10) and lay.stages == (0, 1, 1, 2, 2, 3)
    # The stem cannot skip stage 1; block 1 reaches 3 blocks ahead; block 3 reaches the tail.
    assert lay.out_edges == ((1, 2), (2, 3, 4), (3, 4), (4, 5), (5,), ())
    assert lay.in_edges[5] == (3, 4) and lay.in_edges[3] == (1, 2)
    assert [lay.edge_stride(i, j) for i, j in [(0, 1), (1, 2), (1, 3), (2, 4), (3, 4), (4, 5)]] == [
        2,
        1,
        2,
        2,
        1,
        1,
    ]
    # 32x32 -> stem 16 -> stage 1 at 8 -> stage 2 at 4 -> tail 4.
    assert lay.sizes == ((16, 16), (8, 8), (8, 8), (4, 4), (4, 4), (4, 4))
    assert build_layout(get_task("cifar100"), **{**SMALL, "connect": 1}).out_edges[1] == (2,)


def test_default_spaces_per_kind_of_task() -> None:
    cifar = build_layout(get_task("cifar100"))
    assert cifar.widths[:4] == (32, 48, 56, 64) and cifar.widths[-1] == 512 and cifar.stem_stride == 2
    assert cifar.sizes[-1] == (2, 2)  # the official CIFAR feature-map sizes 16, 8, 4, 2
    ecg = build_layout(get_task("ecg"))
    assert ecg.dim == 1 and ecg.widths[-1] == 224 and ecg.sizes[-1] == (63,)
    darcy = build_layout(get_task("darcy"))
    assert darcy.dense and set(darcy.sizes) == {(85, 85)} and darcy.widths[-1] == 112
    half = build_layout(get_task("cifar100"), width_mult=0.5)
    assert half.widths[:4] == (16, 24, 28, 32)


def test_layout_rejects_bad_settings() -> None:
    cifar, darcy = get_task("cifar100"), get_task("darcy")
    with pytest.raises(ValueError, match="every stride must be 1"):
        build_layout(darcy, strides=(2, 1))
    with pytest.raises(ValueError, match="one entry per stage"):
        build_layout(cifar, widths=((4,), (8,)), strides=(2,))
    with pytest.raises(ValueError, match="connect"):
        build_layout(cifar, connect=0)
    with pytest.raises(ValueError, match="layers_per_block"):
        build_layout(cifar, widths=((4,), (8,)), layers_per_block=(1, 2, 3))


# ------------------------------------------------------------------------------------------ supernet


@pytest.mark.parametrize(
    ("task", "out_shape"),
    [("cifar100", (2, 100)), ("darcy", (2, 1, 85, 85)), ("ecg", (2, 4))],
)
def test_supernet_and_derived_network_output_shapes(task: str, out_shape: tuple[int, ...]) -> None:
    spec = get_task(task)
    net = DenseSupernet(spec, width_mult=0.125, layers_per_block=1)
    x = torch.randn(2, *spec.input_shape)
    assert net(x).shape == out_shape
    assert net(x, sample_ops=True).shape == out_shape
    eval_net = densenas_net(spec, arch=net.derive())
    assert eval_net(x).shape == out_shape


def test_arch_and_weight_parameters_split_all_parameters() -> None:
    net = DenseSupernet(get_task("cifar100"), **SMALL)
    arch, weights = net.arch_parameters(), net.weight_parameters()
    assert {id(p) for p in arch}.isdisjoint(id(p) for p in weights)
    assert len(arch) + len(weights) == len(list(net.parameters()))
    names = {n for n, p in net.named_parameters() if any(p is a for a in arch)}
    # betas for the nodes with several successors (stem, blocks 1-3), alphas for the four blocks; all saved
    # with the weights.
    assert len(arch) == 8 and all(n.startswith("arch.") for n in names)
    assert names <= set(net.state_dict())


def test_gradients_reach_arch_and_weight_parameters_separately() -> None:
    spec = get_task("cifar100")
    net = DenseSupernet(spec, **SMALL)
    x, y = torch.randn(4, *spec.input_shape), torch.randint(0, 100, (4,))

    F.cross_entropy(net(x), y).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.arch_parameters())
    assert all(p.grad is not None for p in net.weight_parameters())

    net.zero_grad(set_to_none=True)
    net.expected_flops().backward()  # the FLOPs term reaches the arch weights only
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.arch_parameters())
    assert all(p.grad is None for p in net.weight_parameters())

    net.zero_grad(set_to_none=True)
    F.cross_entropy(net(x, sample_ops=True), y).backward()  # weight step: one sampled op per layer
    assert all(net.arch[k].grad is None for k in net.arch if k.startswith("alphas_"))
    assert all(net.arch[k].grad is not None for k in net.arch if k.startswith("betas_"))


def test_sampled_forward_runs_the_drawn_op() -> None:
    spec = get_task("cifar100")
    net = DenseSupernet(spec, **SMALL).eval()
    x = torch.randn(2, *spec.input_shape)
    path, ops = [0, 1, 3, 5], {1: [0], 2: [0], 3: [1], 4: [1]}
    set_one_hot(net, path, ops)
    # Alphas at +-1e4 make the draw certain, and the mixture equals the chosen op.
    torch.testing.assert_close(net(x, sample_ops=True), net(x))


def test_weight_step_samples_ops_from_the_alpha_softmax() -> None:
    net = DenseSupernet(get_task("cifar100"), **SMALL)
    logits = {1: [math.log(0.8), math.log(0.2)], 2: [0.0, 0.0], 3: [-1e4, 1e4], 4: [1e4, -1e4]}
    with torch.no_grad():
        for j, row in logits.items():
            net.arch[f"alphas_{j}"].copy_(torch.tensor([row]))
    gen = torch.Generator().manual_seed(0)
    draws = [net._sample_ops(gen) for _ in range(2000)]
    share = {j: np.mean([d[j][0] == 0 for d in draws]) for j in logits}  # how often basic_block
    assert share[1] == pytest.approx(0.8, abs=0.03) and share[2] == pytest.approx(0.5, abs=0.03)
    assert share[3] == 0.0 and share[4] == 1.0


# ------------------------------------------------------------------------------------- FLOPs and loss


@pytest.mark.parametrize(("task", "seed"), [("cifar100", 0), ("cifar100", 1), ("ecg", 2), ("darcy", 3)])
def test_expected_flops_at_one_hot_weights_are_the_derived_networks_flops(task: str, seed: int) -> None:
    spec = get_task(task)
    torch.manual_seed(seed)
    net = DenseSupernet(spec, width_mult=0.125, layers_per_block=2)
    rng = np.random.default_rng(seed)
    path = random_path(net.layout, rng)
    ops = {j: list(rng.integers(2, size=2)) for j in path[1:-1]}
    set_one_hot(net, path, ops)
    arch = net.derive()
    assert [b.width for b in arch.blocks] == [net.layout.widths[j] for j in path[1:-1]]
    assert [list(b.ops) for b in arch.blocks] == [[STACK_OPS[k] for k in ops[j]] for j in path[1:-1]]
    measured = hook_flops(densenas_net(spec, arch=arch), spec.input_shape)
    assert net.expected_flops().item() == pytest.approx(measured, rel=1e-5)
    assert arch_flops(arch, spec.input_shape, spec.num_outputs) == pytest.approx(measured, rel=1e-12)


def test_expected_flops_is_the_mean_over_all_architectures() -> None:
    spec = get_task("cifar100")
    torch.manual_seed(0)
    net = DenseSupernet(spec, **SMALL)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_()
    with torch.no_grad():
        lay, pw, ow = net.layout, net.path_weights(), net.op_weights()
    paths = [[0]]
    while any(p[-1] != lay.tail for p in paths):
        paths = [[*p, j] for p in paths for j in lay.out_edges[p[-1]]] + [
            p for p in paths if p[-1] == lay.tail
        ]
        paths = [p for p in paths if p[-1] == lay.tail or lay.out_edges[p[-1]]]
    assert len(paths) == 9  # N(j) = sum of N over successors: N(4) = 1, N(3) = 2, N(2) = 3, N(1) = 6
    total, mass = 0.0, 0.0
    for path in paths:
        p_path = math.prod(float(pw[a][lay.slot(a, b)]) for a, b in itertools.pairwise(path))
        for choice in itertools.product(range(2), repeat=len(path) - 2):
            p_ops = math.prod(float(ow[j][0, k]) for j, k in zip(path[1:-1], choice, strict=True))
            arch = lay.to_arch(path, [[STACK_OPS[k]] for k in choice])
            total += p_path * p_ops * arch_flops(arch, spec.input_shape, spec.num_outputs)
            mass += p_path * p_ops
    assert mass == pytest.approx(1.0)
    assert net.expected_flops().item() == pytest.approx(total, rel=1e-5)


def test_skip_reg_prices_skip_layers_at_a_tenth_of_a_basic_block() -> None:
    spec = get_task("cifar100")
    net = DenseSupernet(spec, **SMALL)
    set_one_hot(net, [0, 2, 4, 5], {2: [1], 4: [1]})  # both layers skip
    plain, reg = net.expected_flops().item(), net.expected_flops(skip_reg=True).item()
    # Block 2: width 6 at 8x8, block 4: width 10 at 4x4; a basic block is two 3x3 convolutions.
    expected = 0.1 * (2 * 9 * 6 * 6 * 64 + 2 * 9 * 10 * 10 * 16) / 1e6
    assert reg - plain == pytest.approx(expected, rel=1e-4)


def test_densenas_objective_adds_the_log_flops_term() -> None:
    ce = torch.tensor(1.0)
    assert float(densenas_objective(ce, torch.tensor(3500.0))) == pytest.approx(1.2)
    assert float(densenas_objective(ce, torch.tensor(3500.0**2), factor=0.5)) == pytest.approx(2.0)
    assert float(densenas_objective(ce, torch.tensor(100.0), log_base=10.0)) == pytest.approx(1.4)


# ---------------------------------------------------------------------------------------- derivation


def test_derive_takes_the_most_probable_path_not_the_greedy_one() -> None:
    net = DenseSupernet(get_task("cifar100"), **SMALL)
    probs = {  # successor probabilities per node (out_edges order)
        0: [0.6, 0.4],  # greedy goes to block 1 ...
        1: [0.34, 0.33, 0.33],  # ... which spreads its weight,
        2: [0.9, 0.1],  # while block 2 -> 3 is nearly certain: 0.4 * 0.9 > 0.6 * 0.34
        3: [0.2, 0.8],
    }
    with torch.no_grad():
        for i, p in probs.items():
            net.arch[f"betas_{i}"].copy_(torch.tensor(p).log())
        for j, layer_logits in {1: [1, 0], 2: [0, 3], 3: [2, -1], 4: [5, 4]}.items():
            net.arch[f"alphas_{j}"].copy_(torch.tensor([layer_logits], dtype=torch.float))
    arch = net.derive()
    # Best path 0 -> 2 -> 3 -> 5 (0.4 * 0.9 * 0.8 = 0.288) beats 0 -> 2 -> 3 -> 4 -> 5 (0.072) and every path
    # through block 1 (at most 0.6 * 0.34 * 0.9 * 0.8 = 0.147), among them the greedy 0 -> 1 -> 2 -> 3 -> 5.
    assert [(b.width, b.stride) for b in arch.blocks] == [(6, 2), (8, 2)]
    assert [b.ops for b in arch.blocks] == [("skip",), ("basic_block",)]
    assert (arch.stem_width, arch.stem_stride, arch.dim, arch.dense) == (32, 2, 2, False)


def test_derived_architecture_of_a_dense_task_keeps_resolution() -> None:
    arch = DenseSupernet(get_task("darcy"), width_mult=0.125).derive()
    assert arch.dense and arch.stem_stride == 1 and all(b.stride == 1 for b in arch.blocks)


# ------------------------------------------------------------------------------------ architectures


def test_arch_json_round_trip(tmp_path) -> None:
    arch = DenseArch(
        dim=1,
        dense=False,
        stem_width=8,
        stem_stride=2,
        blocks=(ArchBlock(12, 2, ("basic_block", "skip")), ArchBlock(16, 1, ("skip",))),
    )
    assert DenseArch.from_json(arch.to_json()) == arch
    arch.save(tmp_path / "a.json")
    assert DenseArch.load(tmp_path / "a.json") == arch
    assert json.loads((tmp_path / "a.json").read_text()) == {
        "dim": 1,
        "dense": False,
        "stem": {"width": 8, "stride": 2},
        "blocks": [
            {"width": 12, "stride": 2, "ops": ["basic_block", "skip"]},
            {"width": 16, "stride": 1, "ops": ["skip"]},
        ],
    }
    assert arch.summary() == "depth 4: stem 8/2 > 12/2 bs > 16/1 s" and arch.depth == 4
    official = arch.to_dict()
    official["blocks"][1]["ops"] = ["skip_connect"]  # the official name is read as ours
    assert DenseArch.from_dict(official) == arch


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(dim=3), "dim must be 1 or 2"),
        (lambda d: d.update(dense=1), "dense must be true or false"),
        (lambda d: d.update(blocks=[]), "at least one block"),
        (lambda d: d["blocks"][0].update(stride=3), "block 0 stride must be 1 or 2"),
        (lambda d: d["blocks"][1].update(width=0), "block 1 width must be a positive int"),
        (lambda d: d["stem"].update(width=8.5), "stem width must be a positive int"),
        (lambda d: d["blocks"][0].update(stride=2.0), "block 0 stride must be 1 or 2"),
        (lambda d: d["blocks"][0].update(ops=["conv"]), "unknown DenseNAS stacked-layer op 'conv'"),
        (lambda d: d.update(dense=True), "keeps its resolution; stem has stride 2"),
        (lambda d: d.pop("stem"), "not a DenseNAS architecture"),
        (lambda d: d.update(genotype=[]), "unknown keys"),
    ],
)
def test_arch_validation_errors(change, message: str) -> None:
    d = DenseArch(2, False, 8, 2, (ArchBlock(8, 2, ("skip",)), ArchBlock(8, 1, ()))).to_dict()
    change(d)
    with pytest.raises(ValueError, match=message):
        DenseArch.from_dict(d)


def test_load_names_the_file(tmp_path) -> None:
    (tmp_path / "bad.json").write_text('{"dim": 2}')
    with pytest.raises(ValueError, match=r"bad\.json: not a DenseNAS architecture"):
        DenseArch.load(tmp_path / "bad.json")


# ----------------------------------------------------------------------------- evaluation network


@pytest.mark.parametrize("task", ["cifar100", "darcy", "ecg", "satellite"])
def test_eval_network_parameters_and_flops_match_the_formulas(task: str) -> None:
    spec = get_task(task)
    rng = np.random.default_rng(0)
    for _ in range(3):
        arch = sample_arch(spec, rng, max_params=None, width_mult=0.125)
        net = densenas_net(spec, arch=arch)
        assert (
            n_params(net)
            == arch_params(spec, arch)
            == arch_param_count(arch, *spec.input_shape[:1], spec.num_outputs)
        )
        assert hook_flops(net, spec.input_shape) == pytest.approx(
            arch_flops(arch, spec.input_shape, spec.num_outputs)
        )


def test_eval_network_drops_skip_layers_and_has_no_tail_conv() -> None:
    spec = get_task("cifar100")
    arch = DenseArch(2, False, 8, 2, (ArchBlock(12, 2, ("skip", "basic_block", "skip")),))
    net = DenseNASNet(arch, 3, 100)
    assert len(net.blocks[0]) == 2  # the head and one basic block
    assert isinstance(net.head, nn.Linear) and net.head.in_features == 12
    assert densenas_net(spec, arch=arch, width_mult=0.5).head.in_features == 6


def test_registry_builds_from_a_json_file(tmp_path) -> None:
    spec = get_task("ecg")
    arch = sample_arch(spec, np.random.default_rng(1), max_params=None, width_mult=0.125)
    arch.save(tmp_path / "arch.json")
    net = create_model("densenas_net", spec, arch=str(tmp_path / "arch.json"))
    assert n_params(net) == arch_params(spec, arch)
    assert net(torch.randn(2, 1, 1000)).shape == (2, 4)
    assert densenas_net_module.densenas_net is densenas_net


def test_kind_mismatch_errors() -> None:
    point1d = sample_arch(get_task("ecg"), np.random.default_rng(0), max_params=None, width_mult=0.125)
    dense = DenseSupernet(get_task("darcy"), width_mult=0.125).derive()
    point2d = sample_arch(get_task("cifar100"), np.random.default_rng(0), max_params=None, width_mult=0.125)
    with pytest.raises(ValueError, match="searched on a 1D task; 'cifar100' is 2D"):
        densenas_net(get_task("cifar100"), arch=point1d)
    with pytest.raises(ValueError, match="searched on a dense task; 'cifar100' is single_label"):
        densenas_net(get_task("cifar100"), arch=dense)
    with pytest.raises(ValueError, match="searched on a point task; 'darcy' is dense"):
        arch_params(get_task("darcy"), point2d)
    densenas_net(get_task("spherical"), arch=point2d)  # any point 2D task takes a point 2D architecture


# ------------------------------------------------------------------------------------ random sampling


def test_sample_arch_respects_the_cap_and_is_deterministic() -> None:
    spec = get_task("cifar100")
    free = [sample_arch(spec, np.random.default_rng(s), max_params=None, width_mult=0.25) for s in range(20)]
    sizes = sorted(arch_params(spec, a) for a in free)
    cap = sizes[len(sizes) // 2]  # about half the draws exceed it
    rng = np.random.default_rng(7)
    capped = [sample_arch(spec, rng, max_params=cap, width_mult=0.25) for _ in range(10)]
    assert all(arch_params(spec, a) <= cap for a in capped)
    assert len(set(capped)) > 1
    again = np.random.default_rng(7)
    assert [sample_arch(spec, again, max_params=cap, width_mult=0.25) for _ in range(10)] == capped
    # Samples lie in the same space as the supernet's.
    widths = set(build_layout(spec, width_mult=0.25).widths)
    assert all(b.width in widths for a in capped for b in a.blocks)


def test_sample_arch_below_the_smallest_architecture_is_an_error() -> None:
    spec = get_task("cifar100")
    lay = build_layout(spec, width_mult=0.25)
    smallest = lay.min_params()
    with pytest.raises(ValueError, match="below the smallest architecture"):
        sample_arch(spec, np.random.default_rng(0), max_params=smallest - 1, width_mult=0.25)
    # The bound is tight: the all-skip architecture along the cheapest path has exactly that many.
    free = [sample_arch(spec, np.random.default_rng(s), max_params=None, width_mult=0.25) for s in range(50)]
    assert min(arch_params(spec, a) for a in free) >= smallest
