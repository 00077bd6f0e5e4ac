"""NB201 networks on NinaPro and Darcy (nb201.md 6.1): shapes on our shards' layouts, params and FLOPs."""

import pytest
import torch

from nb360.nb201 import networks, space
from nb360.tasks import get_task

ALL = {op: space.to_str((op,) * len(space.EDGES)) for op in space.OPS}


def _cell_params(c_in: int, c_out: int, op: str) -> int:
    """Hand count of one cell whose six edges all carry ``op`` (three edges leave node 0)."""
    conv_bn = {"nor_conv_3x3": 9, "nor_conv_1x1": 1}
    if op in conv_bn:
        k = conv_bn[op]
        return 3 * (k * c_in * c_out + 2 * c_out) + 3 * (k * c_out * c_out + 2 * c_out)
    if op in ("skip_connect", "avg_pool_3x3") and c_in != c_out:
        return 3 * (c_in * c_out + 2 * c_out)  # 1x1 conv + BN on each edge from node 0
    return 0


def _skeleton_params(c: int, classes: int = 18, in_channels: int = 1) -> int:
    """Stem, the two ResNet reduction blocks, last BN and the classifier of the NinaPro network."""
    stem = 9 * in_channels * c + 2 * c
    blocks = sum(9 * a * b + 2 * b + 9 * b * b + 2 * b + a * b for a, b in ((c, 2 * c), (2 * c, 4 * c)))
    return stem + blocks + 2 * 4 * c + 4 * c * classes + classes


def test_inputs_of_our_shards_give_the_expected_outputs():
    # Our tasks' per-sample shapes: NinaPro (1, 16, 52) (stored (N, 52, 16), transposed), Darcy (3, 85, 85).
    assert networks.INPUT_SHAPES["ninapro"] == get_task("ninapro").input_shape == (1, 16, 52)
    assert networks.INPUT_SHAPES["darcy"] == get_task("darcy").input_shape == (3, 85, 85)
    torch.manual_seed(0)
    for index in (0, 9, 123):
        nina = networks.build_network("ninapro", index, C=4, N=1)
        assert nina(torch.randn(3, 1, 16, 52)).shape == (3, 18)
        darcy = networks.build_network("darcy", index, C=2, N=1)
        out = darcy(torch.randn(2, 3, 85, 85))
        assert out.shape == (2, 1, 85, 85)  # the layout of our dense targets
        assert torch.isfinite(out).all()


def test_network_structure_follows_the_skeleton():
    nina = networks.build_network("ninapro", 0, C=16, N=5)
    kinds = [type(m).__name__ for m in nina.cells]
    assert (
        kinds
        == ["InferCell"] * 5
        + ["ResNetBasicBlock"]
        + ["InferCell"] * 5
        + ["ResNetBasicBlock"]
        + ["InferCell"] * 5
    )
    assert nina.stem[0].in_channels == 1 and nina.classifier.out_features == 18
    darcy = networks.build_network("darcy", 0, C=16, N=5)
    assert [type(m).__name__ for m in darcy.cells] == ["InferCell"] * 17
    assert [c.out_dim for c in darcy.cells] == [16] * 5 + [32] * 6 + [64] * 6
    assert darcy.classifier.in_features == 64 and darcy.classifier.out_features == 1
    # the arch's ops on the edges, in EDGES order (cell 0: avg_pool, conv1x1, skip, conv1x1, skip, skip)
    ops = [type(m).__name__ for m in nina.cells[0].layers]
    assert ops == ["Pool", "ReLUConvBN", "Identity", "ReLUConvBN", "Identity", "Identity"]
    transition = darcy.cells[5]  # 16 -> 32 at stride 1: pool pre-projected, skip a 1x1 conv + BN
    assert transition.layers[0].preprocess is not None and transition.layers[1].op[1].in_channels == 16


def test_full_size_parameter_counts_match_a_hand_count():
    c = 16
    for op, arch in ALL.items():
        model = networks.build_network("ninapro", arch, C=c, N=5)
        cells = sum(5 * _cell_params(w, w, op) for w in (c, 2 * c, 4 * c))
        assert networks.count_params(model) == pytest.approx((_skeleton_params(c) + cells) / 1e6, abs=1e-12)
    # the NB201 range on CIFAR-10 is 0.073 M (all none) to 1.53 M (all conv3x3); NinaPro differs by stem/head
    assert networks.count_params(networks.build_network("ninapro", ALL["none"])) == 0.073538
    assert networks.count_params(networks.build_network("ninapro", ALL["nor_conv_3x3"])) == 1.531778
    # Darcy: the transitions' edges from node 0 map C -> 2C
    darcy = networks.build_network("darcy", ALL["nor_conv_1x1"], C=c, N=5)
    widths = [(c, c)] * 5 + [(c, 2 * c)] + [(2 * c, 2 * c)] * 5 + [(2 * c, 4 * c)] + [(4 * c, 4 * c)] * 5
    cells = sum(_cell_params(a, b, "nor_conv_1x1") for a, b in widths)
    head = 9 * 3 * c + 2 * c + 2 * 4 * c + 4 * c + 1
    assert networks.count_params(darcy) == pytest.approx((cells + head) / 1e6, abs=1e-12)


def test_params_and_flops_order_and_grow_with_width():
    none, conv3 = ALL["none"], ALL["nor_conv_3x3"]
    for task in networks.TASKS:
        shape = networks.INPUT_SHAPES[task]
        small = networks.build_network(task, none, C=4, N=1)
        big = networks.build_network(task, conv3, C=4, N=1)
        assert networks.count_params(small) < networks.count_params(big)
        assert 0 < networks.count_flops(small, shape) < networks.count_flops(big, shape)
        wider = networks.build_network(task, conv3, C=8, N=1)
        assert networks.count_params(big) < networks.count_params(wider)
    model = networks.build_network("ninapro", 0, C=4, N=1).train()
    networks.count_flops(model, (1, 16, 52))
    assert model.training  # its mode is restored


def test_flops_of_a_known_layer_count():
    # all-none NinaPro at C=4, N=0: stem, two ResNet blocks, classifier; 2 FLOPs per multiply-add
    c, h, w = 4, 16, 52
    macs = 9 * 1 * c * h * w  # stem
    for a, b, (ho, wo) in ((c, 2 * c, (8, 26)), (2 * c, 4 * c, (4, 13))):
        macs += (9 * a * b + 9 * b * b + a * b) * ho * wo
    macs += 4 * c * 18
    model = networks.build_network("ninapro", ALL["none"], C=c, N=0)
    assert networks.count_flops(model, (1, h, w)) == pytest.approx(2 * macs / 1e6)


def test_bad_arguments_say_why():
    with pytest.raises(KeyError, match="ninapro"):
        networks.build_network("cifar100", 0)
    with pytest.raises(IndexError):
        networks.build_network("ninapro", space.NUM_ARCHS)
    with pytest.raises(ValueError, match="3 nodes"):
        networks.build_network("darcy", "|none~0|+|none~0|none~1|")
    with pytest.raises(ValueError, match="6 edges"):
        networks.InferCell(("none",) * 5, 4, 4)
    with pytest.raises(KeyError, match="unknown NB201 operation"):
        networks.make_op("max_pool_3x3", 4, 4)
