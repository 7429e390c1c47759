"""Do the synthetic presets show what they are meant to teach? Joint vs unimodal vs ensemble.

For every preset and seed this trains, with the RunConfig defaults (default model, SGD,
batch 64, 20 epochs, diagnostics off, CPU, in-process):

* ``joint`` (fused cross-entropy only),
* ``unimodal`` once per modality (the "trained alone" reference),
* ``ensemble`` (each encoder with its own head and loss; prediction Σ_m log softmax),

and measures, besides test accuracies, a **linear probe** of each modality's frozen encoder
features: multinomial logistic regression fit on the training split, scored on the test
split, at initialisation and after training. The **utilisation** of modality ``m`` under
joint training is ``(probe_joint − probe_init) / (probe_alone − probe_init)``: 0 when the
encoder learnt nothing usable, 1 when it learnt as much as when trained alone.

The data seed equals the training seed, so the spread over seeds covers both the sample and
the initialisation. Results go to ``benchmarks/results/presets.json`` (committed) and the
table in ``docs/results.md`` (block ``presets``) is rendered from it.

Checks reported for ``imbalanced`` (issue 13 "Done when"): (a) joint fused within 3 points of
audio-alone; (b) visual utilisation under joint ≤ 0.4; (c) ensemble ≥ joint + 5 points;
(d) Bayes ceiling ≥ joint + 8 points; and, on ``complementary``, joint ≥ ensemble.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/presets.py [--presets imbalanced,complementary]
[--seeds 5] [--epochs 20] [--methods mmpareto,cal] [--out PATH] [--report-only]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import doctables  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "presets.json"
DOC = "docs/results.md"
ALL_PRESETS = ["imbalanced", "complementary", "three_modal", "noisy"]
DOC_ORDER = ["imbalanced", "complementary", "balanced", "three_modal", "noisy"]
SUPPRESSION = ("imbalanced", "three_modal")
CONTRAST = ("complementary",)


def _ordered(keys) -> list[str]:
    keys = list(keys)
    return [k for k in DOC_ORDER if k in keys] + sorted(k for k in keys if k not in DOC_ORDER)
QUIET = {"grad": False, "conflict": False, "gap": False, "samples": False, "gmm": False, "contrib": False,
         "captum": False, "robust": False}


def run_config(preset: str, method: str, seed: int, epochs: int, runs_dir: str, modality: str | None = None,
               data: dict | None = None, model: dict | None = None, method_extra: dict | None = None):
    from modalscope.config import resolve_config

    block: dict = {"name": method, **(method_extra or {})}
    if modality is not None:
        block["modality"] = modality
    base = {
        "runs_dir": runs_dir,
        "epochs": epochs,
        "seed": seed,
        "device": "cpu",
        "data": {"name": "synthetic", "preset": preset, "seed": seed, **(data or {})},
        "method": block,
        "model": dict(model or {}),
        "log": {"progress": False, "checkpoint": False, "eval_train": False},
        "diagnostics": dict(QUIET),
    }
    return resolve_config(base=base)


def encoder_features(trainer, split: str, m: str):
    """Frozen features of modality ``m``'s encoder over a whole split (eval mode, no grad)."""
    import torch

    from modalscope.data import BatchLoader, move_batch

    model = trainer.model
    was = model.training
    model.eval()
    feats, labels = [], []
    with torch.no_grad():
        for batch in BatchLoader(trainer.full_bundle.splits[split], 1024, shuffle=False):
            batch = move_batch(batch, trainer.device)
            feats.append(model.encoders[m](batch[m]).float().cpu())
            labels.append(batch["label"].cpu())
    model.train(was)
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def linear_probe(x_train, y_train, x_test, y_test) -> float:
    """Accuracy on (x_test, y_test) of multinomial logistic regression fit on standardised train features.

    Local stand-in for ``modalscope.diagnostics.probe`` (same definition: linear classifier on
    frozen encoder features, train split → test split).
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    clf = LogisticRegression(max_iter=300, C=1.0)
    clf.fit((x_train - mu) / sd, y_train)
    return float(np.mean(clf.predict((x_test - mu) / sd) == y_test))


def probes(trainer) -> dict[str, float]:
    out = {}
    for m in trainer.bundle.modalities:
        xtr, ytr = encoder_features(trainer, "train", m)
        xte, yte = encoder_features(trainer, "test", m)
        out[m] = linear_probe(xtr, ytr, xte, yte)
    return out


def run_one(cfg, bundle, probe: bool = True) -> dict:
    """Train one config in-process on a prebuilt bundle; test accuracies and probes before/after."""
    from modalscope.engine import Trainer

    t = Trainer(cfg, bundle=bundle)
    init = probes(t) if probe else {}
    t0 = time.perf_counter()
    final = t.fit()
    wall = time.perf_counter() - t0
    after = probes(t) if probe else {}
    shutil.rmtree(t.run_dir, ignore_errors=True)
    acc = {k.split("/")[-1]: v for k, v in final.items() if k.startswith("acc/test/")}
    return {"acc": acc, "probe_init": init, "probe": after, "wall_s": wall}


def build_bundle(cfg):
    from modalscope.engine import build_bundle as _build

    return _build(cfg)


def run_preset(preset: str, seeds: list[int], epochs: int, extra_methods: list[str] = (), data: dict | None = None,
               model: dict | None = None, log=print) -> dict:
    """All runs of one preset; returns the raw per-seed records."""
    from modalscope.data.synthetic import PRESETS

    mods = PRESETS[preset]["modalities"]
    tmp = tempfile.mkdtemp(prefix="modalscope-presets-")
    records = []
    try:
        for seed in seeds:
            base = run_config(preset, "joint", seed, epochs, tmp, data=data, model=model)
            bundle = build_bundle(base)
            rec = {"seed": seed, "bayes": dict(bundle.info.get("bayes", {})), "runs": {}}
            plan = [("joint", None), *(("unimodal", m) for m in mods), ("ensemble", None), *((x, None) for x in extra_methods)]
            for method, m in plan:
                cfg = run_config(preset, method, seed, epochs, tmp, modality=m, data=data, model=model)
                key = f"unimodal:{m}" if m else method
                rec["runs"][key] = run_one(cfg, bundle, probe=method in ("joint", "unimodal", "ensemble"))
                log(f"{preset} s{seed} {key}: " + " ".join(f"{k}={v:.3f}" for k, v in rec["runs"][key]["acc"].items())
                    + ("  probe " + " ".join(f"{k}={v:.3f}" for k, v in rec["runs"][key]["probe"].items()) if rec["runs"][key]["probe"] else ""))
            records.append(rec)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"modalities": mods, "records": records}


def mean_std(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if x == x]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def utilisation(probe: float, init: float, alone: float) -> float:
    """``(probe − init) / (alone − init)``; NaN when training alone did not move the probe."""
    den = alone - init
    return (probe - init) / den if abs(den) > 1e-9 else float("nan")


def weak_modality(res: dict) -> str:
    """The modality whose encoder, trained alone, probes worst: the one joint training can starve."""
    mods = res["modalities"]
    alone = {m: statistics.fmean(r["runs"][f"unimodal:{m}"]["acc"]["fused"] for r in res["records"]) for m in mods}
    return min(mods, key=alone.get)


def summarise(res: dict) -> dict:
    """Per-preset means ± std over seeds, and the issue-13 checks."""
    mods = res["modalities"]
    recs = res["records"]
    weak = weak_modality(res)
    strong = max(mods, key=lambda m: statistics.fmean(r["runs"][f"unimodal:{m}"]["acc"]["fused"] for r in recs))
    s: dict = {"weak": weak, "strong": strong, "seeds": len(recs)}
    s["joint"] = mean_std([r["runs"]["joint"]["acc"]["fused"] for r in recs])
    s["ensemble"] = mean_std([r["runs"]["ensemble"]["acc"]["fused"] for r in recs])
    s["alone"] = {m: mean_std([r["runs"][f"unimodal:{m}"]["acc"]["fused"] for r in recs]) for m in mods}
    s["bayes"] = {k: mean_std([r["bayes"][k] for r in recs]) for k in ["fused", *mods]}
    s["extra"] = {}
    for key in recs[0]["runs"]:
        if key not in ("joint", "ensemble") and not key.startswith("unimodal:"):
            s["extra"][key] = mean_std([r["runs"][key]["acc"]["fused"] for r in recs if key in r["runs"]])
    s["probe"] = {}
    s["util"] = {}
    for m in mods:
        init = [r["runs"]["joint"]["probe_init"][m] for r in recs]
        joint = [r["runs"]["joint"]["probe"][m] for r in recs]
        alone = [r["runs"][f"unimodal:{m}"]["probe"][m] for r in recs]
        s["probe"][m] = {"init": mean_std(init), "joint": mean_std(joint), "alone": mean_std(alone)}
        s["util"][m] = mean_std([utilisation(j, i, a) for j, i, a in zip(joint, init, alone)])
    j, e = s["joint"][0], s["ensemble"][0]
    s["checks"] = {
        "a_joint_within_3_of_strong_alone": abs(j - s["alone"][strong][0]) <= 0.03,
        "b_weak_util_le_0.4": s["util"][weak][0] <= 0.4,
        "c_ensemble_ge_joint_plus_5": e >= j + 0.05,
        "d_bayes_ge_joint_plus_8": s["bayes"]["fused"][0] >= j + 0.08,
        "joint_ge_ensemble": j >= e,
    }
    n_test = res.get("n_test")
    if n_test:
        s["test_se"] = (j * (1 - j) / n_test) ** 0.5
    return s


def pct(ms: tuple[float, float]) -> str:
    return f"{100 * ms[0]:.1f} ± {100 * ms[1]:.1f}"


def load() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}


@doctables.renderer("presets")
def render() -> str:
    raw = load()
    if not raw:
        return "_no results yet: run `python benchmarks/presets.py`_\n"
    cfg = raw.get("settings", {})
    intro = (
        "## Synthetic presets: joint vs alone vs ensemble\n\n"
        "Produced by `benchmarks/presets.py` from `benchmarks/results/presets.json` (do not edit by hand). "
        f"{cfg.get('seeds', '?')} seeds (data seed = training seed), {cfg.get('epochs', '?')} epochs, RunConfig defaults "
        "(2-layer MLP encoders, concat fusion, SGD lr 0.05, batch 64), CPU. Test accuracy in %, mean ± std over seeds.\n\n"
        "* **joint**: fused cross-entropy only; **alone**: `unimodal` on that modality; **ensemble**: each encoder with "
        "its own head trained on its own loss, prediction Σ_m log softmax.\n"
        "* **probe**: test accuracy (%) of a multinomial logistic regression fit on the frozen features of a "
        "modality's encoder (train split), at initialisation, after joint, and after training alone (means over "
        "seeds), for every modality but the one that is best alone. **Utilisation** = (probe_joint − probe_init) / (probe_alone − probe_init), per seed, then "
        "averaged: 0 = joint left the encoder as untrained as at init, 1 = it learnt as much as alone.\n"
        "* One seed's test accuracy has a standard error of at most √(0.25 / n_test) "
        f"= {100 * (0.25 / max(1, raw.get('design', {}).get('imbalanced', {}).get('n_test', 1))) ** 0.5:.2f} points.\n\n"
    )
    rows = []
    checks = []
    for preset in _ordered(raw["presets"]):
        res = raw["presets"][preset]
        s = summarise(res)
        mods = res["modalities"]
        alone = ", ".join(f"{m} {pct(s['alone'][m])}" for m in mods)
        bayes = ", ".join(f"{k} {100 * s['bayes'][k][0]:.1f}" for k in ["fused", *mods])
        slow = [m for m in mods if m != s["strong"]]
        probe = "; ".join(f"{m} {100 * s['probe'][m]['init'][0]:.1f} / {100 * s['probe'][m]['joint'][0]:.1f} / "
                          f"{100 * s['probe'][m]['alone'][0]:.1f}" for m in slow)
        util = "; ".join(f"{m} {s['util'][m][0]:.2f} ± {s['util'][m][1]:.2f}" for m in slow)
        rows.append([f"`{preset}`", pct(s["joint"]), alone, pct(s["ensemble"]), bayes, probe, util])
        c = s["checks"]
        yes = lambda ok, text: f"{'yes' if ok else '**no**'} ({text})"  # noqa: E731
        j, e = 100 * s["joint"][0], 100 * s["ensemble"][0]
        if preset in SUPPRESSION:
            checks.append([
                f"`{preset}`",
                yes(c["a_joint_within_3_of_strong_alone"], f"{j - 100 * s['alone'][s['strong']][0]:+.1f} vs {s['strong']}"),
                yes(c["b_weak_util_le_0.4"], f"{s['weak']} {s['util'][s['weak']][0]:.2f}"),
                yes(c["c_ensemble_ge_joint_plus_5"], f"{e - j:+.1f}"),
                yes(c["d_bayes_ge_joint_plus_8"], f"{100 * s['bayes']['fused'][0] - j:+.1f}"),
                "–",
            ])
        elif preset in CONTRAST:
            checks.append([f"`{preset}`", "–", "–", "–", "–", yes(c["joint_ge_ensemble"], f"{j - e:+.1f}")])
    head = ["preset", "joint fused", "each modality alone", "ensemble", "Bayes ceilings",
            "probe of each slower encoder: init / joint / alone", "its utilisation under joint"]
    out = doctables.table(head, rows, "l" + "r" * 4 + "ll")
    out += "\n"
    out += doctables.table(
        ["preset", "(a) joint within 3 of the strong modality alone", "(b) weak utilisation ≤ 0.4",
         "(c) ensemble ≥ joint + 5", "(d) Bayes ≥ joint + 8", "joint ≥ ensemble"], checks, "lccccc")
    out += ("\nChecks (issue 13), in points: (a)–(d) are what a suppression preset must show (required on `imbalanced`; "
            "weak = the modality with the lowest alone accuracy); the contrast preset `complementary` must show "
            "joint ≥ ensemble (specialisation: nothing to recover). On `noisy` the missing-audio samples can only be "
            "fit through visual, so joint uses both encoders fully: no check applies. On `complementary` a full-class "
            "utilisation below 1 does not by itself mean suppression: the visual encoder may keep only the bit audio "
            "lacks (specialisation); per-bit probes tell the two apart.\n")
    return intro + out


def design(preset: str) -> dict:
    """The generative knobs of a preset as resolved by ``SyntheticParams`` (what the JSON records)."""
    from modalscope.data.synthetic import SyntheticParams

    p = SyntheticParams(preset=preset)
    return {"modalities": p.ordered_modalities(), "strength": p.strength, "scale": p.scale, "dims": p.dims,
            "corrupt_rate": p.corrupt_rate, "corrupt_kind": p.corrupt_kind, "corrupt_modality": p.corrupt_modality,
            "n_train": p.n_train, "n_valid": p.n_valid, "n_test": p.n_test}


def _strength(w: list[float]) -> str:
    return f"{w[0]:g}×{len(w)}" if len(set(w)) == 1 else "[" + ", ".join(f"{v:g}" for v in w) + "]"


@doctables.renderer("presets_bayes")
def render_bayes() -> str:
    raw = load()
    if not raw.get("design"):
        return "_no results yet: run `python benchmarks/presets.py`_\n"
    rows = []
    for preset in _ordered(raw["design"]):
        d = raw["design"][preset]
        mods = d["modalities"]
        b = raw["bayes"][preset]
        corrupt = f"{d['corrupt_modality']} {d['corrupt_kind']} {100 * d['corrupt_rate']:.0f} %" if d["corrupt_rate"] else "–"
        rows.append([
            f"`{preset}`",
            ", ".join(f"{m} {_strength(d['strength'][m])}" for m in mods),
            ", ".join(f"{m} {d['scale'][m]:g}" for m in mods),
            ", ".join(f"{m} {d['dims'][m]}" for m in mods),
            corrupt,
            f"{100 * b['fused']:.1f}",
            ", ".join(f"{m} {100 * b[m]:.1f}" for m in mods),
        ])
    return doctables.table(["preset", "strength per bit", "input scale", "dims", "corruption", "Bayes fused %",
                            "Bayes alone %"], rows, "lllllrl")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default=",".join(ALL_PRESETS),
                    help="presets to (re-)run; results of other presets already in --out with the same settings are kept")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--methods", default="", help="extra methods to run on every preset (not written to the table)")
    ap.add_argument("--data", default="", help="JSON of data overrides (tuning only)")
    ap.add_argument("--model", default="", help="JSON of model overrides (tuning only)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if not args.report_only:
        from modalscope.data.synthetic import SyntheticParams

        presets = [p for p in args.presets.split(",") if p]
        data = json.loads(args.data) if args.data else None
        model = json.loads(args.model) if args.model else None
        extra = [m for m in args.methods.split(",") if m]
        from modalscope.data.synthetic import PRESETS, bayes_ceilings

        settings = {"seeds": args.seeds, "epochs": args.epochs, "data": data, "model": model}
        prev = json.loads(out.read_text()) if out.is_file() else {}
        kept = prev.get("presets", {}) if prev.get("settings") == settings else {}
        raw = {"settings": settings, "presets": {p: r for p, r in kept.items() if p not in presets},
               "design": {p: design(p) for p in PRESETS},
               "bayes": {p: bayes_ceilings(SyntheticParams(preset=p)) for p in PRESETS}}
        for p in presets:
            res = run_preset(p, list(range(args.seeds)), args.epochs, extra, data, model)
            res["n_test"] = SyntheticParams(preset=p, **(data or {})).n_test
            raw["presets"][p] = res
            s = summarise(res)
            print(json.dumps({p: {k: v for k, v in s.items()}}, indent=None, default=str))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(raw, indent=1, sort_keys=True) + "\n")
    if out == RESULTS and RESULTS.is_file():
        doctables.write_block(DOC, "presets")
        doctables.write_block("docs/data.md", "presets_bayes")
        doctables.write_block("README.md", "presets_bayes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
