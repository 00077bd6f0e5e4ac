"""Auto-DeepLab's network-level space: the transition weights' normalisation and the decoding of the most
probable path by dynamic programming, against hand-made cases and against enumerating every path."""

import itertools
import math

import numpy as np
import pytest
import torch

from nb360.search.autodeeplab_space import (
    LAYERS,
    LEVELS,
    STEPS,
    decode_path,
    normalize_betas,
    path_log_prob,
    reachable,
)
from nb360.search.darts_space import PRIMITIVES, derive_cell


def test_normalisation_is_over_the_moves_that_exist():
    w = normalize_betas(torch.zeros(LAYERS, LEVELS, 3))
    assert torch.allclose(w.sum(-1), torch.ones(LAYERS, LEVELS))
    assert (w[:, 0, 0] == 0).all() and (w[:, -1, 2] == 0).all()
    assert torch.allclose(w[0, 0], torch.tensor([0.0, 0.5, 0.5]))
    assert torch.allclose(w[0, 1], torch.full((3,), 1 / 3))


def test_reachable_levels_grow_one_per_layer():
    assert [list(reachable(i)) for i in range(4)] == [[0, 1], [0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3]]


def test_a_path_that_goes_down_then_stays():
    """Strong "coarser" weights in the first three layers, "stay" after: down to 1/32 and along it."""
    betas = torch.zeros(LAYERS, LEVELS, 3)
    betas[:3, :, 2] = 5.0
    betas[3:, :, 1] = 5.0
    path = decode_path(normalize_betas(betas))
    assert path == [1, 2, 3] + [3] * (LAYERS - 3)


def test_dynamic_programming_beats_the_greedy_choice():
    """Going coarser first is the greedy choice (0.6 against 0.4) but leads into levels that only lose
    afterwards; the decoder stays at level 0, as the best path's product says."""
    w = np.zeros((3, 2, 3))
    w[0, 0] = [0, 0.4, 0.6]
    w[1:, 0] = [0, 1.0, 0.0]
    w[1:, 1] = [0.1, 0.1, 0.0]  # level 1 keeps little probability whatever it does
    path = decode_path(w)
    assert path == [0, 0, 0]
    greedy = [1]
    for layer in (1, 2):
        greedy.append(greedy[-1] + int(np.argmax(w[layer, greedy[-1]])) - 1)
    assert path_log_prob(w, path) > path_log_prob(w, greedy)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decoding_equals_enumerating_every_path(seed):
    layers = 7  # 2 x 3^6 paths, enumerated
    gen = torch.Generator().manual_seed(seed)
    w = normalize_betas(torch.randn(layers, LEVELS, 3, generator=gen) * 2).numpy()
    paths = [p for p in itertools.product(range(LEVELS), repeat=layers) if math.isfinite(path_log_prob(w, p))]
    best = max(path_log_prob(w, p) for p in paths)
    path = decode_path(w)
    assert path_log_prob(w, path) == pytest.approx(best)


def test_impossible_paths_have_no_probability():
    w = normalize_betas(torch.zeros(LAYERS, LEVELS, 3))
    assert path_log_prob(w, [2] + [2] * (LAYERS - 1)) == -math.inf  # the stem is at level 0
    assert path_log_prob(w, [0, 1, 3] + [3] * (LAYERS - 3)) == -math.inf  # one level per layer at most
    with pytest.raises(ValueError, match="no path"):
        decode_path(np.zeros((2, LEVELS, 3)))


def test_five_node_cells_decode_with_the_darts_rule():
    """Auto-DeepLab's cells are DARTS cells of 5 nodes (20 edges): two inputs per node, never "none"."""
    weights = torch.softmax(torch.randn(20, len(PRIMITIVES), generator=torch.Generator().manual_seed(0)), -1)
    cell = derive_cell(weights, steps=STEPS)
    assert len(cell) == 2 * STEPS and all(op != "none" for op, _ in cell)
    assert all(j < 2 + i for i in range(STEPS) for _, j in cell[2 * i : 2 * i + 2])
    with pytest.raises(ValueError, match="a cell of 4 nodes has 14"):
        derive_cell(weights)


def test_padding_to_a_power_of_two_and_cropping_back():
    from nb360.search.autodeeplab_space import crop_output, pad_input, padded_size

    assert [padded_size(n) for n in (20, 32, 85, 128, 129)] == [32, 32, 128, 128, 256]
    x = torch.arange(85 * 85, dtype=torch.float32).view(1, 1, 85, 85)
    padded, crop = pad_input(x)
    assert padded.shape == (1, 1, 128, 128)
    assert torch.equal(crop_output(padded, crop), x)  # the original's [22:-21] on Darcy


def test_supernet_outputs_every_pixel_and_trains_both_parameter_kinds():
    """A 2-layer search network on Darcy's 85 x 85 inputs: per-pixel outputs at the input's size, gradients
    on the cells' weights and on both kinds of architecture parameters, and a decodable architecture."""
    from nb360.search.autodeeplab_space import Supernet

    torch.manual_seed(0)
    net = Supernet(3, 1, filters=2, layers=2)
    out = net(torch.randn(2, 3, 85, 85))
    assert out.shape == (2, 1, 85, 85)
    out.square().mean().backward()
    assert net.alphas.grad.abs().sum() > 0 and net.betas.grad[:, :2].abs().sum() > 0
    assert set(map(id, net.weight_parameters())).isdisjoint(map(id, net.arch_parameters()))
    path, cell = net.decode()
    assert len(path) == 2 and path[0] in (0, 1) and abs(path[1] - path[0]) <= 1
    assert len(cell) == 2 * STEPS
    # layer 1 has cells at levels 0..2, fed from the levels of layer 0 one step away
    assert sorted(k for k in net.cells if k.startswith("1_")) == ["1_0_0", "1_0_1", "1_1_0", "1_1_1", "1_2_1"]


def test_search_cells_run_batched_as_the_darts_loop():
    """The search network's cells run as the DARTS space's batched cell (5 nodes); in float64, outputs and
    every gradient equal those of the edge-by-edge loop on the same parameters."""
    from nb360.search.autodeeplab_space import Supernet

    nets = []
    for _ in range(2):
        torch.manual_seed(0)
        nets.append(Supernet(3, 1, filters=2, layers=3).double())
    assert {c.impl for c in nets[1].cells.values()} == {"batched"}  # the default
    for cell in nets[0].cells.values():
        cell.impl = "loop"
    x = torch.randn(2, 3, 40, 40, dtype=torch.float64)
    outs = [net(x) for net in nets]
    for out in outs:
        out.square().sum().backward()
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-10, atol=1e-12)
    grads = [{n: p.grad for n, p in net.named_parameters() if p.grad is not None} for net in nets]
    assert grads[0].keys() == grads[1].keys() and {"alphas", "betas"} <= grads[0].keys()
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-9, atol=1e-11, msg=name)
