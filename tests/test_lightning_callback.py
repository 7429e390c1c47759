"""ModalScopeCallback's hooks driven directly (no Lightning Trainer): rank-0 writing, crash marking, attribute paths."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from modalscope.errors import ConfigError
from modalscope.store import open_run

pytest.importorskip("pytorch_lightning")
from modalscope.integrations.lightning import ModalScopeCallback  # noqa: E402


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.ModuleDict({"a": nn.Linear(2, 3), "b": nn.Linear(2, 3)})


def _trainer(rank=0, epoch=0):
    return SimpleNamespace(max_epochs=2, global_rank=rank, current_epoch=epoch, sanity_checking=False, optimizers=[])


def _step(cb, module, trainer):
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 2, 0])
    za, zb = module.net["a"](x), module.net["b"](x)
    loss = nn.functional.cross_entropy(za + zb, y)
    cb.on_before_backward(trainer, module, loss)
    loss.backward()
    cb.on_after_backward(trainer, module)
    cb.on_train_batch_end(trainer, module, {"loss": loss, "fused": (za + zb).detach(), "logits": {"a": za, "b": zb}, "labels": y}, None, 0)
    return za, zb, y


def test_rank0_writes_epochs_and_validation_as_test_split(tmp_path):
    module, t = Net(), _trainer()
    cb = ModalScopeCallback(tmp_path / "run", ["a", "b"], {"a": "net.a", "b": "net.b"})
    cb.setup(t, module, "fit")
    za, zb, y = _step(cb, module, t)
    cb.on_validation_batch_end(t, module, {"fused": za + zb, "logits": {"a": za, "b": zb}, "labels": y}, None, 0)
    cb.on_validation_epoch_end(t, module)
    cb.on_train_epoch_end(t, module)  # already closed by validation: no second epoch row
    cb.on_fit_end(t, module)
    r = open_run(tmp_path / "run")
    assert r.status() == "finished"
    assert r.scalars("acc/test/fused")["epoch"].tolist() == [0]
    want = float(((za + zb).argmax(1) == y).float().mean())
    assert r.final_scalars("acc/test/")["acc/test/fused"] == pytest.approx(want)
    assert float(r.final_scalars("grad_norm/")["grad_norm/a"]) == pytest.approx(float(torch.cat([p.grad.reshape(-1) for p in module.net["a"].parameters()]).norm()), rel=1e-5)


def test_other_ranks_write_nothing_and_exceptions_mark_failed(tmp_path):
    module = Net()
    quiet = ModalScopeCallback(tmp_path / "r1", ["a", "b"], {"a": "net.a", "b": "net.b"})
    quiet.setup(_trainer(rank=1), module, "fit")
    _step(quiet, module, _trainer(rank=1))
    quiet.on_train_epoch_end(_trainer(rank=1), module)
    quiet.on_fit_end(_trainer(rank=1), module)
    assert not (tmp_path / "r1").exists()

    cb = ModalScopeCallback(tmp_path / "r0", ["a", "b"], {"a": "net.a", "b": "net.b"})
    cb.setup(_trainer(), module, "fit")
    cb.on_exception(_trainer(), module, RuntimeError("CUDA out of memory"))
    r = open_run(tmp_path / "r0")
    assert r.status() == "failed" and r.meta()["error"] == "RuntimeError: CUDA out of memory"


def test_bad_attribute_path_is_one_line(tmp_path):
    cb = ModalScopeCallback(tmp_path / "x", ["a", "b"], {"a": "net.a", "b": "net.c"})
    with pytest.raises(ConfigError, match="no attribute 'net.c'"):
        cb.setup(_trainer(), Net(), "fit")
