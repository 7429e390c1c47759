"""Encoders for spectrograms, frames and sequences: shapes and the invariances they promise."""

import torch

from modalscope.models.encoders import build_encoder


def test_spectrogram_and_frame_encoders_shapes():
    torch.manual_seed(0)
    spec = build_encoder("spectrogram", (33, 40), 16, 8, 1, 0.0)
    assert spec(torch.randn(3, 33, 40)).shape == (3, 8)
    frames = build_encoder("frames", (4, 3, 16, 16), 16, 8, 1, 0.0).eval()
    x = torch.randn(2, 4, 3, 16, 16)
    h = frames(x)
    assert h.shape == (2, 8)
    assert torch.allclose(frames(x[:, [3, 1, 0, 2]]), h, atol=1e-5)


def test_sequence_encoder_ignores_padding_beyond_length():
    torch.manual_seed(0)
    enc = build_encoder("sequence", (6, 3), 8, 4, 1, 0.0)
    x = torch.randn(2, 6, 3)
    lengths = torch.tensor([2, 6])
    y = x.clone()
    y[0, 2:] = 100.0
    a, b = enc(x, lengths), enc(y, lengths)
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(enc(x), enc(y))
    assert torch.allclose(enc(x[:1, :2]), a[:1], atol=1e-6)


def test_model_passes_lengths_from_the_batch():
    from modalscope.models.multimodal import MultimodalModel

    torch.manual_seed(0)
    m = MultimodalModel(["t"], {"t": "sequence"}, {"t": (5, 2)}, n_out=1, hidden=8, embed_dim=4, depth=1)
    x = torch.randn(3, 5, 2)
    y = x.clone()
    y[:, 3:] = 9.0
    out1 = m({"t": x, "t_len": torch.tensor([3, 3, 3])}).fused
    out2 = m({"t": y, "t_len": torch.tensor([3, 3, 3])}).fused
    assert torch.allclose(out1, out2, atol=1e-6)
