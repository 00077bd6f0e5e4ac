import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler

from nb360.data.loader import ShardDataset, make_loader
from nb360.data.rawfolder import RawDataError, RawFolder
from nb360.data.shards import ShardArrays, open_shards, sha256_file
from nb360.tasks import BatchContext, EmbeddedContext, get_task
from nb360.tasks import fsd50k as F
from nb360.train.loop import phase_splits

TASK = "fsd50k"
SR = 22050


def _shard(embedded, split: str) -> ShardArrays:
    shards = open_shards(embedded.manifest(TASK), [split])
    assert len(shards) == 1  # the embedded splits fit one shard each
    return shards[0]


def _reference_logmel(audio: np.ndarray) -> np.ndarray:
    """Independent reference: torch.stft + a per-filter HTK filterbank + librosa-default power_to_db."""
    if len(audio) < SR:
        audio = np.tile(audio, SR // len(audio) + 1)[:SR]
    spec = torch.stft(
        torch.from_numpy(np.asarray(audio, np.float64)),
        n_fft=1920,
        hop_length=220,
        win_length=661,
        window=torch.hann_window(661, dtype=torch.float64),
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    power = (spec.abs() ** 2).numpy()  # (961, T)
    freqs = np.linspace(0, SR // 2, 961)
    mel = np.linspace(0, 2595 * np.log10(1 + (SR // 2) / 700), 98)
    hz = 700 * (10 ** (mel / 2595) - 1)
    fb = np.zeros((96, 961))
    for m in range(96):
        lo, mid, hi = hz[m], hz[m + 1], hz[m + 2]
        fb[m] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
    db = 10 * np.log10(np.maximum(fb @ power, 1e-10))
    db = np.maximum(db, db.max() - 80) + 75
    return db - db.mean()


def _clip_map(scores: np.ndarray, y: np.ndarray, group: np.ndarray) -> tuple[float, list[int]]:
    """nb360.md 1.2: chunk scores averaged per clip, AP per class, macro mean. Classes without a positive
    clip are left out (their AP is undefined)."""
    n = group.max() + 1
    clip_scores = np.zeros((n, scores.shape[1]))
    np.add.at(clip_scores, group, scores)
    clip_scores /= np.bincount(group, minlength=n)[:, None]
    first = np.unique(group, return_index=True)[1]
    clip_y = y[first]
    classes = [k for k in range(y.shape[1]) if clip_y[:, k].any()]
    return float(
        np.mean([average_precision_score(clip_y[:, k], clip_scores[:, k]) for k in classes])
    ), classes


def test_archive_is_in_the_official_layout(embedded):
    with zipfile.ZipFile(embedded.raw_dir(TASK) / "audio.zip") as z:
        names = set(z.namelist())
        assert not any(n.startswith("data/") for n in names)
        assert {"chunks/tr.csv", "chunks/val.csv", "chunks/eval.csv", "chunks/lbl_map.json"} <= names
        lbl_map = json.loads(z.read("chunks/lbl_map.json"))
        assert sorted(lbl_map.values()) == list(range(200))
        assert list(lbl_map) == sorted(F.FSD50K_LABELS)
        for name, n_clips in (("tr", 600), ("val", 100), ("eval", 200)):
            rows = list(csv.reader(io.StringIO(z.read(f"chunks/{name}.csv").decode())))
            assert rows[0] == ["files", "labels", "ext"]
            files, labels, ext = zip(*rows[1:], strict=True)
            assert all(f.startswith("data/") and f[5:] in names for f in files)
            assert len(set(ext)) == n_clips
            assert all(set(lb.split(",")) <= set(lbl_map) for lb in labels)
            # the recipe shuffles tr.csv and sorts the others by clip id
            assert (list(ext) == sorted(ext)) == (name != "tr")
        audio, sr = sf.read(io.BytesIO(z.read(files[0][5:])))
        info = sf.info(io.BytesIO(z.read(files[0][5:])))
        assert sr == SR and audio.shape == (SR,) and info.subtype == "PCM_16"
        noise = sorted(n for n in names if n.startswith("noise_22050/"))
        assert len(noise) == 4 and sf.info(io.BytesIO(z.read(noise[0]))).samplerate == SR


def test_splits_shapes_labels_and_normalisation(embedded):
    manifest = embedded.manifest(TASK)
    assert set(manifest["splits"]) == {"train", "val", "test", "noise"}
    lbl_index = {name: i for i, name in enumerate(sorted(F.FSD50K_LABELS))}
    used = {lbl_index[lb] for labels, _, _ in F.ANIMALS.values() for lb in labels}
    for split, n_clips in (("train", 600), ("val", 100), ("test", 200)):
        s = _shard(embedded, split)
        x, y, clip, ext = (s.items(k) for k in ("x", "y", "clip", "ext"))
        assert x.shape == (s.n_items, 1, 96, 101) and x.dtype == np.float16
        assert y.shape == (s.n_items, 200) and y.dtype == np.uint8 and set(np.unique(y)) == {0, 1}
        assert np.isfinite(x).all()
        # chunks of a clip contiguous, clip indices 0..n-1 in clip-id order, ~5.5 chunks per clip
        assert clip[0] == 0 and set(np.diff(clip)) <= {0, 1} and clip[-1] == n_clips - 1
        assert (np.diff(ext)[np.diff(clip) == 1] > 0).all() and (np.diff(ext)[np.diff(clip) == 0] == 0).all()
        assert 3 < s.n_items / n_clips < 8
        first = np.unique(clip, return_index=True)[1]
        assert (y == y[first][clip]).all()  # chunks inherit their clip's labels
        assert y.sum(1).min() >= 1 and set(np.flatnonzero(y.any(0))) <= used
        # power_to_db clamp at 80 dB below the chunk's maximum, then per-chunk mean subtraction
        xf = x.astype(np.float32)
        assert np.abs(xf.mean(axis=(1, 2, 3))).max() < 0.05
        assert (xf.max(axis=(1, 2, 3)) - xf.min(axis=(1, 2, 3))).max() <= 80.1
    assert _shard(embedded, "train").items("y").any(0).sum() == len(used)
    noise = _shard(embedded, "noise")
    assert noise.n_items == 8 and not noise.items("y").any()
    assert np.array_equal(noise.items("clip"), np.repeat(np.arange(4), 2))


def test_features_match_an_independent_reference(embedded):
    fb = F.mel_filterbank()
    assert fb.shape == (961, 96) and np.isclose(fb.max(), 1, atol=0.05)  # unnormalised triangles
    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    tone = 0.3 * np.sin(2 * np.pi * 1000 * t) + 0.01 * rng.standard_normal(SR)
    pure = 0.3 * np.sin(2 * np.pi * 1000 * t)
    for audio in (pure, tone, 0.1 * rng.standard_normal(SR), 0.2 * rng.standard_normal(5000)):
        got, ref = F.logmel(audio), _reference_logmel(audio)
        assert got.shape == (96, 101)
        np.testing.assert_allclose(got, ref, atol=2e-3)
    assert np.isclose(np.ptp(F.logmel(pure)), 80.0)  # the 80-dB clamp is active on a pure tone
    # a stored test chunk equals the features of its wav
    with zipfile.ZipFile(embedded.raw_dir(TASK) / "audio.zip") as z:
        row = next(csv.DictReader(io.StringIO(z.read("chunks/eval.csv").decode())))
        audio, _ = sf.read(io.BytesIO(z.read(row["files"][5:])), dtype="float32")
    s = _shard(embedded, "test")
    first = int(np.flatnonzero(s.items("ext") == int(row["ext"]))[0])
    np.testing.assert_allclose(
        s.items("x", [first])[0, 0].astype(np.float32), _reference_logmel(audio), atol=0.07
    )


def test_make_batch_training_samples_one_chunk_per_clip(embedded):
    spec = get_task(TASK)
    s = _shard(embedded, "train")
    x_all, y_all, clip = s.items("x").astype(np.float32), s.items("y"), s.items("clip")
    n_clips = clip[-1] + 1
    assert spec.num_samples(s, True) == n_clips and spec.num_samples(s, False) == s.n_items
    assert len(ShardDataset(embedded.manifest(TASK), ["train"], train=True)) == n_clips
    idx = np.arange(n_clips)

    def batch(seed):
        return spec.make_batch(
            s, idx, BatchContext(train=True, normaliser={}, rng=np.random.default_rng(seed))
        )

    b = batch(1)
    assert b["x"].shape == (n_clips, 1, 96, 101) and b["x"].dtype == np.float32
    assert b["y"].dtype == np.float32 and np.array_equal(b["group"], idx)
    first = np.unique(clip, return_index=True)[1]
    assert np.array_equal(b["y"], y_all[first].astype(np.float32))

    def chosen(x):
        rows, exact = [], 0
        for i in idx:
            # each sample is one of its clip's chunks, SpecAugment-masked (set to the chunk minimum) or not
            match = [
                r for r in np.flatnonzero(clip == i) if ((x[i] == x_all[r]) | (x[i] == x_all[r].min())).all()
            ]
            assert match, f"sample {i} is none of its clip's chunks"
            exact += any((x[i] == x_all[r]).all() for r in match)
            rows.append(match[0])
        return np.array(rows), exact

    rows1, exact = chosen(b["x"])
    assert 0.35 < exact / n_clips < 0.65  # SpecAugment with probability 0.5
    rows2, _ = chosen(batch(2)["x"])
    multi = np.bincount(clip)[idx] > 1
    assert (rows1 != rows2)[multi].mean() > 0.5  # a fresh random chunk per clip and epoch
    assert np.array_equal(batch(1)["x"], b["x"])  # ctx.rng is the only source of randomness


def test_retraining_fits_on_the_training_clips_only(embedded):
    """As the original's load_audio(train=False): retraining sees the training clips, never val."""
    spec = get_task(TASK)
    fit_splits, report = phase_splits(spec, "retrain")
    assert (fit_splits, report) == (("train",), ("test",))
    manifest = embedded.manifest(TASK)
    n_train_clips = int(_shard(embedded, "train").items("clip")[-1]) + 1
    n_val_clips = int(_shard(embedded, "val").items("clip")[-1]) + 1
    loader = make_loader(manifest, fit_splits, batch_size=64, train=True, seed=0, fit_splits=fit_splits)
    assert len(loader.dataset) == n_train_clips and n_val_clips > 0
    ids = np.concatenate([b["group"].numpy() for b in loader])
    assert sorted(ids.tolist()) == list(range(n_train_clips))  # every training clip once per epoch


def test_make_batch_evaluation_is_every_chunk_with_its_clip(embedded):
    spec = get_task(TASK)
    s = _shard(embedded, "val")
    idx = np.arange(s.n_items)
    b = spec.make_batch(s, idx, BatchContext(train=False, normaliser={}, rng=np.random.default_rng(0)))
    assert b["x"].shape == (s.n_items, 1, 96, 101) and b["x"].dtype == np.float32
    np.testing.assert_array_equal(b["x"], s.items("x").astype(np.float32))
    np.testing.assert_array_equal(b["y"], s.items("y").astype(np.float32))
    np.testing.assert_array_equal(b["group"], s.items("clip"))
    assert len(ShardDataset(embedded.manifest(TASK), ["val"], train=False)) == s.n_items


def test_training_pad_specaugment_and_crop():
    rng = np.random.default_rng(0)
    spec = rng.standard_normal((96, 60)).astype(np.float32)
    wrapped = F.pad_to(spec, 101, "wrap")
    const = F.pad_to(spec, 101, "constant")
    assert wrapped.shape == const.shape == (96, 101)
    np.testing.assert_array_equal(wrapped[:, 20:80], spec)  # centred: 20 frames left, 21 right
    np.testing.assert_array_equal(wrapped[:, :20], spec[:, -20:])
    assert (const[:, :20] == spec.min()).all() and (const[:, 80:] == spec.min()).all()
    for seed in range(50):
        masked = F.spec_augment(spec, np.random.default_rng(seed))
        rows = (masked == spec.min()).all(axis=1) & ~(spec == spec.min()).all(axis=1)
        cols = (masked == spec.min()).all(axis=0) & ~(spec == spec.min()).all(axis=0)
        # every changed value lies in a masked band or a masked frame
        assert not ((masked != spec) & ~rows[:, None] & ~cols[None, :]).any()
        assert rows.sum() <= 2 * int(0.15 * 96) and cols.sum() <= 2 * int(0.2 * 60)
    wide = rng.standard_normal((96, 130)).astype(np.float32)
    out = F.train_transform(wide, np.random.default_rng(3))
    assert out.shape == (96, 101)


def _mini_archive(
    path: Path, *, drop_member: bool = False, bad_rate: bool = False, no_ext: bool = False
) -> None:
    """A hand-made archive in the official format: reversed label indices, shuffled training rows, a short
    chunk, a stereo chunk and a noise file."""
    rng = np.random.default_rng(0)
    names = sorted(F.FSD50K_LABELS)
    lbl_map = {n: 199 - i for i, n in enumerate(names)}
    wav = {}

    def add(name, audio, sr=SR):
        buf = io.BytesIO()
        sf.write(buf, audio, sr, subtype="PCM_16", format="WAV")
        wav[name] = buf.getvalue()

    add("chunks/dev/7_0000.wav", 0.3 * rng.uniform(-1, 1, SR))
    add("chunks/dev/7_0001.wav", 0.3 * rng.uniform(-1, 1, SR), sr=16000 if bad_rate else SR)
    add("chunks/dev/3_0000.wav", 0.3 * rng.uniform(-1, 1, 6615))  # 0.3 s: tiled to 1 s
    add("chunks/dev/5_0000.wav", 0.3 * rng.uniform(-1, 1, (SR, 2)))  # stereo
    add("chunks/eval/9_0000.wav", 0.3 * rng.uniform(-1, 1, SR))
    add("noise_22050/noise-0000.wav", 0.1 * rng.uniform(-1, 1, 3 * SR))
    manifests = {
        "tr": [("7_0001", "Bark,Dog,Animal"), ("3_0000", "Frog"), ("7_0000", "Bark,Dog,Animal")],
        "val": [("5_0000", "Meow")],
        "eval": [("9_0000", "Hi-hat,Fill_(with_liquid)")],
    }
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("chunks/lbl_map.json", json.dumps(lbl_map))
        for split, rows in manifests.items():
            # eval.csv as the recipe writes it, with absolute paths: matched by the chunk file name
            root = "/abs/eval_22050_chunks" if split == "eval" else "data/chunks/dev"
            table = [["files", "labels", "ext"]] + [
                [f"{root}/{c}.wav", lb, c.split("_")[0]] for c, lb in rows
            ]
            if split == "val" and no_ext:
                table = [r[:2] for r in table]
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows(table)
            z.writestr(f"chunks/{split}.csv", buf.getvalue())
        for name, data in wav.items():
            if not (drop_member and name == "chunks/dev/3_0000.wav"):
                z.writestr(name, data)


def test_reader_on_a_hand_made_archive(tmp_path):
    _mini_archive(tmp_path / "audio.zip")
    splits = F.read_raw(RawFolder(tmp_path, {}))
    tr = splits["train"].items
    assert tr["ext"].tolist() == [3, 7, 7] and tr["clip"].tolist() == [0, 1, 1]
    names = sorted(F.FSD50K_LABELS)
    assert np.flatnonzero(tr["y"][0]).tolist() == [199 - names.index("Frog")]
    assert sorted(np.flatnonzero(tr["y"][1])) == sorted(
        199 - names.index(n) for n in ("Bark", "Dog", "Animal")
    )
    with zipfile.ZipFile(tmp_path / "audio.zip") as z:
        short, _ = sf.read(io.BytesIO(z.read("chunks/dev/3_0000.wav")), dtype="float32")
        stereo, _ = sf.read(io.BytesIO(z.read("chunks/dev/5_0000.wav")), dtype="float32")
    np.testing.assert_allclose(tr["x"][0, 0].astype(np.float32), _reference_logmel(short), atol=0.07)
    val_x = splits["val"].items["x"][0, 0].astype(np.float32)
    np.testing.assert_allclose(val_x, _reference_logmel(stereo.mean(1)), atol=0.07)
    assert splits["noise"].items["x"].shape == (2, 1, 96, 101)  # 301 frames -> 2 windows
    ev = splits["test"].items
    assert ev["ext"].tolist() == [9] and ev["y"][0].sum() == 2
    _mini_archive(tmp_path / "audio.zip", drop_member=True)
    with pytest.raises(RawDataError, match=r"3_0000\.wav"):
        F.read_raw(RawFolder(tmp_path, {}))
    _mini_archive(tmp_path / "audio.zip", bad_rate=True)
    with pytest.raises(RawDataError, match="sample rate 16000"):
        F.read_raw(RawFolder(tmp_path, {}))
    _mini_archive(tmp_path / "audio.zip", no_ext=True)
    with pytest.raises(RawDataError, match=r"val\.csv lacks the column\(s\) \['ext'\]"):
        F.read_raw(RawFolder(tmp_path, {}))


def test_embedded_generation_is_deterministic(embedded, pypi_cache, tmp_path):
    F.generate_embedded(tmp_path, EmbeddedContext(seed=0, cache_dir=pypi_cache))
    stamp = json.loads(embedded.stamp(TASK).read_text())
    assert sha256_file(tmp_path / "audio.zip") == stamp["files"]["audio.zip"]["sha256"]


def test_logistic_regression_beats_the_label_prior(embedded):
    def pooled(s):
        x = s.items("x").astype(np.float32)[:, 0]
        x = x.reshape(len(x), 48, 2, -1).mean(2)  # 48 band pairs
        return np.concatenate([x.mean(-1), x.std(-1)], axis=1)

    tr, te = _shard(embedded, "train"), _shard(embedded, "test")
    y_tr, y_te = tr.items("y"), te.items("y")
    scaler = StandardScaler().fit(pooled(tr))
    fit = [k for k in range(200) if 0 < y_tr[:, k].sum() < len(y_tr)]  # labels with both values
    model = OneVsRestClassifier(LogisticRegression(C=0.1, max_iter=300)).fit(
        scaler.transform(pooled(tr)), y_tr[:, fit]
    )
    scores = np.zeros(y_te.shape)
    scores[:, fit] = model.decision_function(scaler.transform(pooled(te)))
    prior = np.broadcast_to(y_tr.mean(0), y_te.shape)
    group = te.items("clip")
    model_map, classes = _clip_map(scores, y_te, group)
    prior_map, _ = _clip_map(prior, y_te, group)
    assert len(classes) == 12
    assert model_map > prior_map + 0.2 and model_map > 0.55, (model_map, prior_map)


def test_training_batches_mix_in_background_noise(embedded):
    from nb360.data.loader import ShardDataset
    from nb360.tasks.fsd50k import NOISE_MAX_ALPHA, mix_noise

    manifest = embedded.manifest(TASK)
    ds = ShardDataset(manifest, ["train"], train=True)
    assert set(ds.aux) == {"noise"}, "the loader hands the noise split to training batches"
    assert ShardDataset(manifest, ["test"], train=False).aux == {}, "evaluation mixes in nothing"
    noise = ds.aux["noise"][0]
    x = np.zeros((400, 1, 96, 101), np.float32)
    mixed = mix_noise(x, noise, np.random.default_rng(0))
    touched = np.abs(mixed).reshape(400, -1).max(axis=1) > 0
    assert 0.65 < touched.mean() < 0.85  # probability 0.75 per sample
    # x = 0, so mixed = a * noise window with a <= 0.5: never louder than half the loudest window
    assert np.abs(mixed).max() <= NOISE_MAX_ALPHA * np.abs(noise.items("x")).max() + 1e-6
    same = [ds.batch(np.arange(8), key=(0, 1))["x"] for _ in range(2)]
    assert np.array_equal(same[0], same[1]), "mixing draws from the batch's seeded generator"
