"""NB201 tables: records, queries, the search view, and the official NATS-Bench file format (nb201.md 6.3)."""

import bz2
import json
import math
import os
import pickle
import pickletools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nb360.data.rawfolder import LockFile, RawDataError
from nb360.nb201 import space
from nb360.nb201.__main__ import main as cli
from nb360.nb201.table import OfficialFileError, Table, TableError, read_official, verify_official

REPO = Path(__file__).resolve().parents[1]
CELLS = (0, 9, 123, 15624)


def record(index: int, task: str, epochs: int, seed: int = 777, nan_eval: bool = True) -> dict:
    """A synthetic trained cell; values differ per cell, epoch and seed so that mix-ups show."""
    k = index % 97 + seed % 7
    ep = range(epochs)
    if task == "ninapro":  # accuracy in %
        test_acc = [min(99.0, 20.0 + 5.5 * e + 0.25 * k) for e in ep]
        test_loss = [2.5 / (1 + e) + 0.01 * k for e in ep]
    else:  # Darcy: accuracy = 1 - relL2 (a fraction), loss = relL2
        test_loss = [0.5 / (1 + e) + 0.001 * k for e in ep]
        test_acc = [1.0 - v for v in test_loss]
    return {
        "index": index,
        "arch": space.arch_strings()[index],
        "task": task,
        "epochs": epochs,
        "seed": seed,
        "train_loss": [3.0 / (1 + e) + 0.02 * k for e in ep],
        "train_acc": [min(100.0, 15.0 + 6.0 * e + 0.1 * k) for e in ep],
        "test_loss": test_loss,
        "test_acc": test_acc,
        "train_time": [1.5 + 0.01 * k + 0.001 * e for e in ep],
        "eval_time": [math.nan] * epochs if nan_eval else [0.25 + 0.001 * e for e in ep],
        "params": 0.1 + 0.01 * k,
        "flops": 12.0 + 0.5 * k,
    }


def table(task: str = "ninapro", epochs: int = 12, cells=CELLS, seeds=(777,), nan_eval: bool = True) -> Table:
    recs = [record(i, task, epochs, s, nan_eval) for i in cells for s in seeds]
    return Table.from_records(recs, task, str(epochs))


