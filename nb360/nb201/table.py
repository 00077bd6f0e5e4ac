"""The precomputed NB201-space tables on NinaPro and Darcy Flow: records, queries, the official file format.

A :class:`Table` holds one task's trained cells at one epoch budget (the hp key: "12" = low fidelity, used by
the search; "200" = the reported values). It is built from cell records (one trained cell each, a plain
JSON-able dict, see :data:`RECORD_KEYS`) or read from a file in the official NATS-Bench single-file format
(nb201.md 6.3), and answers queries by index or arch string. :meth:`Table.search_view` pairs the 12-epoch
table with the 200-epoch one into the object the NAS algorithms search (their ``SearchTable`` protocol).

Official format (what ``nats_bench.create(path, 'tss', fast_mode=False)`` of nats_bench 1.8 loads): a bz2
pickle of ``{"meta_archs": [15,625 arch strings in index order], "total_archs": 15625, "arch2infos": {index:
{hp: ArchResults.state_dict()}}, "evaluated_indexes": {index, ...}}``. An ``ArchResults`` state is
``{arch_index, arch_str, all_results: {(dataset, seed:int): ResultsCount state}, dataset_seed: {dataset:
[seeds]}, clear_net_done}``; a ``ResultsCount`` state is its ``__dict__`` (see :func:`_results_count`).
We write builtins only (no classes, no numpy); the official files carry numpy float scalars, which reading
turns into floats.
"""

from __future__ import annotations

import bz2
import math
import os
import pickle
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nb360.data.rawfolder import LockFile, RawDataError, check_lock, near_names_hint
from nb360.data.safe_pickle import UnsafePickleError, safe_load_bz2
from nb360.data.shards import atomic_write_bytes, sha256_file
from nb360.nb201 import space
from nb360.nb201.plan import OFFICIAL_FILES, RAW_SUBDIR, official_path  # noqa: F401 (official_path: re-exported)

TASKS = ("ninapro", "darcy")
DATASET_NAMES = {"ninapro": "ninapro", "darcy": "darcyflow"}  # task -> the official dataset name
_TASK_OF_DATASET = {v: k for k, v in DATASET_NAMES.items()}
# arch_config of the official runs: C = 16, N = 5 (nb201.md 6.1); NinaPro has 18 classes; Darcy's per-pixel
# head has one output (its class_num in the official files is unverified).
CHANNELS, NUM_CELLS = 16, 5
CLASS_NUM = {"ninapro": 18, "darcy": 1}
EVAL_NAME = "ori-test"  # the only evaluation set of the NB360 runs (nb201.md 6.2)
PER_EPOCH = ("train_loss", "train_acc", "test_loss", "test_acc", "train_time", "eval_time")
RECORD_KEYS = ("index", "arch", "task", "epochs", "seed", *PER_EPOCH, "params", "flops")
_FIX = (
    "delete it and copy the official file again (nb201.md 6.3 names the four files; they are on Google "
    "Drive / S3, which scripts cannot download from), or write it again with nb360.nb201.table"
)


class TableError(ValueError):
    """A bad query (unknown cell, epoch out of range) or inconsistent records."""


class OfficialFileError(RawDataError):
    """An NB201 table file is unreadable, corrupt or not in the official format; the message names it."""


def _float(value: Any, what: str) -> float:
    # ints, floats and numpy scalars (the official files store numpy.float64) all convert
    if isinstance(value, bool) or not hasattr(value, "__float__"):
        raise TableError(f"{what} must be a number, got {value!r}")
    return float(value)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _check_hp(hp: str | int) -> str:
    hp = str(hp)
    if not hp.isdigit() or int(hp) < 1:
        raise TableError(f"hp must be a positive number of epochs ('12' or '200'), got {hp!r}")
    return hp


