"""CREMA-D, Kinetics-Sounds and AVE in the layouts of the OGM-GE / BalanceBenchmark repos.

A dataset is a root folder (``data.path``) holding split list files and two media
folders, all relative to the root and configurable::

    <root>/<train_list>            one clip per row: name + label (format per dataset)
    <root>/<test_list>
    <root>/<valid_list>            optional
    <root>/<audio_dir>/<name>.wav  or a precomputed spectrogram <name>.npy / .pt / .pkl
    <root>/<visual_dir>/<name>/*.jpg

``{split}`` in ``audio_dir`` / ``visual_dir`` is replaced by the split name, for layouts
with one folder per split (e.g. ``train_spec/``). List formats:

* ``cremad``: CSV ``name,EMOTION`` with EMOTION in NEU, HAP, SAD, FEA, DIS, ANG (indices
  in that order, as OGM-GE), or the classes of ``classes_file`` when it exists.
* ``kinetics_sounds``: whitespace-separated ``name ... label`` with an integer label last;
  class count from ``classes_file`` (one class per line) or ``n_classes``, else max + 1.
* ``ave``: CSV ``CLASS,name,...`` (class first); classes from ``classes_file`` (first
  column, sorted as OGM-GE sorts them) or the sorted labels found in the lists.

Opening the dataset checks every listed clip: its audio file and its frame folder must
exist (or be skipped with ``skip_missing``, a warning says how many), labels must be known
classes, train and test must be non-empty. Each sample is decoded on access
(:mod:`modalscope.data.media`); a clip whose spectrogram shape differs from the first clip's, or
that holds NaN/inf, fails with its file name.
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from modalscope.data.base import DatasetBundle, DatasetParams, DatasetSource, MultimodalDataset, register_dataset
from modalscope.data.media import SPEC_SUFFIXES, frame_files, load_frames, log_spectrogram, read_spectrogram_file, read_wav, spectrogram_shape
from modalscope.errors import DataError

AV_MODALITIES = ("audio", "visual")


class AVParams(DatasetParams):
    """Fields shared by the audio-visual layouts; each source sets its own defaults."""

    path: str = Field(..., min_length=1, description="Dataset root folder (--data-path DIR).")
    train_list: str = Field("train.csv", description="Training split list, relative to the root.")
    test_list: str = Field("test.csv", description="Test split list, relative to the root.")
    valid_list: str | None = Field(None, description="Validation split list (optional).")
    classes_file: str | None = Field(None, description="Class list file, relative to the root (used when it exists).")
    n_classes: int | None = Field(None, ge=2, le=100_000, description="Number of classes for integer labels.")
    audio_dir: str = Field("audio", description="Folder of <name>.wav or spectrogram files ({split} allowed).")
    visual_dir: str = Field("visual", description="Folder of <name>/ frame folders ({split} allowed).")
    audio_format: Literal["auto", "wav", "npy", "pt", "pkl"] = Field("auto", description="Audio file type; auto takes the first that exists.")
    frames: int = Field(3, ge=1, le=64, description="Frames per clip.")
    image_size: int = Field(64, ge=8, le=512, description="Frames are resized to image_size × image_size.")
    sample_rate: int = Field(22050, ge=1000, le=192000, description="wav is resampled to this rate.")
    seconds: float = Field(3.0, gt=0.0, le=60.0, description="wav is tiled/cut to this many seconds.")
    n_fft: int = Field(512, ge=16, le=8192, description="STFT window length.")
    hop: int = Field(353, ge=1, le=8192, description="STFT hop length.")
    modalities: list[Literal["audio", "visual"]] = Field(["audio", "visual"], min_length=1, description="Modalities to load.")
    skip_missing: bool = Field(False, description="Skip listed clips with missing files (warns) instead of failing.")
    allow_pickle: bool = Field(False, description="Allow .pkl spectrograms (unpickling: trusted files only).")


@dataclass
class Clip:
    name: str
    label: int
    audio: Path | None
    frames: Path | None


class AVClipDataset(MultimodalDataset):
    """Clips decoded on access: ``audio`` (F, T) or (C, F, T), ``visual`` (frames, 3, S, S)."""

    def __init__(self, clips: list[Clip], params: AVParams, audio_shape: tuple[int, ...] | None):
        self.clips = clips
        self.params = params
        self.modalities = list(params.modalities)
        self.audio_shape = audio_shape

    def __len__(self) -> int:
        return len(self.clips)

    def audio(self, clip: Clip) -> np.ndarray:
        p = self.params
        if clip.audio.suffix.lower() == ".wav":
            x, rate = read_wav(clip.audio)
            a = log_spectrogram(x, rate, p.sample_rate, p.seconds, p.n_fft, p.hop)
        else:
            a = read_spectrogram_file(clip.audio, p.allow_pickle)
        if self.audio_shape is not None and tuple(a.shape) != self.audio_shape:
            raise DataError(f"{clip.audio}: spectrogram shape {tuple(a.shape)} differs from the first clip's {self.audio_shape}")
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        if bad:
            raise DataError(f"{clip.audio}: spectrogram has {bad} NaN/inf values")
        return a

    def get(self, i: int) -> dict:
        clip = self.clips[i]
        out: dict = {}
        if "audio" in self.modalities:
            out["audio"] = torch.from_numpy(self.audio(clip))
        if "visual" in self.modalities:
            out["visual"] = torch.from_numpy(load_frames(clip.frames, self.params.frames, self.params.image_size))
        out["label"] = torch.tensor(clip.label, dtype=torch.int64)
        return out


class AudioVisualSource(DatasetSource):
    """Shared open/validate logic; subclasses parse their list format and resolve classes."""

    default_classes: ClassVar[list[str] | None] = None

    @classmethod
    def modalities(cls, params: AVParams) -> list[str]:
        return [m for m in AV_MODALITIES if m in params.modalities]

    @classmethod
    def read_rows(cls, path: Path) -> list[tuple[int, str, str]]:
        """(line number, clip name, label token) per non-empty row."""
        raise NotImplementedError

    @classmethod
    def resolve_classes(cls, params: AVParams, root: Path, rows: dict[str, list]) -> list[str] | None:
        """Class names, or None when labels are integer indices with an inferred count."""
        f = root / params.classes_file if params.classes_file else None
        if f is not None and f.is_file():
            with open(f, encoding="utf-8-sig", newline="") as fh:
                return [r[0].strip() for r in csv.reader(fh) if r and r[0].strip()]
        return list(cls.default_classes) if cls.default_classes else None

    @classmethod
    def label_index(cls, token: str, classes: list[str] | None, where: str) -> int:
        if classes is None:
            raise DataError(f"{where}: no class list to map label {token!r}")
        if token not in classes:
            raise DataError(f"{where}: label {token!r} is not one of the {len(classes)} classes ({', '.join(classes[:8])}{', ...' if len(classes) > 8 else ''})")
        return classes.index(token)

    @classmethod
    def audio_file(cls, params: AVParams, folder: Path, name: str) -> Path:
        kinds = [".wav", *SPEC_SUFFIXES] if params.audio_format == "auto" else [f".{params.audio_format}"]
        for suf in kinds:
            p = folder / f"{name}{suf}"
            if p.is_file():
                return p
        return folder / f"{name}{kinds[0]}"

    @classmethod
    def build(cls, params: AVParams) -> DatasetBundle:
        root = Path(params.path)
        if not root.is_dir():
            raise DataError(f"{root}: dataset folder not found")
        lists = {"train": params.train_list, "test": params.test_list}
        if params.valid_list:
            lists["valid"] = params.valid_list
        rows: dict[str, list[tuple[int, str, str]]] = {}
        for split, rel in lists.items():
            f = root / rel
            if not f.is_file():
                raise DataError(f"{f}: {split} split list not found")
            rows[split] = cls.read_rows(f)
        classes = cls.resolve_classes(params, root, rows)
        n_classes = len(classes) if classes is not None else params.n_classes
        mods = cls.modalities(params)
        splits: dict[str, AVClipDataset] = {}
        skipped = 0
        labels_seen: list[int] = []
        for split, rs in rows.items():
            adir = root / params.audio_dir.replace("{split}", split)
            vdir = root / params.visual_dir.replace("{split}", split)
            clips: list[Clip] = []
            for line, name, token in rs:
                where = f"{root / lists[split]} line {line}"
                label = cls.parse_label(token, classes, n_classes, where)
                a = cls.audio_file(params, adir, name) if "audio" in mods else None
                v = vdir / name if "visual" in mods else None
                problem = None
                if a is not None and not a.is_file():
                    problem = f"{a}: missing audio for clip {name!r} ({where})"
                elif v is not None and not frame_files(v):
                    problem = f"{v}: missing frames for clip {name!r} ({where}): no .jpg/.png files"
                if problem:
                    if not params.skip_missing:
                        raise DataError(problem)
                    skipped += 1
                    continue
                clips.append(Clip(name, label, a, v))
                labels_seen.append(label)
            if not clips:
                if split == "valid":
                    continue
                raise DataError(f"{root / lists[split]}: split {split!r} is empty" + (" after skipping missing files" if skipped else ""))
            splits[split] = clips
        if skipped:
            warnings.warn(f"{root}: skipped {skipped} listed clips with missing files (skip_missing=true)", UserWarning, stacklevel=2)
        if classes is None:
            k = n_classes or max(labels_seen) + 1
            classes = [f"class{i}" for i in range(k)]
        shapes: dict[str, tuple[int, ...]] = {}
        audio_shape = None
        if "audio" in mods:
            first = splits["train"][0].audio
            if first.suffix.lower() == ".wav":
                audio_shape = spectrogram_shape(params.sample_rate, params.seconds, params.n_fft, params.hop)
            else:
                audio_shape = tuple(read_spectrogram_file(first, params.allow_pickle).shape)
            shapes["audio"] = audio_shape
        if "visual" in mods:
            shapes["visual"] = (params.frames, 3, params.image_size, params.image_size)
        datasets = {s: AVClipDataset(c, params, audio_shape) for s, c in splits.items()}
        return DatasetBundle(
            splits=datasets,
            modalities=mods,
            kinds={m: ("spectrogram" if m == "audio" else "frames") for m in mods},
            shapes=shapes,
            task="classification",
            class_names=classes,
            info={"source": str(root), "skipped": skipped, "sample_id": {s: [c.name for c in cl] for s, cl in splits.items()}},
        )

    @classmethod
    def parse_label(cls, token: str, classes: list[str] | None, n_classes: int | None, where: str) -> int:
        return cls.label_index(token.strip(), classes, where)


def read_csv_rows(path: Path, name_col: int, label_col: int) -> list[tuple[int, str, str]]:
    out = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or not any(c.strip() for c in row):
                continue
            if len(row) <= max(name_col, label_col):
                raise DataError(f"{path} line {line}: expected at least {max(name_col, label_col) + 1} comma-separated fields")
            out.append((line, row[name_col].strip(), row[label_col].strip()))
    return out


class CremadParams(AVParams):
    name: Literal["cremad"] = "cremad"
    audio_dir: str = Field("AudioWAV", description="Folder of <name>.wav or spectrogram files ({split} allowed).")
    visual_dir: str = Field("Image-01-FPS", description="Folder of <name>/ frame folders ({split} allowed).")
    frames: int = Field(1, ge=1, le=64, description="Frames per clip (OGM-GE uses 1 for CREMA-D).")
    classes_file: str | None = Field(None, description="Class list file (default: NEU, HAP, SAD, FEA, DIS, ANG).")


@register_dataset("cremad")
class Cremad(AudioVisualSource):
    """CREMA-D (6 emotions, audio + face frames) as prepared by OGM-GE."""

    Params = CremadParams
    default_classes = ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]

    @classmethod
    def read_rows(cls, path: Path):
        return read_csv_rows(path, 0, 1)


class KineticsSoundsParams(AVParams):
    name: Literal["kinetics_sounds"] = "kinetics_sounds"
    train_list: str = Field("my_train.txt", description="Training split list, relative to the root.")
    test_list: str = Field("my_test.txt", description="Test split list, relative to the root.")
    classes_file: str | None = Field("classes.txt", description="Class names, one per line (used when it exists).")


@register_dataset("kinetics_sounds")
class KineticsSounds(AudioVisualSource):
    """Kinetics-Sounds: whitespace lists ``name ... label`` with integer labels."""

    Params = KineticsSoundsParams

    @classmethod
    def read_rows(cls, path: Path):
        out = []
        with open(path, encoding="utf-8-sig") as f:
            for line, text in enumerate(f, start=1):
                parts = text.split()
                if not parts:
                    continue
                if len(parts) < 2:
                    raise DataError(f"{path} line {line}: expected 'name ... label'")
                out.append((line, parts[0], parts[-1]))
        return out

    @classmethod
    def resolve_classes(cls, params, root, rows):
        f = root / params.classes_file if params.classes_file else None
        if f is not None and f.is_file():
            return [t.strip() for t in f.read_text(encoding="utf-8-sig").splitlines() if t.strip()]
        return None

    @classmethod
    def parse_label(cls, token, classes, n_classes, where):
        try:
            y = int(token)
        except ValueError:
            raise DataError(f"{where}: label {token!r} is not an integer class index") from None
        if y < 0 or (n_classes is not None and y >= n_classes):
            rng = f"0..{n_classes - 1}" if n_classes is not None else ">= 0"
            raise DataError(f"{where}: label {y} is out of range ({rng})")
        return y


class AveParams(AVParams):
    name: Literal["ave"] = "ave"
    train_list: str = Field("my_train.txt", description="Training split list, relative to the root.")
    test_list: str = Field("my_test.txt", description="Test split list, relative to the root.")
    classes_file: str | None = Field("stat.txt", description="Class list, first CSV column (used when it exists).")


@register_dataset("ave")
class Ave(AudioVisualSource):
    """AVE (28 audio-visual event classes): CSV lists ``CLASS,name,...`` as OGM-GE reads them."""

    Params = AveParams

    @classmethod
    def read_rows(cls, path: Path):
        return read_csv_rows(path, 1, 0)

    @classmethod
    def resolve_classes(cls, params, root, rows):
        listed = super().resolve_classes(params, root, rows)
        if listed is not None:
            return sorted(listed)
        return sorted({tok for rs in rows.values() for _, _, tok in rs})
