import io
import json
import logging
import pickle

import numpy as np
import pytest

from nb360.data.download import DownloadOptions
from nb360.data.pipeline import build_shards, fetch_real, generate_embedded
from nb360.data.rawfolder import LockFile, RawDataError, RawFolder
from nb360.data.safe_pickle import UnsafePickleError, safe_load, safe_load_npy
from tests.httpserver import FaultyServer

FAST = DownloadOptions(retries=1, backoff_s=0.01, timeout_s=5)
NAMES = ("satellite_train.npy", "satellite_test.npy")


@pytest.fixture(scope="module")
def satellite_files(tmp_path_factory, pypi_cache):
    """The embedded Satellite files, served as if they were the official ones."""
    root = tmp_path_factory.mktemp("sat")
    stamp = generate_embedded("satellite", root, seed=0, cache_dir=pypi_cache)
    return {f"satellite/{n}": (stamp.parent / n).read_bytes() for n in NAMES}


def test_download_records_the_lock_loudly_then_verifies(satellite_files, tmp_path, caplog):
    lock = tmp_path / "lock.json"
    with FaultyServer(satellite_files) as srv, caplog.at_level(logging.WARNING):
        stamp = fetch_real("satellite", tmp_path / "raw", lock, mirror=f"{srv.url}/good/", options=FAST)
    assert "FIRST COPY OF satellite/satellite_train.npy" in caplog.text
    recorded = LockFile(lock).read()
    assert set(recorded) == {f"satellite/{n}" for n in NAMES}
    assert json.loads(stamp.read_text())["source"] == "real"
    # A second machine fetching from a corrupt mirror is stopped by the lock.
    with FaultyServer(satellite_files) as srv, pytest.raises(RawDataError, match="missing") as e:
        fetch_real("satellite", tmp_path / "raw2", lock, mirror=f"{srv.url}/corrupt/", options=FAST)
    assert not (tmp_path / "raw2" / "satellite" / "satellite_train.npy").exists()
    assert "drive.google.com" in str(e.value)


def test_hand_placed_files_are_used_and_verified(satellite_files, tmp_path):
    folder = tmp_path / "raw" / "satellite"
    folder.mkdir(parents=True)
    for key, data in satellite_files.items():
        (folder / key.split("/")[1]).write_bytes(data)
    # No server at all: nothing is downloaded, the files are used as they are.
    stamp = fetch_real("satellite", tmp_path / "raw", tmp_path / "lock.json", mirror="http://127.0.0.1:9/")
    manifest = build_shards("satellite", stamp, tmp_path / "shards")
    assert manifest.exists()
    # A different copy later is refused, naming the file.
    (folder / "satellite_test.npy").write_bytes(satellite_files["satellite/satellite_train.npy"])
    with pytest.raises(RawDataError, match=r"satellite_test\.npy does not match"):
        fetch_real("satellite", tmp_path / "raw", tmp_path / "lock.json", allow_download=False)


def test_missing_files_are_listed_with_where_to_get_them(tmp_path):
    with FaultyServer({}) as srv, pytest.raises(RawDataError) as e:
        fetch_real(
            "satellite", tmp_path / "raw", tmp_path / "lock.json", mirror=f"{srv.url}/good/", options=FAST
        )
    msg = str(e.value)
    for n in NAMES:
        assert str(tmp_path / "raw" / "satellite" / n) in msg
    assert "Google Drive" in msg


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_malicious_pickle_is_refused():
    payload = pickle.dumps({"data": np.zeros(3), "evil": _Evil()})
    with pytest.raises(UnsafePickleError, match=r"builtins\.print"):
        safe_load(io.BytesIO(payload))
    arr = np.empty((), dtype=object)
    arr[()] = _Evil()
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    buf.seek(0)
    with pytest.raises(UnsafePickleError):
        safe_load_npy(buf)


def test_numpy_containers_round_trip():
    obj = {"data": np.array([np.arange(3, dtype=np.int16), np.arange(5, dtype=np.int16)], dtype=object),
           "label": np.array(["N", "A"], dtype=object), "x": np.ones((2, 2), np.float32)}  # fmt: skip
    out = safe_load(io.BytesIO(pickle.dumps(obj)))
    np.testing.assert_array_equal(out["data"][1], np.arange(5))
    assert list(out["label"]) == ["N", "A"]


def test_pickled_file_changed_after_verification_is_not_read(tmp_path):
    p = tmp_path / "x.pkl"
    p.write_bytes(pickle.dumps({"a": 1}))
    raw = RawFolder(tmp_path, {"x.pkl": "0" * 64})
    with pytest.raises(RawDataError, match="changed since it was verified"):
        raw.load_pickle("x.pkl")
    with pytest.raises(RawDataError, match="no checksum recorded"):
        RawFolder(tmp_path, {}).load_pickle("x.pkl")