def _check_record(rec: Mapping[str, Any], task: str, epochs: int) -> dict[str, Any]:
    """A normalised copy of one record (contract (1)); raise TableError naming what is wrong."""
    missing = [k for k in RECORD_KEYS if k not in rec]
    where = f"record of cell {rec.get('index')!r} (seed {rec.get('seed')!r})"
    if missing:
        raise TableError(f"{where} lacks {', '.join(missing)}")
    index = rec["index"]
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < space.NUM_ARCHS:
        raise TableError(f"{where}: index must be an int in 0..{space.NUM_ARCHS - 1}")
    if rec["arch"] != space.arch_strings()[index]:
        raise TableError(f"{where}: arch {rec['arch']!r} is not cell {index} ({space.arch_strings()[index]})")
    if rec["task"] != task:
        raise TableError(f"{where}: task {rec['task']!r}, but this table is for {task!r}")
    if rec["epochs"] != epochs:
        raise TableError(f"{where}: trained {rec['epochs']} epochs, but this table's hp is {epochs}")
    if isinstance(rec["seed"], bool) or not isinstance(rec["seed"], int) or rec["seed"] < 0:
        raise TableError(f"{where}: seed must be a non-negative int")
    out: dict[str, Any] = {k: rec[k] for k in ("index", "arch", "task", "epochs", "seed")}
    for key in PER_EPOCH:
        values = rec[key]
        if not isinstance(values, Sequence) or isinstance(values, str) or len(values) != epochs:
            raise TableError(f"{where}: {key} must list one value per epoch ({epochs})")
        out[key] = [_float(v, f"{where}: {key}") for v in values]
    out["params"] = _float(rec["params"], f"{where}: params")
    out["flops"] = _float(rec["flops"], f"{where}: flops")
    return out


