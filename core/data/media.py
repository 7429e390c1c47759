"""Decoding the raw media of audio-visual clips: wav → log-magnitude STFT, JPEG folders → frames.

The spectrogram follows the OGM-GE CREMA-D preprocessing so features match the papers'
numbers: mono audio at 22.05 kHz, tiled (repeated) to exactly 3 s, clipped to [-1, 1],
STFT with a periodic Hann window, ``n_fft = 512``, ``hop = 353``, centred frames (zero
padding ``n_fft/2`` each side, librosa ≥ 0.10's default), then ``log(|X| + 1e-7)``.
Shape ``(n_fft/2 + 1, 1 + samples // hop)`` = (257, 188) at the defaults. Computed with
numpy/scipy only (no librosa). OGM-GE tiles a clip 3 times; here it is tiled as often as
needed to fill the window, so clips shorter than 1 s still give the fixed shape.

Frames are picked at the centres of ``T`` equal segments of the sorted frame files
(deterministic, the evaluation-time choice of the reference loaders), resized to
``size × size`` with bilinear filtering and normalised with the ImageNet mean/std.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np

from modalscope.data.arrays import warn_pickle
from modalscope.errors import DataError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
SPEC_SUFFIXES = (".npy", ".pt", ".pkl")


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono float waveform in [-1, 1] and its sample rate."""
    from scipy.io import wavfile

    try:
        rate, x = wavfile.read(path)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read wav: {str(e).splitlines()[0][:160]}") from None
    if x.dtype == np.uint8:
        x = (x.astype(np.float32) - 128.0) / 128.0
    elif x.dtype.kind == "i":
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max + 1)
    else:
        x = x.astype(np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if x.size == 0:
        raise DataError(f"{path}: empty wav (0 samples)")
    if not np.isfinite(x).all():
        raise DataError(f"{path}: wav has NaN/inf samples")
    return x, int(rate)


def spectrogram_shape(sample_rate: int, seconds: float, n_fft: int, hop: int) -> tuple[int, int]:
    return n_fft // 2 + 1, 1 + int(round(sample_rate * seconds)) // hop


def log_spectrogram(x: np.ndarray, rate: int, sample_rate: int = 22050, seconds: float = 3.0, n_fft: int = 512, hop: int = 353) -> np.ndarray:
    """``log(|STFT(x)| + 1e-7)`` of the tiled, clipped clip; shape (n_fft/2+1, frames)."""
    if rate != sample_rate:
        from scipy.signal import resample_poly

        g = math.gcd(rate, sample_rate)
        x = resample_poly(x, sample_rate // g, rate // g).astype(np.float32)
    n = int(round(sample_rate * seconds))
    x = np.tile(x, -(-n // len(x)))[:n]
    x = np.clip(x, -1.0, 1.0)
    x = np.pad(x, n_fft // 2)
    n_frames = 1 + (len(x) - n_fft) // hop
    frames = np.lib.stride_tricks.as_strided(x, shape=(n_frames, n_fft), strides=(x.strides[0] * hop, x.strides[0]))
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)
    spec = np.fft.rfft(frames * window, axis=1).T
    return np.log(np.abs(spec) + 1e-7).astype(np.float32)


def read_spectrogram_file(path: Path, allow_pickle: bool) -> np.ndarray:
    """A precomputed spectrogram (.npy, .pt tensor, or .pkl behind allow_pickle) as float32."""
    suf = path.suffix.lower()
    try:
        if suf == ".npy":
            a = np.load(path, allow_pickle=False)
        elif suf == ".pt":
            import torch

            t = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(t, torch.Tensor):
                raise DataError(f"{path}: holds a {type(t).__name__}, expected one tensor")
            a = t.numpy()
        elif suf == ".pkl":
            if not allow_pickle:
                raise DataError(f"{path}: is a pickle; unpickling can run code: pass --allow-pickle only if you trust it")
            warn_pickle(path)
            with open(path, "rb") as f:
                a = np.asarray(pickle.load(f))  # noqa: S301 - opt-in via allow_pickle, warned above
        else:
            raise DataError(f"{path}: unsupported spectrogram file type {suf!r} (use .npy, .pt or .pkl)")
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file is one line
        msg = str(e).splitlines()[0][:160] if str(e) else ""
        if suf == ".npy" and "allow_pickle" in msg:
            raise DataError(f"{path}: holds a pickled object; only numeric .npy arrays are read") from None
        raise DataError(f"{path}: cannot read spectrogram: {type(e).__name__}: {msg}") from None
    if a.dtype.kind not in "biuf":
        raise DataError(f"{path}: spectrogram is not numeric (dtype {a.dtype})")
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim not in (2, 3):
        raise DataError(f"{path}: spectrogram must be (F, T) or (C, F, T), got shape {a.shape}")
    return a.astype(np.float32)


def frame_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)


def pick_frames(n_available: int, n: int) -> list[int]:
    """Centres of ``n`` equal segments of ``n_available`` frames (repeats when too few)."""
    return [min(n_available - 1, int((i + 0.5) * n_available / n)) for i in range(n)]


def load_frames(folder: Path, n: int, size: int) -> np.ndarray:
    """(n, 3, size, size) float32, ImageNet-normalised."""
    from PIL import Image, UnidentifiedImageError

    files = frame_files(folder)
    if not files:
        raise DataError(f"{folder}: no frame images (.jpg/.jpeg/.png)")
    out = np.empty((n, 3, size, size), dtype=np.float32)
    for k, i in enumerate(pick_frames(len(files), n)):
        try:
            with Image.open(files[i]) as im:
                img = im.convert("RGB").resize((size, size), Image.BILINEAR)
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"{files[i]}: cannot read image: {str(e).splitlines()[0][:160]}") from None
        a = np.asarray(img, dtype=np.float32) / 255.0
        out[k] = ((a - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    return out
