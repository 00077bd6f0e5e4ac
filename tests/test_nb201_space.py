"""The NB201 cell space: the official index order (nb201.md 6.1 check values) and arch strings."""

import pytest

from nb360.nb201 import space

CHECK = {
    0: "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    1: "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    9: "|avg_pool_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|",
    123: "|avg_pool_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|",
    15624: "|nor_conv_1x1~0|+|none~0|nor_conv_1x1~1|+|none~0|nor_conv_1x1~1|nor_conv_1x1~2|",
}


def test_index_order_matches_the_official_check_values():
    strings = space.arch_strings()
    assert len(strings) == len(set(strings)) == space.NUM_ARCHS == 15625
    assert space.order_digest() == space.ORDER_SHA256
    space.check_order()
    for index, text in CHECK.items():
        assert strings[index] == text and space.index_of(text) == index


def test_strings_round_trip_and_bad_strings_say_why():
    for index in (0, 9, 123, 7777, 15624):
        ops = space.arch_of(index)
        assert len(ops) == 6 and space.to_str(ops) == CHECK.get(index, space.arch_strings()[index])
        assert space.index_of(ops) == index
    assert space.arch_of(9)[:3] == ("avg_pool_3x3", "none", "none")  # edges 0->1, 0->2, 1->2
    with pytest.raises(ValueError, match="3 nodes"):
        space.parse("|none~0|")
    with pytest.raises(ValueError, match="conv_5x5~0"):
        space.index_of(CHECK[0].replace("avg_pool_3x3~0", "conv_5x5~0", 1))
    with pytest.raises(ValueError, match="node 2 has 1 input edges"):
        space.parse("|none~0|+|none~0|+|none~0|none~1|none~2|")
    with pytest.raises(IndexError, match="15625"):
        space.arch_of(15625)