@dataclass(frozen=True)
class Table:
    """One task's table at one epoch budget: ``cells[index]`` = its records (one per seed, by seed)."""

    task: str
    hp: str
    cells: Mapping[int, tuple[dict[str, Any], ...]] = field(repr=False)

    @property
    def epochs(self) -> int:
        return int(self.hp)

    @property
    def indices(self) -> tuple[int, ...]:
        """The evaluated cells, ascending."""
        return tuple(sorted(self.cells))

    def __len__(self) -> int:
        return len(self.cells)

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], task: str, hp: str | int) -> Table:
        """Build a table from cell records (contract (1)), all of ``task`` and trained ``hp`` epochs."""
        if task not in TASKS:
            raise TableError(f"unknown task {task!r}; NB201 tables exist for {', '.join(TASKS)}")
        hp = _check_hp(hp)
        cells: dict[int, dict[int, dict[str, Any]]] = {}
        for rec in records:
            r = _check_record(rec, task, int(hp))
            seeds = cells.setdefault(r["index"], {})
            if r["seed"] in seeds:
                raise TableError(f"two records of cell {r['index']} with seed {r['seed']}")
            seeds[r["seed"]] = r
        if not cells:
            raise TableError(f"no records for the {task} hp={hp} table")
        return cls(task, hp, {i: tuple(s[k] for k in sorted(s)) for i, s in sorted(cells.items())})

    def records(self) -> list[dict[str, Any]]:
        """All records (contract (1)), by index then seed."""
        # copies of the per-epoch lists too, so that a caller's edits cannot change the table
        return [
            {k: list(v) if isinstance(v, list) else v for k, v in r.items()}
            for i in self.indices
            for r in self.cells[i]
        ]

    # ---------------------------------------------------------------------------------------------- queries

    def resolve(self, cell: int | str) -> int:
        """The index of ``cell`` (an index or an official arch string); it must be evaluated in this table."""
        if isinstance(cell, str):
            try:
                index = space.index_of(cell)
            except ValueError as e:
                raise TableError(str(e)) from None
        elif isinstance(cell, int) and not isinstance(cell, bool):
            if not 0 <= cell < space.NUM_ARCHS:
                raise TableError(f"NB201 cell index {cell} is outside 0..{space.NUM_ARCHS - 1}")
            index = cell
        else:
            raise TableError(f"a cell is an index or an arch string, got {cell!r}")
        if index not in self.cells:
            raise TableError(
                f"cell {index} ({space.arch_strings()[index]}) is not evaluated in the {self.task} "
                f"hp={self.hp} table ({len(self)} cells)"
            )
        return index

    def _epoch(self, epoch: int | None) -> int:
        if epoch is None:
            return self.epochs
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not 1 <= epoch <= self.epochs:
            raise TableError(
                f"epoch {epoch!r} is out of range: the {self.task} hp={self.hp} table has epochs "
                f"1..{self.epochs}"
            )
        return epoch

    def query(self, cell: int | str, epoch: int | None = None, seed: int | None = None) -> dict[str, Any]:
        """One cell's numbers after ``epoch`` epochs (1..epochs; default: the last).

        ``epoch`` counts epochs trained (NATS-Bench's ``iepoch`` + 1). With several seeds and ``seed=None``,
        each value is the mean over seeds (NATS-Bench's ``is_random=False``). Times are seconds: the epoch's
        own (``train_time``, ``eval_time``) and the sum over epochs 1..epoch (``*_total``; NaN eval times, as
        in the NB360 files, make ``eval_time_total`` NaN).
        """
        index = self.resolve(cell)
        epoch = self._epoch(epoch)
        recs = self.cells[index]
        if seed is not None:
            recs = tuple(r for r in recs if r["seed"] == seed)
            if not recs:
                seeds = [r["seed"] for r in self.cells[index]]
                raise TableError(f"cell {index} has no run with seed {seed} (seeds: {seeds})")
        e = epoch - 1
        out: dict[str, Any] = {
            "index": index,
            "arch": space.arch_strings()[index],
            "task": self.task,
            "hp": self.hp,
            "epoch": epoch,
            "seeds": [r["seed"] for r in recs],
        }
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "train_time", "eval_time"):
            out[key] = _mean([r[key][e] for r in recs])
        out["train_time_total"] = _mean([sum(r["train_time"][:epoch]) for r in recs])
        out["eval_time_total"] = _mean([sum(r["eval_time"][:epoch]) for r in recs])
        out["params"] = _mean([r["params"] for r in recs])
        out["flops"] = _mean([r["flops"] for r in recs])
        return out

    def search_view(self, final_table: Table) -> SearchView:
        """The search view (contract (2)): this (low-fidelity) table scores, ``final_table`` reports."""
        return SearchView.build(self, final_table)

    # ----------------------------------------------------------------------------------- official format

    def to_official(self) -> dict[str, Any]:
        """The object the official single file pickles (builtins only)."""
        arch2infos = {i: {self.hp: _arch_results(i, self.cells[i], self.task)} for i in self.indices}
        return {
            "meta_archs": list(space.arch_strings()),
            "total_archs": space.NUM_ARCHS,
            "arch2infos": arch2infos,
            "evaluated_indexes": set(self.indices),
        }

    def write_official(self, path: str | os.PathLike) -> Path:
        """Write the table as an official ``.pickle.pbz2`` file, atomically."""
        path = Path(path)
        # protocol 4, as nats_bench.pickle_save writes it
        atomic_write_bytes(path, bz2.compress(pickle.dumps(self.to_official(), protocol=4)))
        return path

    @classmethod
    def from_official(
        cls, obj: Any, source: str = "<object>", task: str | None = None, hp: str | int | None = None
    ) -> Table:
        """Validate an unpickled official object and build its table (see :func:`read_official`)."""
        return _parse_official(obj, source, task, None if hp is None else _check_hp(hp))


def _results_count(rec: Mapping[str, Any], task: str) -> dict[str, Any]:
    """A ``ResultsCount.__dict__`` as NB360's tss-collect.py leaves it (nb201.md 6.3)."""
    epochs = rec["epochs"]

    def per_epoch(key: str) -> dict[int, float]:
        return {e: rec[key][e] for e in range(epochs)}

    def per_eval(key: str) -> dict[str, float]:
        return {f"{EVAL_NAME}@{e}": rec[key][e] for e in range(epochs)}

    # Key order = ResultsCount.__init__'s attribute order (then reset_eval's), so the state reads like theirs.
    return {
        "name": DATASET_NAMES[task],
        "net_state_dict": None,  # the simplified files carry no weights
        "train_acc1es": per_epoch("train_acc"),
        "train_acc5es": None,  # not part of a record (Darcy's is 0; NinaPro's top-5 is not kept)
        "train_losses": per_epoch("train_loss"),
        "train_times": per_epoch("train_time"),
        "arch_config": {
            "channel": CHANNELS,
            "num_cells": NUM_CELLS,
            "arch_str": rec["arch"],
            "class_num": CLASS_NUM[task],
        },
        "params": rec["params"],
        "flop": rec["flops"],
        "seed": f"{rec['seed']:04d}",  # tss-collect takes it from the checkpoint name, e.g. '0777'
        "epochs": epochs,
        "latency": None,
        "eval_names": [EVAL_NAME],
        "eval_acc1es": per_eval("test_acc"),
        "eval_times": per_eval("eval_time"),
        "eval_losses": per_eval("test_loss"),
    }


