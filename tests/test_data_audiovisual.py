"""CREMA-D / Kinetics-Sounds / AVE layouts: decoding with known answers and 1-epoch training."""

import numpy as np
import pytest
import torch

from modalscope.data.audiovisual import Ave, AveParams, Cremad, CremadParams, KineticsSounds, KineticsSoundsParams
from modalscope.data.media import load_frames, log_spectrogram, pick_frames, read_wav, spectrogram_shape
from tests.datafixtures import AV_FAST, ave_tree, cremad_tree, ks_tree, train_config, write_frames, write_wav


def test_spectrogram_has_ogm_ge_shape_and_peaks_at_the_tone():
    sr = 22050
    x = np.sin(2 * np.pi * 1000 * np.arange(sr) / sr).astype(np.float32)
    s = log_spectrogram(x, sr)
    assert s.shape == (257, 188) == spectrogram_shape(22050, 3.0, 512, 353)
    assert (s.argmax(0) == round(1000 * 512 / sr)).all()


def test_wav_is_resampled_and_scaled(tmp_path):
    write_wav(tmp_path / "a.wav", 1000, rate=8000, seconds=0.5)
    x, rate = read_wav(tmp_path / "a.wav")
    assert rate == 8000 and abs(x.max() - 0.5) < 1e-3
    s = log_spectrogram(x, rate)
    assert s.shape == (257, 188) and np.median(s.argmax(0)) == round(1000 * 512 / 22050)


def test_frames_are_segment_centres_normalised(tmp_path):
    assert pick_frames(10, 3) == [1, 5, 8] and pick_frames(2, 4) == [0, 0, 1, 1]
    write_frames(tmp_path / "clip", 10, 0)
    f = load_frames(tmp_path / "clip", 3, 8)
    assert f.shape == (3, 3, 8, 8)
    red = f[:, 0].mean(axis=(1, 2)) * 0.229 + 0.485
    assert np.allclose(red * 255, [10, 50, 80], atol=2.0)


def test_cremad_layout_opens_with_labels_and_shapes(tmp_path):
    cremad_tree(tmp_path / "c", n_frames=4)
    b = Cremad.build(CremadParams(path=str(tmp_path / "c"), frames=2, **AV_FAST))
    assert b.class_names == ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]
    assert b.shapes == {"audio": spectrogram_shape(8000, 0.25, 64, 32), "visual": (2, 3, 16, 16)}
    assert b.kinds == {"audio": "spectrogram", "visual": "frames"}
    item = b.splits["train"][1]
    assert item["label"].item() == 1 and item["audio"].shape == b.shapes["audio"] and item["idx"] == 1
    assert int(item["audio"].argmax(0).float().median()) == round(2000 * 64 / 8000)


def test_kinetics_sounds_npy_and_ave_pt_with_valid_split(tmp_path):
    ks_tree(tmp_path / "k")
    ks = KineticsSounds.build(KineticsSoundsParams(path=str(tmp_path / "k"), image_size=16))
    assert ks.class_names == ["drumming", "singing", "typing"] and ks.shapes["audio"] == (20, 30)
    assert ks.splits["test"][2]["label"].item() == 2
    ave_tree(tmp_path / "a")
    b = Ave.build(AveParams(path=str(tmp_path / "a"), valid_list="my_val.txt", image_size=16))
    assert b.class_names == ["Church bell", "Dog barking"] and set(b.splits) == {"train", "valid", "test"}
    it = b.splits["train"][1]
    assert it["label"].item() == 1 and torch.all(it["audio"] == 1.0) and it["visual"].shape == (3, 3, 16, 16)


def test_split_placeholder_in_media_folders(tmp_path):
    root = ks_tree(tmp_path / "k")
    for split in ("train", "test"):
        (root / f"{split}_spec").mkdir()
        for f in (root / "audio").glob(f"ks_{split}_*.npy"):
            f.rename(root / f"{split}_spec" / f.name)
    b = KineticsSounds.build(KineticsSoundsParams(path=str(root), audio_dir="{split}_spec", image_size=16))
    assert len(b.splits["train"]) == 9 and b.splits["test"].clips[0].audio == root / "test_spec" / "ks_test_0.npy"


def test_only_one_modality_can_be_loaded(tmp_path):
    cremad_tree(tmp_path / "c")
    b = Cremad.build(CremadParams(path=str(tmp_path / "c"), modalities=["visual"], **AV_FAST))
    assert b.modalities == ["visual"] and set(b.splits["test"][0]) == {"visual", "label", "idx"}


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["cremad", "kinetics_sounds", "ave"])
def test_one_epoch_training_on_each_layout(tmp_path, layout):
    from modalscope.engine import Trainer
    from tests.known_answers import assert_final_is_hand_computed

    root = tmp_path / layout
    {"cremad": cremad_tree, "kinetics_sounds": ks_tree, "ave": ave_tree}[layout](root)
    data = {"name": layout, "path": str(root), "frames": 2, **AV_FAST}
    t = Trainer(train_config(tmp_path, data, batch_size=4))
    final = t.fit()
    assert_final_is_hand_computed(final, t, {"acc/test/fused", "acc/test/audio", "acc/test/visual"})
