"""The own_loop.py model as a LightningModule, diagnosed through ModalScope's Lightning callback.

    python docs/examples/lightning_module.py --epochs 3 --runs-dir runs
    python docs/examples/lightning_module.py --devices 2      # DDP on CPU (gloo): only rank 0 writes
"""

import argparse
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from own_loop import TwoBranch, load  # noqa: E402  (the same model and data as the plain loop)

from modalscope.integrations.lightning import ModalScopeCallback  # noqa: E402  # +


class LitTwoBranch(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = TwoBranch()

    def training_step(self, batch, batch_idx):
        xp, xm, y = batch
        fused, logits = self.net(xp, xm)
        loss = F.cross_entropy(fused, y)
        return {"loss": loss, "fused": fused.detach(), "logits": {m: z.detach() for m, z in logits.items()}, "labels": y}  # + (was: return loss)

    def validation_step(self, batch, batch_idx):
        fused, logits = self.net(*batch[:2])
        return {"fused": fused, "logits": logits, "labels": batch[2]}  # +

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def main(epochs=3, runs_dir="runs", name="lightning_module", devices=1, seed=0):
    pl.seed_everything(seed, verbose=False)
    data = load(seed)
    train = DataLoader(TensorDataset(*data["train"]), batch_size=64, shuffle=True)
    test = DataLoader(TensorDataset(*data["test"]), batch_size=256)
    callback = ModalScopeCallback(name, ["pix", "mor"], {"pix": "net.pix", "mor": "net.mor"}, fusion="net.head", runs_dir=runs_dir)  # +
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
        callbacks=[callback],  # +
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    trainer.fit(LitTwoBranch(), train, test)
    return Path(runs_dir) / name


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--name", default="lightning_module")
    ap.add_argument("--devices", type=int, default=1)
    a = ap.parse_args()
    out = main(a.epochs, a.runs_dir, a.name, a.devices)
    if int(__import__("os").environ.get("LOCAL_RANK", "0")) == 0:
        print(out)
