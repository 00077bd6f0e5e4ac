import io
import json
import logging
import pickle
import shutil
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from nb360.data import rawfolder
from nb360.data.download import DownloadOptions
from nb360.data.pipeline import build_shards, fetch_real, generate_embedded
from nb360.data.rawfolder import STAMP_NAME, LockFile, RawDataError, RawFolder, write_stamp
from nb360.data.safe_pickle import UnsafePickleError, safe_load, safe_load_npy
from nb360.data.shards import sha256_file
from nb360.tasks import RealCounts, base, get_task, list_tasks
from tests.httpserver import FaultyServer

FAST = DownloadOptions(retries=1, backoff_s=0.01, timeout_s=5)
NAMES = ("satellite_train.npy", "satellite_test.npy")


@pytest.fixture(scope="module")
def satellite_files(tmp_path_factory, pypi_cache):
    """The embedded Satellite files, served as if they were the official ones."""
    root = tmp_path_factory.mktemp("sat")
    stamp = generate_embedded("satellite", root, seed=0, cache_dir=pypi_cache)
    return {f"satellite/{n}": (stamp.parent / n).read_bytes() for n in NAMES}


def _as_real(monkeypatch, task: str, counts: dict[str, int]) -> None:
    """Let the embedded copy of ``task`` pass as a complete real release (its counts are documented)."""
    spec = get_task(task)
    monkeypatch.setitem(base._TASKS, task, replace(spec, real_counts=RealCounts(counts, "test")))


SAT_COUNTS = {"train": 5000, "val": 1000, "test": 1000}  # the embedded Satellite files


def test_download_is_pinned_only_after_a_good_read_then_verified(
    satellite_files, tmp_path, caplog, monkeypatch
):
    _as_real(monkeypatch, "satellite", SAT_COUNTS)
    lock = tmp_path / "lock.json"
    with FaultyServer(satellite_files) as srv, caplog.at_level(logging.WARNING):
        stamp = fetch_real("satellite", tmp_path / "raw", lock, mirror=f"{srv.url}/good/", options=FAST)
    assert not lock.exists(), "nothing is pinned before the files were read"
    body = json.loads(stamp.read_text())
    assert body["source"] == "real"
    assert {e["lock"] for e in body["files"].values()} == {"pending"}
    with caplog.at_level(logging.WARNING):
        manifest = build_shards("satellite", stamp, tmp_path / "shards")
    assert "FIRST COPY OF satellite/satellite_train.npy" in caplog.text
    recorded = LockFile(lock).read()
    assert set(recorded) == {f"satellite/{n}" for n in NAMES}
    provenance = json.loads(manifest.read_text())["provenance"]
    assert provenance["complete"] is True
    for n in NAMES:
        assert provenance["raw_files"][n]["sha256"] == recorded[f"satellite/{n}"]["sha256"]
        assert provenance["raw_files"][n]["lock"] == "pinned"
    # A second machine fetching from a corrupt mirror is stopped by the lock.
    with FaultyServer(satellite_files) as srv, pytest.raises(RawDataError, match="missing") as e:
        fetch_real("satellite", tmp_path / "raw2", lock, mirror=f"{srv.url}/corrupt/", options=FAST)
    assert not (tmp_path / "raw2" / "satellite" / "satellite_train.npy").exists()
    assert "drive.google.com" in str(e.value)


def test_hand_placed_files_are_used_and_verified(satellite_files, tmp_path, monkeypatch):
    _as_real(monkeypatch, "satellite", SAT_COUNTS)
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


# ------------------------------------------------------------------------------------------------------
# Every task's official files, damaged: one RawDataError naming the file, nothing pinned, then recovery.

# gzip and zip carry CRCs, so a flipped bit is caught even in a copy seen for the first time; a flipped bit
# inside the unchecked array bytes of a first-seen .npy, .mat, .pkl or .tar cannot be detected by any
# reader, only by the lock once the file is pinned (tested for every task below).
CRC_FORMATS = {"cifar100", "spherical", "fsd50k", "psicov", "deepsea"}


