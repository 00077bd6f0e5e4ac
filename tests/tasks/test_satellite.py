import numpy as np

from nb360.data.rawfolder import RawFolder
from nb360.tasks import get_task
from nb360.tasks.satellite import EMBEDDED_TEST, EMBEDDED_TRAIN


def test_reader_shapes_splits_and_normalisation(embedded):
    splits = embedded.read("satellite")
    assert {k: len(v) for k, v in splits.items()} == {
        "train": EMBEDDED_TRAIN - EMBEDDED_TEST,
        "val": EMBEDDED_TEST,
        "test": EMBEDDED_TEST,
    }
    for data in splits.values():
        x, y = data.items["x"], data.items["y"]
        assert x.shape[1:] == (1, 46) and x.dtype == np.float32
        assert y.dtype == np.int64 and y.min() >= 0 and y.max() <= 23
        assert np.isfinite(x).all()
        # z-scored along time, one series at a time
        np.testing.assert_allclose(x.mean(axis=-1), 0, atol=1e-5)
        np.testing.assert_allclose(x.std(axis=-1), 1, atol=1e-3)
    assert len(np.unique(splits["train"].items["y"])) == 24


def test_validation_is_the_tail_of_the_training_file(embedded):
    raw = RawFolder.from_stamp(embedded.stamp("satellite"))
    obj = raw.load_npy("satellite_train.npy").item()
    splits = get_task("satellite").read_raw(raw)
    np.testing.assert_array_equal(splits["val"].items["y"], obj["label"][-EMBEDDED_TEST:] - 1)
