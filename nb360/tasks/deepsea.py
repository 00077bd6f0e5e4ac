"""DeepSEA: 1000 bp one-hot DNA -> 36 binary chromatin labels (multi-label, mean per-label ROC-AUC).

Official file (reference nb360.md 1.3): ``deepsea_filtered.npz`` (~860 MB, ``S3_BASE + "deepsea/..."``), a
plain (uncompressed) ``.npz`` holding ``x_train, y_train, x_val, y_val, x_test, y_test``. ``x`` is stored
(N, 1000, 4) one-hot and is permuted to channels first (N, 4, 1000); ``y`` is multi-hot (N, 36), a filtered
subset of the 919 DeepSEA targets. Real sizes 71,753 / ~2.5K / 149,400. The file is read with
``np.load(allow_pickle=False)``: an object (pickled) array is refused with an error.

Stored shards: ``x`` uint8 (N, 4, 1000) and ``y`` uint8 (N, 36). The real file's dtypes are not documented;
its stated size (860 MB for ~224K x 4000 values) fits one byte per value, i.e. uint8/bool. Any integer, bool
or float ``x`` whose values are all 0/1 is stored as uint8; a float ``x`` with other values (e.g. 0.25 for
N) is kept as float32 with a warning, so nothing is rounded away. ``y`` must be 0/1. ``make_batch`` casts
``x`` and ``y`` to float32 (BCE-with-logits targets). No normalisation (one-hot input).

Splits: search fits on train and selects on val. Retraining in the original trains on the **training split
only** (its loader ignores the retrain flag, reference 1.3 and 5.2): reproduced with
``Splits(retrain_fit=("train",))``, not treated as a bug.

Metric (reference 1.2/1.2b): mean over the 36 labels of scikit-learn ROC-AUC on the test split, ranked on
logits (or float64), skipping labels with a single class in the test split with a warning.

Embedded default (reference embedded-data-sources.md section 10): real DNA plus biophysical motif labels.

* Real DNA, 200 bp segments, from pinned PyPI artefacts:
  - janggu 0.10.2 wheel (GPL-3): ``sample.fa`` + ``sample_test.fa`` (3,997 Oct4 ChIP-seq peaks) and
    ``sample2.fa`` + ``sample2_test.fa`` (4,000 MafK peaks), all 200 bp (mouse, assembly not stated);
    ``sample_genome.fa`` (2 x 30 kb, origin not stated but it looks real: CpG observed/expected 0.26, 41 %
    soft-masked repeats), tiled into 200 bp. ``pseudo_genome.fa`` is not used: it is only the same peaks
    concatenated (checked).
  - deepaccess 0.1.3 wheel (MIT): mm10 random open/closed chromatin sequences and open/closed promoters
    (100 bp each, paired consecutively into 200 bp segments).
  - pyfaidx 0.9.0.3 sdist (BSD-3): ``tests/data/chr17.hg19.part.fa`` (40 kb of human chr17, tiled).
  Each segment belongs to one split only (train/val/test pools are disjoint), so no DNA is shared between
  splits. A 1000 bp window is a mosaic of five segments (random strand each): the central 200 bp (400-600,
  the bin DeepSEA labels) is an Oct4 peak (p 0.2), a MafK peak (p 0.2) or non-peak DNA (p 0.6); each of the
  four flanks is non-peak DNA (p 0.5) or an Oct4 / MafK peak (p 0.25 each). Segments are reused within a
  split, each before any is used again (non-peak segments about 7 times, peaks about 1.3 times).
* Motifs: 34 JASPAR 2024 CORE vertebrate matrices (pinned pyjaspar 4.0.0 wheel, ``JASPAR2024.sqlite``,
  read with sqlite3 from a temporary copy; JASPAR data CC BY 4.0). Sites sampled from each PWM are implanted
  at uniform positions on a random strand, in each window with a per-TF prevalence drawn from U(0.05, 0.3).
* Labels 0-33 (``LABEL_NAMES``: the matrix IDs): 1 iff the final window has a PWM match with p < 1e-4 on
  either strand anywhere in the window (implanted or natural site). Log-odds against a fixed genomic
  background (A/T 0.295, C/G 0.205) with a 1-count pseudocount, in integer units of 0.01 bit; the threshold
  is the smallest score whose exact null tail probability (dynamic programming over the columns) is <= 1e-4.
  Labels 34-35: the central 200 bp is a real Oct4 / MafK ChIP-seq peak (truly experimental labels).
* Sizes 3000 / 300 / 1000 windows; channel order A, G, C, T (``BASES``; the order usually reported for the
  DeepSEA data, unverified here; no model depends on it). Written uncompressed with fixed zip timestamps,
  so the same seed gives a byte-identical file.

Deviation: the embedded labels are motif-scan and ChIP-peak labels on mosaic windows, not the benchmark's
36 chromatin profiles (which are not available); only the format, shapes and protocol are the benchmark's.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nb360.data.pypi import PypiArtifact, fetch, read_member
from nb360.data.rawfolder import RawDataError, RawFolder
from nb360.data.shards import ShardArrays, SplitData
from nb360.tasks.base import (
    S3_BASE,
    BatchContext,
    EmbeddedContext,
    RawFile,
    RealCounts,
    Splits,
    TaskSpec,
    register_task,
)
from nb360.tasks.common import rng_for

log = logging.getLogger(__name__)

NPZ_NAME = "deepsea_filtered.npz"
SPLIT_NAMES = ("train", "val", "test")
SEQ_LEN = 1000
NUM_LABELS = 36
BASES = "AGCT"  # channel order of the one-hot encoding; complement of channel c is 3 - c
_CHUNK = 8192  # rows converted at a time (bounds the temporary memory on the 600 MB real test array)

# ----------------------------------------------------------------------------------------------------------
# Embedded sources (pinned artefacts and the sha256 of each member read)

JANGGU_WHEEL = PypiArtifact(
    "janggu",
    "0.10.2",
    "janggu-0.10.2-py2.py3-none-any.whl",
    "3825abe65578509232fcaa1e56f9eb5d71de105d70c9bcc9551357adc7d2fc47",
    license="GPL-3.0",
)
PYJASPAR_WHEEL = PypiArtifact(
    "pyjaspar",
    "4.0.0",
    "pyjaspar-4.0.0-py3-none-any.whl",
    "01b393f668c3cb552d3d58262a50005b1410e389e0a6bf5d570e976fbdaf01b3",
    license="MIT (package); JASPAR data CC BY 4.0",
)
DEEPACCESS_WHEEL = PypiArtifact(
    "deepaccess",
    "0.1.3",
    "deepaccess-0.1.3-py3-none-any.whl",
    "2980c61552fa7c39372ff51d657bb9bdf3a7c51490dfe667e5ad31c7be158540",
    license="MIT",
)
PYFAIDX_SDIST = PypiArtifact(
    "pyfaidx",
    "0.9.0.3",
    "pyfaidx-0.9.0.3.tar.gz",
    "648b4b28d98dcb06f9a62d88a956ebb998297f4bd2f04e05609d935a2c314a79",
    license="BSD-3-Clause (hg19 sequence from UCSC, public)",
)
_JR = "janggu/resources/"
_DA = "deepaccess/interpret/data/"
_CHR17 = "pyfaidx-0.9.0.3/tests/data/chr17.hg19.part.fa"
MEMBER_SHA256 = {
    _JR + "sample.fa": "effef1417ad2ca12514d5a4fe72741aaada7b29c16553655c4ed84ad83640e82",
    _JR + "sample_test.fa": "8972da4ec4dd2de58f52da113eb2d5c79d1584fb2662aa3a43349e78b0b23724",
    _JR + "sample2.fa": "0228f9e016bd91c642526136270b4efef75dc2916f906d47785fbe11c0fb94f8",
    _JR + "sample2_test.fa": "014cdfc16a3b57fc98f4bf8a7885dbbdf8f9e4a6b03a381365a8ddb415f27f5f",
    _JR + "sample_genome.fa": "ec6b3edaa6a2f12a88975b4120996a2c683b3036f49de670d93bc18152f3c774",
    _DA + "mm10_random_open.fa": "a4ff3168ffe87d343d9da981069b2aa602974ca4c14282d02cc1d7cf9ba22b06",
    _DA + "mm10_random_closed.fa": "17d879200ce3bac10b9938bda75fc72ba1e855fa248cebca4075cbc6b12058d2",
    _DA + "promoter_open.100.fa": "008b310d34eb44fbff93a4901e520e75036730ddac5adffbfc294e620ff886c4",
    _DA + "promoter_closed.100.fa": "47187a78f5d6911ce736d8cfad49c7ff0c2cc7d7b09df9416aedaa54b36f87ac",
    _CHR17: "3627f99f5cd6fa6a9e1a4e0494e64a9443871e0167fc6767b23cde73ca4030c1",
    "pyjaspar/data/JASPAR2024.sqlite": "6be3e14ab4e81fa907a7ed4ff11a5caf855e1175e3523ace5bd8182a930209a8",
}

# JASPAR 2024 CORE vertebrate matrices (ID: TF). Versions chosen long/informative enough for p < 1e-4 sites.
JASPAR_IDS = (
    "MA0139.2",  # CTCF
    "MA1115.1",  # POU5F1 (Oct4)
    "MA0496.3",  # MAFK
    "MA0143.4",  # SOX2
    "MA0142.1",  # Pou5f1::Sox2
    "MA0079.4",  # SP1
    "MA0035.4",  # GATA1
    "MA0148.4",  # FOXA1
    "MA0114.4",  # HNF4A
    "MA0466.3",  # CEBPB
    "MA0506.3",  # NRF1
    "MA0095.3",  # YY1
    "MA0138.3",  # REST
    "MA0106.3",  # TP53
    "MA0147.3",  # MYC
    "MA0093.3",  # USF1
    "MA0099.3",  # FOS::JUN
    "MA0105.4",  # NFKB1
    "MA0144.2",  # STAT3
    "MA0062.3",  # GABPA
    "MA0080.7",  # SPI1
    "MA0002.2",  # RUNX1
    "MA0090.3",  # TEAD1
    "MA0112.3",  # ESR1
    "MA0113.3",  # NR3C1
    "MA0046.2",  # HNF1A
    "MA0039.4",  # KLF4
    "MA0162.4",  # EGR1
    "MA0024.3",  # E2F1
    "MA0050.2",  # IRF1
    "MA0088.2",  # ZNF143
    "MA0083.3",  # SRF
    "MA0052.4",  # MEF2A
    "MA0060.3",  # NFYA
)
EXPERIMENTAL_LABELS = ("janggu:Oct4_ChIP_peak_centre", "janggu:MafK_ChIP_peak_centre")
LABEL_NAMES = JASPAR_IDS + EXPERIMENTAL_LABELS

# Background base frequencies (A, G, C, T order as BASES) for log-odds and the null distribution.
BACKGROUND = np.array([0.295, 0.205, 0.205, 0.295])
P_VALUE = 1e-4
SCORE_SCALE = 100  # integer scores in units of 0.01 bit: exact sums, exact p-value thresholds
PREVALENCE_RANGE = (0.05, 0.3)
CENTRE_KIND_P = (0.6, 0.2, 0.2)  # non-peak, Oct4 peak, MafK peak
FLANK_KIND_P = (0.5, 0.25, 0.25)  # peaks are rarer in a genome, but non-peak DNA is scarce here
SEGMENT = 200
EMBEDDED_SIZES = {"train": 3000, "val": 300, "test": 1000}

# ----------------------------------------------------------------------------------------------------------
# Reader


def _load_member(z: np.lib.npyio.NpzFile, name: str, path: Path) -> np.ndarray:
    if name not in z.files:
        raise RawDataError(
            f"{path} has no array {name!r} (has: {', '.join(z.files)}); the official file holds "
            "x_train, y_train, x_val, y_val, x_test, y_test: fetch it again"
        )
    try:
        return z[name]
    except ValueError as e:  # object arrays need pickle, which is refused
        raise RawDataError(
            f"{path}: array {name!r} cannot be read without unpickling ({e}); the official file holds plain "
            "numeric arrays, so this copy is not it: fetch deepsea_filtered.npz again"
        ) from e


def _all_binary(a: np.ndarray) -> bool:
    if a.dtype == bool:
        return True
    for s in range(0, len(a), _CHUNK):
        c = a[s : s + _CHUNK]
        if not np.all((c == 0) | (c == 1)):
            return False
    return True


def _read_x(x: np.ndarray, where: str) -> np.ndarray:
    """(N, 1000, 4) one-hot -> channels-first (N, 4, 1000), uint8 when every value is 0/1."""
    if x.ndim != 3 or x.shape[1:] != (SEQ_LEN, 4):
        raise RawDataError(
            f"{where}: expected x of shape (N, {SEQ_LEN}, 4), got {x.shape}; fetch the file again"
        )
    if x.dtype.kind not in "biuf":
        raise RawDataError(
            f"{where}: expected a numeric one-hot x, got dtype {x.dtype}; fetch the file again"
        )
    if x.dtype.kind == "f" and not all(
        np.isfinite(x[s : s + _CHUNK]).all() for s in range(0, len(x), _CHUNK)
    ):
        raise RawDataError(f"{where}: x holds NaN or inf values; the file is corrupt: fetch it again")
    binary = _all_binary(x)
    if not binary:
        log.warning("%s: x is not 0/1 one-hot (dtype %s); kept as float32", where, x.dtype)
    out = np.empty((len(x), 4, SEQ_LEN), dtype=np.uint8 if binary else np.float32)
    for s in range(0, len(x), _CHUNK):
        out[s : s + _CHUNK] = x[s : s + _CHUNK].transpose(0, 2, 1)
    return out


def _read_y(y: np.ndarray, n: int, where: str) -> np.ndarray:
    if y.shape != (n, NUM_LABELS):
        raise RawDataError(
            f"{where}: expected y of shape ({n}, {NUM_LABELS}), got {y.shape}; fetch the file again"
        )
    if y.dtype.kind not in "biuf" or not _all_binary(y):
        raise RawDataError(f"{where}: y must be multi-hot 0/1 (dtype {y.dtype}); fetch the file again")
    return y.astype(np.uint8)


def read_raw(raw: RawFolder) -> dict[str, SplitData]:
    path = raw.path(NPZ_NAME)
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise RawDataError(f"{path} is not a readable .npz file ({e}); fetch it again") from e
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise RawDataError(f"{path} is a single .npy array, not the official .npz archive; fetch it again")
    out = {}
    with z:
        for split in SPLIT_NAMES:
            x = _read_x(_load_member(z, f"x_{split}", path), f"{path} x_{split}")
            y = _read_y(_load_member(z, f"y_{split}", path), len(x), f"{path} y_{split}")
            out[split] = SplitData(items={"x": x, "y": y})
    return out


def make_batch(shard: ShardArrays, idx: np.ndarray, ctx: BatchContext) -> dict[str, np.ndarray]:
    """``x`` float32 (B, 4, 1000) one-hot; ``y`` float32 (B, 36) targets for BCE-with-logits."""
    return {
        "x": shard.items("x", idx).astype(np.float32, copy=False),
        "y": shard.items("y", idx).astype(np.float32, copy=False),
    }


# ----------------------------------------------------------------------------------------------------------
# Motifs: JASPAR matrices, exact p-value thresholds, vectorised scan


@dataclass(frozen=True)
class Motif:
    """One PWM in ``BASES`` order: ``probs`` (L, 4), integer log-odds ``scores`` (L, 4), ``threshold``."""

    matrix_id: str
    name: str
    probs: np.ndarray
    scores: np.ndarray
    threshold: int

    @property
    def length(self) -> int:
        return len(self.probs)


def _member(archive: Path, member: str) -> bytes:
    data = read_member(archive, member)
    if hashlib.sha256(data).hexdigest() != MEMBER_SHA256[member]:
        raise RawDataError(
            f"{member} in {archive} does not match its pinned sha256; delete {archive} to refetch"
        )
    return data


def _null_threshold(scores: np.ndarray, background: np.ndarray, p_value: float) -> int:
    """Smallest integer score s with P(score >= s) <= p_value for a background-distributed site (exact DP)."""
    low = scores.min(axis=1)
    shifted = scores - low[:, None]
    dist = np.ones(1)
    for col in shifted:
        new = np.zeros(len(dist) + int(col.max()))
        for b in range(4):
            new[col[b] : col[b] + len(dist)] += background[b] * dist
        dist = new
    tail = np.cumsum(dist[::-1])[::-1]  # tail[i] = P(shifted score >= i)
    ok = np.nonzero(tail <= p_value)[0]
    if len(ok) == 0:
        raise ValueError("no score reaches the p-value threshold")
    return int(ok[0] + low.sum())


def load_jaspar_motifs(cache_dir: Path, ids: tuple[str, ...] = JASPAR_IDS) -> list[Motif]:
    """The pinned JASPAR 2024 matrices ``ids`` with log-odds scores and p < 1e-4 thresholds."""
    wheel = fetch(PYJASPAR_WHEEL, cache_dir)
    blob = _member(wheel, "pyjaspar/data/JASPAR2024.sqlite")
    order = ["ACGT".index(b) for b in BASES]  # JASPAR rows are A, C, G, T
    motifs = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "JASPAR2024.sqlite"
        db.write_bytes(blob)
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            for mid in ids:
                base, version = mid.split(".")
                row = con.execute(
                    "SELECT ID, NAME FROM MATRIX WHERE BASE_ID = ? AND VERSION = ? AND COLLECTION = 'CORE'",
                    (base, int(version)),
                ).fetchone()
                if row is None:
                    raise ValueError(
                        f"JASPAR matrix {mid} is not in the CORE collection of {PYJASPAR_WHEEL.filename}"
                    )
                tax = con.execute(
                    "SELECT VAL FROM MATRIX_ANNOTATION WHERE ID = ? AND TAG = 'tax_group'", (row[0],)
                ).fetchone()
                if tax is None or tax[0] != "vertebrates":
                    raise ValueError(f"JASPAR matrix {mid} is not a vertebrate matrix")
                cells = con.execute(
                    "SELECT row, col, val FROM MATRIX_DATA WHERE ID = ?", (row[0],)
                ).fetchall()
                length = max(c[1] for c in cells)
                counts = np.zeros((length, 4))
                for base_letter, col, val in cells:
                    counts[col - 1, "ACGT".index(base_letter.upper())] = val
                counts = counts[:, order]
                probs = (counts + BACKGROUND) / (
                    counts.sum(axis=1, keepdims=True) + 1.0
                )  # 1-count pseudocount
                scores = np.round(SCORE_SCALE * np.log2(probs / BACKGROUND)).astype(np.int64)
                motifs.append(Motif(mid, row[1], probs, scores, _null_threshold(scores, BACKGROUND, P_VALUE)))
        finally:
            con.close()
    return motifs


def pwm_match_labels(codes: np.ndarray, motifs: list[Motif], chunk: int = 128) -> np.ndarray:
    """(N, M) bool: window n has a match of motif m (score >= threshold) on either strand.

    ``codes`` are base indices (N, L) in ``BASES`` order (-1 or 4 for unknown bases score 0). The scan is one
    matrix product per chunk: sliding one-hot windows (positions, Lmax * 4) times all motifs on both strands.
    """
    n, length = codes.shape
    lmax = max(m.length for m in motifs)
    w = np.zeros((lmax, 4, 2 * len(motifs)), dtype=np.float32)
    valid_last = np.zeros(2 * len(motifs), dtype=np.int64)
    thresholds = np.zeros(2 * len(motifs), dtype=np.float32)
    for j, m in enumerate(motifs):
        w[: m.length, :, 2 * j] = m.scores
        w[: m.length, :, 2 * j + 1] = m.scores[::-1, ::-1]  # reverse complement (complement = 3 - c)
        valid_last[2 * j : 2 * j + 2] = length - m.length  # last start with the whole site inside
        thresholds[2 * j : 2 * j + 2] = m.threshold
    w = w.reshape(lmax * 4, -1)
    starts = np.arange(length)[:, None]
    valid = starts <= valid_last[None, :]  # (positions, 2M)
    out = np.zeros((n, len(motifs)), dtype=bool)
    eye = np.vstack([np.eye(4, dtype=np.float32), np.zeros((1, 4), np.float32)])
    for s in range(0, n, chunk):
        c = codes[s : s + chunk].astype(np.int64)
        c = np.where((c >= 0) & (c < 4), c, 4)
        onehot = eye[np.pad(c, ((0, 0), (0, lmax - 1)), constant_values=4)]  # (b, L + lmax - 1, 4)
        win = np.lib.stride_tricks.sliding_window_view(onehot, lmax, axis=1)  # (b, L, 4, lmax)
        flat = np.ascontiguousarray(win.transpose(0, 1, 3, 2)).reshape(-1, lmax * 4)
        scores = (flat @ w).reshape(len(c), length, -1)
        hit = ((scores >= thresholds) & valid).any(axis=1)  # (b, 2M)
        out[s : s + chunk] = hit.reshape(len(c), -1, 2).any(axis=2)
    return out


def codes_from_onehot(x: np.ndarray) -> np.ndarray:
    """(N, 4, L) one-hot -> (N, L) base indices in ``BASES`` order (-1 where no channel is set)."""
    codes = x.argmax(axis=1).astype(np.int8)
    codes[x.max(axis=1) == 0] = -1
    return codes


# ----------------------------------------------------------------------------------------------------------
# Embedded generator


def _fasta(text: bytes) -> list[bytes]:
    seqs: list[bytes] = []
    cur: list[bytes] = []
    for line in text.splitlines():
        if line.startswith(b">"):
            if cur:
                seqs.append(b"".join(cur))
            cur = []
        elif line.strip():
            cur.append(line.strip())
    if cur:
        seqs.append(b"".join(cur))
    return seqs


_LUT = np.full(256, -1, dtype=np.int8)
for _i, _b in enumerate(BASES):
    _LUT[ord(_b)] = _LUT[ord(_b.lower())] = _i


def _segments(seqs: list[bytes], pair: bool = False) -> np.ndarray:
    """200 bp segments (S, 200) int8 codes: tiles of each sequence (or consecutive 100 bp pairs)."""
    if pair:
        seqs = [a + b for a, b in zip(seqs[0::2], seqs[1::2], strict=False)]
    rows = []
    for s in seqs:
        codes = _LUT[np.frombuffer(s, dtype=np.uint8)]
        k = len(codes) // SEGMENT
        rows.append(codes[: k * SEGMENT].reshape(k, SEGMENT))
    seg = np.concatenate(rows)
    return seg[(seg >= 0).all(axis=1)]  # drop segments with N or other letters


def real_segments(cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """All real 200 bp segments (S, 200) int8 and their kind (0 non-peak, 1 Oct4 peak, 2 MafK peak)."""
    janggu = fetch(JANGGU_WHEEL, cache_dir)
    deepaccess = fetch(DEEPACCESS_WHEEL, cache_dir)
    pyfaidx = fetch(PYFAIDX_SDIST, cache_dir)

    def fa(archive: Path, member: str) -> list[bytes]:
        return _fasta(_member(archive, member))

    oct4 = _segments(fa(janggu, _JR + "sample.fa") + fa(janggu, _JR + "sample_test.fa"))
    mafk = _segments(fa(janggu, _JR + "sample2.fa") + fa(janggu, _JR + "sample2_test.fa"))
    other = [_segments(fa(janggu, _JR + "sample_genome.fa"))]
    for name in (
        "mm10_random_open.fa",
        "mm10_random_closed.fa",
        "promoter_open.100.fa",
        "promoter_closed.100.fa",
    ):
        other.append(_segments(fa(deepaccess, _DA + name), pair=True))
    other.append(_segments(fa(pyfaidx, _CHR17)))
    background = np.concatenate(other)
    seg = np.concatenate([background, oct4, mafk])
    kind = np.repeat(np.arange(3, dtype=np.int8), [len(background), len(oct4), len(mafk)])
    return seg, kind


def _draw(pool: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` items of ``pool``, each used once before any is reused (balanced reuse)."""
    reps = -(-k // len(pool))
    return np.concatenate([rng.permutation(pool) for _ in range(reps)])[:k]


def _assemble(
    seg: np.ndarray, kind: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` windows (n, 1000) of five segments; the centre's kind per window."""
    slots = SEQ_LEN // SEGMENT
    centre_kind = rng.choice(3, size=n, p=CENTRE_KIND_P).astype(np.int8)
    pick = np.zeros((n, slots), dtype=np.int64)
    for k in range(3):
        rows = np.nonzero(centre_kind == k)[0]
        pick[rows, slots // 2] = _draw(np.nonzero(kind == k)[0], len(rows), rng)
    flank = np.array([i for i in range(slots) if i != slots // 2])
    flank_kind = rng.choice(3, size=(n, len(flank)), p=FLANK_KIND_P)
    for k in range(3):
        rows, cols = np.nonzero(flank_kind == k)
        pick[rows, flank[cols]] = _draw(np.nonzero(kind == k)[0], len(rows), rng)
    windows = seg[pick]  # (n, slots, 200)
    flip = rng.random((n, slots)) < 0.5
    windows[flip] = 3 - windows[flip][:, ::-1]  # reverse complement
    return windows.reshape(n, SEQ_LEN), centre_kind


def _implant(
    codes: np.ndarray, motifs: list[Motif], prevalence: np.ndarray, rng: np.random.Generator
) -> None:
    """Overwrite PWM-sampled sites (random position and strand) in a ``prevalence`` share of windows."""
    n = len(codes)
    for m, p in zip(motifs, prevalence, strict=True):
        rows = np.nonzero(rng.random(n) < p)[0]
        cdf = np.cumsum(m.probs, axis=1)
        u = rng.random((len(rows), m.length))
        site = (u[:, :, None] > cdf[None, :, :3]).sum(axis=2).astype(np.int8)
        rc = rng.random(len(rows)) < 0.5
        site[rc] = 3 - site[rc][:, ::-1]
        start = rng.integers(0, SEQ_LEN - m.length + 1, size=len(rows))
        codes[rows[:, None], start[:, None] + np.arange(m.length)] = site


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez`` (stored, not compressed) but with fixed member timestamps, so bytes repeat."""
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)
    tmp.replace(path)


def generate_embedded(out_dir: Path, ctx: EmbeddedContext) -> None:
    seg, kind = real_segments(ctx.cache_dir)
    motifs = load_jaspar_motifs(ctx.cache_dir)
    prevalence = rng_for(ctx.seed, "deepsea", "prevalence").uniform(*PREVALENCE_RANGE, size=len(motifs))
    # Disjoint segment pools per split, proportional to the split sizes, kind by kind.
    total = sum(EMBEDDED_SIZES.values())
    owner = np.empty(len(seg), dtype=np.int8)
    rng = rng_for(ctx.seed, "deepsea", "pools")
    for k in range(3):
        idx = rng.permutation(np.nonzero(kind == k)[0])
        cuts = np.round(np.cumsum([EMBEDDED_SIZES[s] for s in SPLIT_NAMES]) / total * len(idx)).astype(int)
        for i, part in enumerate(np.split(idx, cuts[:-1])):
            owner[part] = i
    arrays = {}
    eye = np.eye(4, dtype=np.uint8)
    for i, split in enumerate(SPLIT_NAMES):
        srng = rng_for(ctx.seed, "deepsea", split)
        mine = owner == i
        codes, centre = _assemble(seg[mine], kind[mine], EMBEDDED_SIZES[split], srng)
        _implant(codes, motifs, prevalence, srng)
        y = np.zeros((len(codes), NUM_LABELS), dtype=np.uint8)
        y[:, : len(motifs)] = pwm_match_labels(codes, motifs)
        y[:, len(motifs)] = centre == 1
        y[:, len(motifs) + 1] = centre == 2
        arrays[f"x_{split}"] = eye[codes]  # (N, 1000, 4), the official layout
        arrays[f"y_{split}"] = y
    _write_npz(out_dir / NPZ_NAME, arrays)


SPEC = register_task(
    TaskSpec(
        name="deepsea",
        title="DeepSEA",
        dim=1,
        input_shape=(4, SEQ_LEN),
        output_kind="multi_label",
        num_outputs=NUM_LABELS,
        loss="bce_with_logits",
        metric="auroc",
        metric_lower_is_better=False,
        paper_metric="one_minus_auroc",
        raw_files=(RawFile(NPZ_NAME, S3_BASE + "deepsea/" + NPZ_NAME, 860_000_000),),
        read_raw=read_raw,
        generate_embedded=generate_embedded,
        splits=Splits(
            retrain_fit=("train",),
            description="retraining fits on the training split only, as the original loader does",
        ),
        make_batch=make_batch,
        real_counts=RealCounts(
            {"train": 71_753, "test": 149_400},
            "nb360.md 1.1 and its notes",
            unchecked="the validation count is documented only as about 2.5K",
        ),
        items_per_shard=50_000,
        license="CC BY 4.0",
        reference="nb360.md 1.1-1.3 DeepSEA, 5.2; embedded-data-sources.md section 10",
        notes="labels: " + ", ".join(LABEL_NAMES),
    )
)
