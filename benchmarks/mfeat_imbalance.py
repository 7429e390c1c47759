"""Does joint training suppress the weak view on real data? UCI mfeat, pix (strong) + mor (weak).

For each seed: ``joint`` on both views and ``unimodal`` on each view, same engine settings.
Reports test accuracy of the fused output and of each modality's slice of the fusion layer
(the OGM-GE convention), plus a linear probe (logistic regression on frozen encoder
features, fitted on train, scored on test) — the probe separates "the encoder learned
nothing" from "the fusion layer ignores it".

    OMP_NUM_THREADS=1 python benchmarks/mfeat_imbalance.py [--epochs 20] [--seeds 0 1 2] [--set optim.lr=...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modalscope.config import resolve_config  # noqa: E402
from modalscope.engine import Trainer  # noqa: E402


def probe(trainer: Trainer, m: str) -> float:
    from sklearn.linear_model import LogisticRegression

    def feats(split):
        ds = trainer.bundle.splits[split]
        trainer.model.eval()
        with torch.no_grad():
            h = trainer.model.encoders[m](ds.tensors[m]).numpy()
        return h, ds.labels.numpy()

    xtr, ytr = feats("train")
    xte, yte = feats("test")
    clf = LogisticRegression(max_iter=2000).fit(xtr, ytr)
    return float(clf.score(xte, yte))


def run(method: dict, seed: int, args, root: Path) -> dict:
    base = {"data": {"name": "mfeat", "views": args.views}, "method": method, "epochs": args.epochs, "seed": seed,
            "runs_dir": str(root), "log": {"progress": False, "checkpoint": False}}
    cfg = resolve_config(base=base, overrides=args.set)
    t = Trainer(cfg)
    final = t.fit()
    out = {k.split("/")[-1]: v for k, v in final.items() if k.startswith("acc/test/")}
    for m in t.bundle.modalities:
        out[f"probe_{m}"] = probe(t, m)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--views", nargs=2, default=["pix", "mor"])
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    strong, weak = args.views
    methods = {"joint": {"name": "joint"}, f"unimodal:{strong}": {"name": "unimodal", "modality": strong},
               f"unimodal:{weak}": {"name": "unimodal", "modality": weak}}
    results: dict[str, list[dict]] = {k: [] for k in methods}
    with tempfile.TemporaryDirectory() as d:
        for label, method in methods.items():
            for s in args.seeds:
                results[label].append(run(method, s, args, Path(d)))
    print(f"mfeat {strong}+{weak}, {args.epochs} epochs, seeds {args.seeds}, overrides {args.set}")
    summary = {}
    for label, rows in results.items():
        keys = rows[0].keys()
        summary[label] = {k: (float(np.mean([r[k] for r in rows])), float(np.std([r[k] for r in rows]))) for k in keys}
        print(f"{label:>16}: " + "  ".join(f"{k}={m:.4f}±{s:.4f}" for k, (m, s) in summary[label].items()))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