def _arch_results(index: int, recs: Sequence[Mapping[str, Any]], task: str) -> dict[str, Any]:
    dataset = DATASET_NAMES[task]
    seeds = sorted(r["seed"] for r in recs)
    return {
        "arch_index": index,
        "arch_str": space.arch_strings()[index],
        "all_results": {(dataset, r["seed"]): _results_count(r, task) for r in recs},
        "dataset_seed": {dataset: seeds},
        "clear_net_done": True,  # tss-collect calls clear_params() before saving
    }


# ------------------------------------------------------------------------------------------ reading files


def _bad(source: str, what: str) -> OfficialFileError:
    return OfficialFileError(f"{source} is not an NB201 table in the official format: {what}; {_FIX}")


def _parse_official(obj: Any, source: str, task: str | None, hp: str | None) -> Table:
    if not isinstance(obj, dict):
        raise _bad(source, f"the top level is a {type(obj).__name__}, not a dict")
    missing = [k for k in ("meta_archs", "total_archs", "arch2infos", "evaluated_indexes") if k not in obj]
    if missing:
        raise _bad(source, f"no {', '.join(missing)} at the top level")
    meta = obj["meta_archs"]
    official = space.arch_strings()
    if not isinstance(meta, list | tuple) or len(meta) != space.NUM_ARCHS or obj["total_archs"] != len(meta):
        n = len(meta) if isinstance(meta, list | tuple) else type(meta).__name__
        raise _bad(source, f"meta_archs holds {n} archs, total_archs {obj['total_archs']!r}; expected 15625")
    if tuple(meta) != official:
        first = next(i for i, (a, b) in enumerate(zip(meta, official, strict=True)) if a != b)
        raise _bad(
            source,
            f"meta_archs is not in the official NB201 index order (first difference at index {first}: "
            f"{meta[first]!r}, expected {official[first]!r})",
        )
    arch2infos, evaluated = obj["arch2infos"], obj["evaluated_indexes"]
    if not isinstance(arch2infos, dict) or not isinstance(evaluated, set | frozenset | list | tuple):
        raise _bad(source, "arch2infos must be a dict and evaluated_indexes a set")
    if set(evaluated) != set(arch2infos):
        extra = sorted(set(evaluated) ^ set(arch2infos), key=str)[:5]
        raise _bad(source, f"evaluated_indexes and arch2infos name different cells (e.g. {extra})")
    if not arch2infos:
        raise _bad(source, "it holds no evaluated cells")
    hps = {str(k) for infos in arch2infos.values() if isinstance(infos, dict) for k in infos}
    if hp is None:
        if len(hps) != 1:
            raise _bad(source, f"it holds the hp keys {sorted(hps)}; say which one to read")
        hp = _check_hp(next(iter(hps)))
    records = []
    for index, infos in arch2infos.items():
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < space.NUM_ARCHS:
            raise _bad(source, f"arch2infos has the key {index!r}, not a cell index")
        if not isinstance(infos, dict) or hp not in infos:
            held = sorted(infos) if isinstance(infos, dict) else type(infos).__name__
            raise _bad(source, f"cell {index} has no hp={hp!r} results (it holds {held}); ask for that hp")
        records += _records_of(infos[hp], index, hp, source)
    tasks = {r["task"] for r in records}
    if len(tasks) != 1:
        raise _bad(source, f"it mixes datasets {sorted(DATASET_NAMES[t] for t in tasks)}")
    found = tasks.pop()
    if task is not None and task != found:
        raise _bad(source, f"it is the {DATASET_NAMES[found]!r} table, not {DATASET_NAMES[task]!r}")
    try:
        return Table.from_records(records, found, hp)
    except TableError as e:
        raise _bad(source, str(e)) from None