def _real_copy(embedded, task: str, raw_dir) -> Path:
    """The embedded files of ``task`` (official names and formats) as a hand-placed real copy, no stamp."""
    shutil.copytree(embedded.raw_dir(task), raw_dir / task, ignore=shutil.ignore_patterns(STAMP_NAME))
    return raw_dir / task


def _embedded_counts(embedded, task: str) -> dict[str, int]:
    splits = embedded.manifest(task)["splits"]
    return {name: splits[name]["n_items"] for name in ("train", "val", "test")}


def _flipped(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x10
    return bytes(out)


@pytest.mark.parametrize("task", list_tasks())
def test_damaged_raw_file_is_named_never_pinned_and_the_good_copy_is_accepted(
    task, embedded, tmp_path, monkeypatch
):
    _as_real(monkeypatch, task, _embedded_counts(embedded, task))
    spec = get_task(task)
    raw_dir, lock, shards = tmp_path / "raw", tmp_path / "lock.json", tmp_path / "shards"
    path = _real_copy(embedded, task, raw_dir) / spec.raw_files[0].name
    key = f"{task}/{path.name}"
    good = path.read_bytes()
    damaged = {"truncated": good[: len(good) // 2]}
    if task in CRC_FORMATS:
        damaged["bit-flipped"] = _flipped(good, len(good) // 2)
    for how, bad in damaged.items():
        path.write_bytes(bad)
        stamp = fetch_real(task, raw_dir, lock, allow_download=False)
        with pytest.raises(RawDataError) as e:
            build_shards(task, stamp, shards)
        msg = str(e.value)
        assert str(path) in msg, f"{how}: {msg}"
        assert "fetch" in msg and f"Nothing was pinned in the lock file {lock}" in msg, f"{how}: {msg}"
        assert LockFile(lock).read() == {}, how
        assert not (shards / "manifest.json").exists()

    # The good copy put in place; the stamp of the bad one stays, as after a failed Snakemake job.
    path.write_bytes(good)
    manifest = build_shards(task, stamp, shards)
    pins = LockFile(lock).read()
    assert set(pins) == {f"{task}/{rf.name}" for rf in spec.raw_files}
    assert (
        pins[key]["sha256"]
        == sha256_file(path)
        != json.loads(stamp.read_text())["files"][path.name]["sha256"]
    )
    provenance = json.loads(manifest.read_text())["provenance"]["raw_files"]
    assert provenance[path.name] == {"sha256": pins[key]["sha256"], "size": len(good), "lock": "pinned"}

    # Once pinned, any other copy is refused, however it reads: at the shards step (stamp taken before the
    # change) and at the next fetch, naming the file; the lock keeps the good pin.
    path.write_bytes(_flipped(good, len(good) // 3))
    with pytest.raises(RawDataError, match="does not match the sha256 pinned") as e:
        build_shards(task, stamp, tmp_path / "shards2")
    assert str(path) in str(e.value)
    with pytest.raises(RawDataError, match="does not match the sha256 pinned") as e:
        fetch_real(task, raw_dir, lock, allow_download=False)
    assert str(path) in str(e.value)
    assert LockFile(lock).read() == pins
    path.write_bytes(good)
    stamp = fetch_real(task, raw_dir, lock, allow_download=False)
    assert {e["lock"] for e in json.loads(stamp.read_text())["files"].values()} == {"pinned"}


def _member_boundary_cut(tar_path: Path) -> int:
    """Offset of a member header in the middle of a tar: a cut there reads without error."""
    with tarfile.open(tar_path) as tar:
        files = [m for m in tar.getmembers() if m.isfile()]
    return files[len(files) // 2].offset


def test_tar_cut_at_a_member_boundary_is_stopped_by_the_counts(embedded, tmp_path, monkeypatch, caplog):
    _as_real(monkeypatch, "cosmic", _embedded_counts(embedded, "cosmic"))
    raw_dir, lock = tmp_path / "raw", tmp_path / "lock.json"
    path = _real_copy(embedded, "cosmic", raw_dir) / "deepCR.ACS-WFC.train.tar"
    good = path.read_bytes()
    path.write_bytes(good[: _member_boundary_cut(path)])
    stamp = fetch_real("cosmic", raw_dir, lock, allow_download=False)
    with pytest.raises(RawDataError, match="not the complete official release") as e:
        build_shards("cosmic", stamp, tmp_path / "shards")
    assert str(path) in str(e.value) and "data.allow_partial: true" in str(e.value)
    assert LockFile(lock).read() == {}
    # A deliberately partial copy: built, logged, not pinned.
    with caplog.at_level(logging.WARNING):
        manifest = build_shards("cosmic", stamp, tmp_path / "shards", allow_partial=True)
    assert "data.allow_partial is set" in caplog.text
    assert LockFile(lock).read() == {}
    provenance = json.loads(manifest.read_text())["provenance"]
    assert provenance["complete"] is False
    assert provenance["raw_files"][path.name]["lock"] == "not pinned (partial copy)"


def test_real_counts_of_the_registry_stop_embedded_sized_files(satellite_files, tmp_path):
    folder = tmp_path / "raw" / "satellite"
    folder.mkdir(parents=True)
    for key, data in satellite_files.items():
        (folder / key.split("/")[1]).write_bytes(data)
    stamp = fetch_real("satellite", tmp_path / "raw", tmp_path / "lock.json", allow_download=False)
    with pytest.raises(RawDataError) as e:
        build_shards("satellite", stamp, tmp_path / "shards")
    assert "train: 5,000 items, the complete release has 800,000" in str(e.value)
    # Embedded data is exempt.
    assert build_shards("satellite", generate_embedded_stamp(satellite_files, tmp_path), tmp_path / "emb")


def generate_embedded_stamp(satellite_files, tmp_path) -> Path:
    folder = tmp_path / "embedded" / "satellite"
    folder.mkdir(parents=True)
    digests = {}
    for key, data in satellite_files.items():
        (folder / key.split("/")[1]).write_bytes(data)
        digests[key.split("/")[1]] = sha256_file(folder / key.split("/")[1])
    return write_stamp(folder, "satellite", "embedded", digests)


def test_every_task_documents_its_counts_or_why_not():
    for task in list_tasks():
        counts = get_task(task).real_counts
        assert set(counts.splits) <= {"train", "val", "test"}, task
        assert all(n > 0 for n in counts.splits.values()), task
        if set(counts.splits) != {"train", "val", "test"}:
            assert len(counts.unchecked) > 20, f"{task}: unchecked splits need a reason"
        if counts.splits:
            assert counts.source, task


def test_each_raw_file_is_hashed_once_per_build(satellite_files, tmp_path, monkeypatch):
    _as_real(monkeypatch, "satellite", SAT_COUNTS)
    folder = tmp_path / "raw" / "satellite"
    folder.mkdir(parents=True)
    for key, data in satellite_files.items():
        (folder / key.split("/")[1]).write_bytes(data)
    stamp = fetch_real("satellite", tmp_path / "raw", tmp_path / "lock.json", allow_download=False)
    hashed = []

    def counting(path, *args, **kwargs):
        hashed.append(Path(path).name)
        return sha256_file(path, *args, **kwargs)

    monkeypatch.setattr(rawfolder, "sha256_file", counting)
    build_shards("satellite", stamp, tmp_path / "shards")
    assert sorted(hashed) == sorted(NAMES)


def test_missing_file_with_a_near_namesake_is_pointed_out(embedded, tmp_path):
    folder = _real_copy(embedded, "ninapro", tmp_path / "raw")
    (folder / "label_train.npy").rename(folder / "labels_train.npy")
    with pytest.raises(RawDataError) as e:
        fetch_real("ninapro", tmp_path / "raw", tmp_path / "lock.json", allow_download=False)
    assert "labels_train.npy: if that is this file, rename it to label_train.npy" in str(e.value)
    with pytest.raises(RawDataError, match=r"rename it to label_train\.npy"):
        RawFolder(folder, {}).path("label_train.npy")