def same(a, b) -> bool:
    """Equality with NaN == NaN (the NB360 files' eval times)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def write_obj(path: Path, obj) -> Path:
    path.write_bytes(bz2.compress(pickle.dumps(obj, protocol=4)))
    return path


@pytest.mark.parametrize("task", ["ninapro", "darcy"])
def test_records_round_trip_through_the_official_file(tmp_path, task):
    t = table(task, seeds=(777, 888))
    path = t.write_official(tmp_path / "t.pickle.pbz2")
    back = read_official(path)
    assert (back.task, back.hp, back.indices) == (task, "12", CELLS)
    assert same(back.records(), t.records())
    assert not [p.name for p in tmp_path.iterdir() if p.name != "t.pickle.pbz2"]  # no temporary left


def test_the_written_pickle_holds_builtins_only_and_the_official_structure(tmp_path):
    path = table("darcy", epochs=3).write_official(tmp_path / "t.pickle.pbz2")
    raw = bz2.decompress(path.read_bytes())
    opcodes = {op.name for op, _, _ in pickletools.genops(raw)}
    assert not opcodes & {"GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX"}
    obj = pickle.loads(raw)
    assert obj["meta_archs"] == list(space.arch_strings()) and obj["total_archs"] == 15625
    assert obj["evaluated_indexes"] == set(CELLS) and set(obj["arch2infos"]) == set(CELLS)
    state = obj["arch2infos"][123]["3"]
    assert state["arch_index"] == 123 and state["arch_str"] == space.arch_strings()[123]
    assert state["dataset_seed"] == {"darcyflow": [777]}
    rc = state["all_results"][("darcyflow", 777)]
    assert rc["name"] == "darcyflow" and rc["seed"] == "0777" and rc["epochs"] == 3
    assert rc["eval_names"] == ["ori-test"]
    assert list(rc["eval_acc1es"]) == list(rc["eval_times"]) == ["ori-test@0", "ori-test@1", "ori-test@2"]
    assert list(rc["train_losses"]) == [0, 1, 2] and rc["latency"] is None and rc["net_state_dict"] is None
    assert rc["arch_config"] == {"channel": 16, "num_cells": 5, "arch_str": state["arch_str"], "class_num": 1}


@pytest.mark.parametrize(("task", "dataset"), [("ninapro", "ninapro"), ("darcy", "darcyflow")])
def test_nats_bench_opens_our_file_and_returns_our_numbers(tmp_path, task, dataset):
    nats_bench = pytest.importorskip("nats_bench")
    ours = table(task, nan_eval=False)
    path = ours.write_official(tmp_path / "ours.pickle.pbz2")
    api = nats_bench.create(str(path), "tss", fast_mode=False, verbose=False)
    assert len(api) == 15625 and set(api.evaluated_indexes) == set(CELLS) and api.avaliable_hps == ["12"]
    for index in CELLS:
        rec = record(index, task, 12, nan_eval=False)
        assert api.query_index_by_arch(rec["arch"]) == index
        for iepoch in (None, 0, 5):
            e = 11 if iepoch is None else iepoch
            info = api.get_more_info(index, dataset, iepoch=iepoch, hp="12")
            assert info["train-loss"] == rec["train_loss"][e]
            assert info["train-accuracy"] == rec["train_acc"][e]
            assert info["valtest-accuracy"] == rec["test_acc"][e]
            assert info["valtest-loss"] == rec["test_loss"][e]
            assert info["train-all-time"] == pytest.approx(sum(rec["train_time"][: e + 1]))
            assert info["valtest-all-time"] == pytest.approx(sum(rec["eval_time"][: e + 1]))
            q = ours.query(index, e + 1)
            assert q["test_acc"] == info["valtest-accuracy"]
            assert q["train_time_total"] == info["train-all-time"]
        cost = api.get_cost_info(index, dataset, hp="12")
        assert (cost["params"], cost["flops"], cost["latency"]) == (rec["params"], rec["flops"], None)
        config = api.get_net_config(index, dataset)
        assert config["arch_str"] == rec["arch"] and (config["C"], config["N"]) == (16, 5)


def test_nats_bench_mean_over_seeds_equals_our_query(tmp_path):
    nats_bench = pytest.importorskip("nats_bench")
    ours = table("ninapro", seeds=(777, 888, 999))
    api = nats_bench.create(str(ours.write_official(tmp_path / "t.pickle.pbz2")), "tss", verbose=False)
    info = api.get_more_info(9, "ninapro", iepoch=3, hp="12", is_random=False)
    q = ours.query(9, epoch=4)
    assert q["seeds"] == [777, 888, 999]
    assert q["test_acc"] == pytest.approx(info["valtest-accuracy"])
    assert q["train_loss"] == pytest.approx(info["train-loss"])
    assert (
        ours.query(9, 4, seed=888)["test_acc"]
        == api.get_more_info(9, "ninapro", 3, "12", 888)["valtest-accuracy"]
    )


def test_numpy_scalars_of_the_official_files_are_read_as_floats(tmp_path):
    obj = table("ninapro", epochs=2).to_official()
    rc = obj["arch2infos"][0]["2"]["all_results"][("ninapro", 777)]
    rc["params"], rc["train_losses"][1] = np.float64(0.5), np.float32(0.25)
    back = read_official(write_obj(tmp_path / "np.pickle.pbz2", obj))
    q = back.query(0)
    assert (q["params"], q["train_loss"]) == (0.5, 0.25) and type(q["params"]) is float


def _refused(path: Path, *fragments: str, **kw) -> str:
    with pytest.raises(OfficialFileError) as err:
        read_official(path, **kw)
    msg = str(err.value)
    assert str(path) in msg and "delete it" in msg
    for f in fragments:
        assert f in msg
    return msg


def test_broken_files_are_refused_with_a_clear_message(tmp_path):
    t = table("ninapro", epochs=2)
    good = t.write_official(tmp_path / "good.pickle.pbz2")
    data = good.read_bytes()
    # truncated bz2 stream
    (tmp_path / "cut.pickle.pbz2").write_bytes(data[: len(data) // 2])
    _refused(tmp_path / "cut.pickle.pbz2", "truncated or corrupt")
    # one flipped byte in the compressed data
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    (tmp_path / "flip.pickle.pbz2").write_bytes(bytes(flipped))
    _refused(tmp_path / "flip.pickle.pbz2", "truncated or corrupt")
    # a valid bz2 stream of a truncated pickle
    raw = bz2.decompress(data)
    (tmp_path / "half.pickle.pbz2").write_bytes(bz2.compress(raw[: len(raw) // 2]))
    _refused(tmp_path / "half.pickle.pbz2", "truncated or corrupt")
    # meta_archs shuffled
    obj = t.to_official()
    obj["meta_archs"][1], obj["meta_archs"][2] = obj["meta_archs"][2], obj["meta_archs"][1]
    _refused(write_obj(tmp_path / "order.pickle.pbz2", obj), "official NB201 index order", "index 1")
    # hp key missing: the file holds "2" only
    _refused(good, "no hp='200' results", hp=200)
    # evaluated_indexes disagrees with arch2infos
    obj = t.to_official()
    obj["evaluated_indexes"].add(5)
    _refused(write_obj(tmp_path / "evald.pickle.pbz2", obj), "evaluated_indexes")
    # the task asked for is not the file's
    _refused(good, "'ninapro' table, not 'darcyflow'", task="darcy")


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = write_obj(tmp_path / "evil.pickle.pbz2", {"meta_archs": _Exploit(marker)})
    msg = _refused(path, "refusing to unpickle", "system")
    assert "builtin containers" in msg and not marker.exists()


def test_query_by_index_and_by_arch_agree_and_bad_queries_say_why():
    t = table("ninapro")
    arch = space.arch_strings()[123]
    by_index, by_arch = t.query(123), t.query(arch)
    assert same(by_index, by_arch) and by_index["epoch"] == 12 and by_index["arch"] == arch
    rec = record(123, "ninapro", 12)
    q = t.query(123, epoch=3)
    assert (q["test_acc"], q["train_loss"], q["train_time"]) == (
        rec["test_acc"][2],
        rec["train_loss"][2],
        rec["train_time"][2],
    )
    assert q["train_time_total"] == pytest.approx(sum(rec["train_time"][:3]))
    assert math.isnan(q["eval_time_total"])
    assert (q["params"], q["flops"], q["task"], q["hp"]) == (rec["params"], rec["flops"], "ninapro", "12")
    with pytest.raises(TableError, match=r"cell 1 .* not evaluated"):
        t.query(1)
    with pytest.raises(TableError, match=r"outside 0\.\.15624"):
        t.query(15625)
    with pytest.raises(TableError, match="an NB201 cell has 3 nodes"):
        t.query("|bogus~0|")
    for bad in (0, 13):
        with pytest.raises(TableError, match=r"epoch .* out of range.*1\.\.12"):
            t.query(123, epoch=bad)
    with pytest.raises(TableError, match="no run with seed 5"):
        t.query(123, seed=5)


def test_inconsistent_records_are_refused():
    good = record(9, "darcy", 4)
    with pytest.raises(TableError, match="trained 4 epochs"):
        Table.from_records([good], "darcy", "12")
    with pytest.raises(TableError, match="task 'darcy'"):
        Table.from_records([good], "ninapro", "4")
    with pytest.raises(TableError, match="two records of cell 9"):
        Table.from_records([good, good], "darcy", "4")
    with pytest.raises(TableError, match="is not cell 10"):
        Table.from_records([{**good, "index": 10}], "darcy", "4")
    with pytest.raises(TableError, match="one value per epoch"):
        Table.from_records([{**good, "test_acc": [0.5]}], "darcy", "4")


def test_cli_prints_the_query(tmp_path, capsys):
    path = table("ninapro").write_official(tmp_path / "t.pickle.pbz2")
    rec = record(123, "ninapro", 12)
    assert cli(["query", "--table", str(path), "--index", "123", "--epochs", "12", "--epoch", "5"]) == 0
    out = capsys.readouterr().out
    assert f"test_acc: {rec['test_acc'][4]:.6g}" in out and "epoch: 5" in out and "eval_time: nan s" in out
    arch = space.arch_strings()[123]
    assert cli(["query", "--table", str(path), "--arch", arch, "--epochs", "12", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["index"] == 123 and got["test_acc"] == rec["test_acc"][11] and got["eval_time"] is None
    assert cli(["query", "--table", str(path), "--index", "123", "--epochs", "200"]) == 2
    assert "no hp='200' results" in capsys.readouterr().err
    # and as a module (the __main__ entry point)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "nb360.nb201", "query", "--table", str(path), "--index", "0", "--epochs"]
    cmd.append("12")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0 and "arch: " + space.arch_strings()[0] in done.stdout


@pytest.mark.parametrize("task", ["ninapro", "darcy"])
def test_search_view_follows_the_contract(task):
    low = table(task, epochs=12, nan_eval=False)
    final = table(task, epochs=200, cells=(*CELLS, 77))
    view = low.search_view(final)
    assert tuple(view.indices) == CELLS and view.max_epochs == 12
    assert view.final_higher_is_better is (task == "ninapro")
    rec, rec200 = record(9, task, 12, nan_eval=False), record(9, task, 200)
    for e in (1, 5, 12):
        assert view.score(9, e) == rec["test_acc"][e - 1]
        # cumulative train time of epochs 1..e plus that epoch's (finite) evaluation
        assert view.cost(9, e) == pytest.approx(sum(rec["train_time"][:e]) + rec["eval_time"][e - 1])
    assert all(view.cost(9, e) < view.cost(9, e + 1) for e in range(1, 12))
    assert view.final(9) == (rec200["test_acc"][-1] if task == "ninapro" else rec200["test_loss"][-1])
    # NaN eval times (the NB360 files) are left out of the cost
    nan_view = table(task, epochs=12).search_view(final)
    assert nan_view.cost(9, 4) == pytest.approx(sum(rec["train_time"][:4]))
    for bad in (0, 13):
        with pytest.raises(TableError, match=r"epochs must be in 1\.\.12"):
            view.score(9, bad)
    with pytest.raises(TableError, match="not searchable"):
        view.final(77)
    with pytest.raises(TableError, match="not in the final"):
        low.search_view(table(task, epochs=200, cells=(0, 9)))
    other = "darcy" if task == "ninapro" else "ninapro"
    with pytest.raises(TableError, match="low-fidelity table is"):
        low.search_view(table(other, epochs=200))


def test_verify_official_pins_then_checks_against_the_lock(tmp_path):
    raw = tmp_path / "raw" / "nb201"
    raw.mkdir(parents=True)
    lock = LockFile(tmp_path / "lock.json")
    path = table("ninapro").write_official(raw / "NATS-tss-v1_0-2397f.pickle.pbz2")
    assert verify_official(path, lock, task="ninapro", hp=12).indices == CELLS
    entry = lock.get("nb201/NATS-tss-v1_0-2397f.pickle.pbz2")
    assert entry is not None and entry["size"] == path.stat().st_size
    assert verify_official(path, lock).hp == "12"  # the pinned copy passes again
    table("ninapro", cells=(0, 9)).write_official(path)  # another copy under the same name
    with pytest.raises(RawDataError, match="does not match the sha256 pinned"):
        verify_official(path, lock)
    # a broken copy that is not pinned is read (and refused) before anything is pinned
    broken = raw / "NATS-tss-v1_0-70680.pickle.pbz2"
    broken.write_bytes(b"BZh9 not really")
    with pytest.raises(OfficialFileError, match="truncated or corrupt"):
        verify_official(broken, lock)
    assert lock.get("nb201/NATS-tss-v1_0-70680.pickle.pbz2") is None
    # a missing file names a near namesake (a browser's download name)
    (raw / "NATS-tss-v1_0-48858.pickle (1).pbz2").write_bytes(b"")
    with pytest.raises(RawDataError, match=r"rename it to NATS-tss-v1_0-48858\.pickle\.pbz2"):
        verify_official(raw / "NATS-tss-v1_0-48858.pickle.pbz2", lock)