def _records_of(state: Any, index: int, hp: str, source: str) -> list[dict[str, Any]]:
    """The records in one ``ArchResults`` state (one per (dataset, seed))."""
    where = f"cell {index} hp={hp}"
    if not isinstance(state, dict) or not isinstance(state.get("all_results"), dict):
        raise _bad(source, f"{where} is not an ArchResults state (no all_results dict)")
    if state.get("arch_index") != index or state.get("arch_str") != space.arch_strings()[index]:
        raise _bad(source, f"{where} names arch {state.get('arch_index')!r} {state.get('arch_str')!r}")
    out = []
    for key, rc in state["all_results"].items():
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] in _TASK_OF_DATASET):
            raise _bad(source, f"{where}: all_results key {key!r} is not ('ninapro'|'darcyflow', seed)")
        dataset, seed = key
        dataset_seed = state.get("dataset_seed")
        if not isinstance(dataset_seed, dict) or seed not in dataset_seed.get(dataset, ()):
            raise _bad(source, f"{where}: dataset_seed does not list seed {seed!r} of {dataset}")
        if not isinstance(rc, dict):
            raise _bad(source, f"{where}: the ResultsCount of {key} is not a state dict")
        need = ("name", "epochs", "train_acc1es", "train_losses", "train_times", "eval_names")
        need += ("eval_acc1es", "eval_losses", "eval_times", "params", "flop")
        missing = [k for k in need if k not in rc]
        if missing:
            raise _bad(source, f"{where}: the ResultsCount of {key} lacks {', '.join(missing)}")
        epochs = rc["epochs"]
        if rc["name"] != dataset or epochs != int(hp) or EVAL_NAME not in rc["eval_names"]:
            raise _bad(
                source,
                f"{where}: ResultsCount {key} has name {rc['name']!r}, epochs {epochs!r}, eval sets "
                f"{rc['eval_names']!r} (expected {dataset!r}, {hp}, {EVAL_NAME!r})",
            )
        try:
            rec = {
                "index": index,
                "arch": state["arch_str"],
                "task": _TASK_OF_DATASET[dataset],
                "epochs": epochs,
                "seed": int(seed),
                "train_loss": [rc["train_losses"][e] for e in range(epochs)],
                "train_acc": [rc["train_acc1es"][e] for e in range(epochs)],
                "test_loss": [rc["eval_losses"][f"{EVAL_NAME}@{e}"] for e in range(epochs)],
                "test_acc": [rc["eval_acc1es"][f"{EVAL_NAME}@{e}"] for e in range(epochs)],
                "train_time": [rc["train_times"][e] for e in range(epochs)],
                "eval_time": [rc["eval_times"][f"{EVAL_NAME}@{e}"] for e in range(epochs)],
                "params": rc["params"],
                "flops": rc["flop"],
            }
        except (KeyError, TypeError, ValueError) as e:
            raise _bad(source, f"{where}: ResultsCount {key} misses epoch entry {e}") from None
        out.append(rec)
    if not out:
        raise _bad(source, f"{where} has no results")
    return out


def read_official(path: str | os.PathLike, task: str | None = None, hp: str | int | None = None) -> Table:
    """Read an official-format ``.pickle.pbz2`` file (ours or NB360's) with the restricted unpickler.

    Checks: a complete bz2 stream, only allowed classes, 15,625 ``meta_archs`` in the official order, the hp
    key in every cell (``hp=None``: the file's only one), ``evaluated_indexes`` = the cells in ``arch2infos``,
    and each ResultsCount complete. ``task`` ("ninapro"/"darcy"), when given, must match the file's dataset.
    """
    path = Path(path)
    if not path.is_file():
        raise OfficialFileError(f"NB201 table {path} does not exist (or is not a file)")
    try:
        obj = safe_load_bz2(path)
    except UnsafePickleError as e:
        raise OfficialFileError(
            f"{path}: {e}. NB201 tables hold only builtin containers and numbers; this file is not one "
            f"(or was tampered with): {_FIX}"
        ) from None
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, IndexError, MemoryError) as e:
        raise OfficialFileError(
            f"{path} is not a complete bz2-compressed pickle ({type(e).__name__}: {e}); the file is "
            f"truncated or corrupt: {_FIX}"
        ) from None
    return _parse_official(obj, str(path), task, None if hp is None else _check_hp(hp))


