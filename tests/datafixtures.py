"""Tiny fixture files in each real-data layout, written inside the tests (nothing downloaded)."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np

CREMAD_CLASSES = ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]
AV_FAST = {"sample_rate": 8000, "seconds": 0.25, "n_fft": 64, "hop": 32, "image_size": 16}


def write_wav(path: Path, freq: float, rate: int = 8000, seconds: float = 0.1) -> None:
    from scipy.io import wavfile

    t = np.arange(int(rate * seconds)) / rate
    wavfile.write(path, rate, (0.5 * np.sin(2 * np.pi * freq * t) * 32767).astype(np.int16))


def write_frames(folder: Path, n: int, value: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((20, 24, 3), (value + 10 * i) % 256, dtype=np.uint8)).save(folder / f"frame_{i:05d}.jpg", quality=95)


def cremad_tree(root: Path, n_train: int = 12, n_test: int = 6, n_frames: int = 3) -> Path:
    """OGM-GE CREMA-D layout: train.csv / test.csv (name,EMOTION), AudioWAV/*.wav, Image-01-FPS/<name>/*.jpg."""
    (root / "AudioWAV").mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        rows = []
        for i in range(n):
            name = f"{1000 + i}_{split}_{i:02d}"
            c = i % 2
            rows.append([name, CREMAD_CLASSES[c]])
            write_wav(root / "AudioWAV" / f"{name}.wav", 400 + 1600 * c)
            write_frames(root / "Image-01-FPS" / name, n_frames, 40 + 150 * c)
        with open(root / f"{split}.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)
    return root


def ks_tree(root: Path, n_train: int = 9, n_test: int = 6, fmt: str = "npy") -> Path:
    """Kinetics-Sounds layout: my_train.txt ('name label'), audio/<name>.npy spectrograms, visual/<name>/*.jpg."""
    (root / "audio").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        lines = []
        for i in range(n):
            name = f"ks_{split}_{i}"
            c = i % 3
            lines.append(f"{name} {c}")
            spec = rng.standard_normal((1, 20, 30)).astype(np.float32) + c
            if fmt == "npy":
                np.save(root / "audio" / f"{name}.npy", spec)
            elif fmt == "pkl":
                with open(root / "audio" / f"{name}.pkl", "wb") as f:
                    pickle.dump(spec[0], f)
            write_frames(root / "visual" / name, 4, 30 + 80 * c)
        (root / f"my_{split}.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("drumming\nsinging\ntyping\n")
    return root


def ave_tree(root: Path, n_train: int = 8, n_test: int = 4) -> Path:
    """OGM-GE AVE layout: my_train.txt ('CLASS,name,...'), stat.txt, audio/<name>.pt, visual/<name>/*.jpg."""
    import torch

    (root / "audio").mkdir(parents=True)
    classes = ["Church bell", "Dog barking"]
    for split, n in (("train", n_train), ("test", n_test), ("val", 2)):
        rows = []
        for i in range(n):
            name = f"ave{split}{i}"
            c = i % 2
            rows.append([classes[c], name, "good", "0", "10"])
            torch.save(torch.full((16, 12), float(c)), root / "audio" / f"{name}.pt")
            write_frames(root / "visual" / name, 5, 60 + 100 * c)
        with open(root / f"my_{split}.txt", "w", newline="") as f:
            csv.writer(f).writerows(rows)
    (root / "stat.txt").write_text("\n".join(reversed(classes)) + "\n")
    return root


def mmsa_dict(n: dict | None = None, seq: int = 6, dims=(5, 4, 3), seed: int = 0, aligned: bool = False) -> dict:
    """MMSA pickle content: per split text/audio/vision (N, L, D), regression_labels, lengths."""
    rng = np.random.default_rng(seed)
    n = n or {"train": 24, "valid": 8, "test": 12}
    out = {}
    for split, k in n.items():
        y = rng.uniform(-3, 3, size=k).astype(np.float32)
        text = rng.standard_normal((k, seq, dims[0])).astype(np.float32) * 0.1 + y[:, None, None]
        audio = rng.standard_normal((k, seq, dims[1])).astype(np.float32)
        vision = rng.standard_normal((k, seq, dims[2])).astype(np.float32)
        audio[0, 0, 0] = -np.inf
        d = {"raw_text": ["w"] * k, "id": [f"{split}_{i}" for i in range(k)], "text": text, "audio": audio, "vision": vision,
             "regression_labels": y, "classification_labels": (y > 0).astype(np.float32)}
        if not aligned:
            d["audio_lengths"] = rng.integers(1, seq + 1, size=k).tolist()
            d["vision_lengths"] = rng.integers(1, seq + 1, size=k).tolist()
        out[split] = d
    return out


def write_pickle(path: Path, obj) -> Path:
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    return path


def train_config(tmp_path: Path, data: dict, **over):
    """A tiny 1-epoch RunConfig on ``data`` (small encoders, no progress bar)."""
    from modalscope.config import resolve_config

    base = {
        "runs_dir": str(tmp_path / "runs"),
        "epochs": 1,
        "batch_size": 8,
        "data": data,
        "model": {"hidden": 16, "embed_dim": 8, "depth": 1},
        "log": {"progress": False},
    }
    base.update(over)
    return resolve_config(base=base)