def verify_official(
    path: str | os.PathLike, lock: LockFile, task: str | None = None, hp: str | int | None = None
) -> Table:
    """Check a user-placed table file against the lock file (key ``nb201/<name>``), then read it.

    The same rule as the other raw files (:mod:`nb360.data.rawfolder`): a pinned file must match its sha256;
    a file not pinned yet is read, and pinned only once it has been read without error.
    """
    path = Path(path)
    if not path.is_file():
        hint = near_names_hint(path.parent, path.name, OFFICIAL_FILES.values())
        raise RawDataError(
            f"NB201 table {path} is missing{hint}; download the official file by hand (nb201.md 6.3: Google "
            f"Drive / S3, which scripts cannot reach) and put it there under that name"
        )
    key = f"{RAW_SUBDIR}/{path.name}"
    digest = sha256_file(path)
    pinned = check_lock(lock, key, path, digest)
    table = read_official(path, task=task, hp=hp)
    if not pinned:
        lock.pin({key: (digest, path.stat().st_size, "local")})
    return table


# ------------------------------------------------------------------------------------------ search view


@dataclass(frozen=True)
class SearchView:
    """What the NAS algorithms search (their ``SearchTable`` protocol), precomputed for fast lookups.

    ``score`` and ``cost`` come from the low-fidelity table, ``final`` from the final one. The cost of a
    score after ``e`` epochs is the simulated time to get it, as NB360's patched NATS API charges it
    (nb201.md 6.3): the train time of epochs 1..e, plus one evaluation (that epoch's eval time) where the
    eval time is finite -- the NB360 files store NaN there, and then it is left out.
    """

    indices: tuple[int, ...]
    max_epochs: int
    final_higher_is_better: bool
    task: str
    _scores: Mapping[int, tuple[float, ...]] = field(repr=False)
    _costs: Mapping[int, tuple[float, ...]] = field(repr=False)
    _finals: Mapping[int, float] = field(repr=False)

    @classmethod
    def build(cls, low: Table, final: Table) -> SearchView:
        if low.task != final.task:
            raise TableError(f"the low-fidelity table is {low.task}, the final one {final.task}")
        missing = [i for i in low.indices if i not in final.cells]
        if missing:
            raise TableError(
                f"{len(missing)} searchable cells of the {low.task} hp={low.hp} table are not in the final "
                f"hp={final.hp} table (e.g. {missing[:5]}); the search could not report them"
            )
        scores, costs = {}, {}
        for i in low.indices:
            s, c = [], []
            for e in range(1, low.epochs + 1):
                q = low.query(i, e)
                s.append(q["test_acc"])
                c.append(q["train_time_total"] + (q["eval_time"] if math.isfinite(q["eval_time"]) else 0.0))
            scores[i], costs[i] = tuple(s), tuple(c)
        # NinaPro reports the test accuracy (%), Darcy the test relative L2 (lower is better)
        key = "test_acc" if low.task == "ninapro" else "test_loss"
        finals = {i: final.query(i)[key] for i in low.indices}
        return cls(low.indices, low.epochs, low.task == "ninapro", low.task, scores, costs, finals)

    def _lookup(self, table: Mapping[int, Any], index: int) -> Any:
        try:
            return table[index]
        except (KeyError, TypeError):
            raise TableError(f"cell {index!r} is not searchable in the {self.task} table") from None

    def _e(self, epochs: int) -> int:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or not 1 <= epochs <= self.max_epochs:
            raise TableError(f"epochs must be in 1..{self.max_epochs}, got {epochs!r}")
        return epochs - 1

    def score(self, index: int, epochs: int) -> float:
        """Test accuracy (NinaPro %, Darcy 1 - relL2) of the low-fidelity table after ``epochs`` epochs."""
        return self._lookup(self._scores, index)[self._e(epochs)]

    def cost(self, index: int, epochs: int) -> float:
        """Simulated seconds to obtain :meth:`score` (see the class docstring)."""
        return self._lookup(self._costs, index)[self._e(epochs)]

    def final(self, index: int) -> float:
        """The reported value: the final table's test accuracy (NinaPro) or test relL2 (Darcy)."""
        return self._lookup(self._finals, index)
