"""``modalscope sample-runs``: regenerate the shipped gallery of finished runs, deterministically.

What is generated (every registered method is picked up automatically):

* preset ``imbalanced`` (the default): ``unimodal`` on each modality, ``joint`` and every
  other method (``ensemble`` included), seeds 0, 1, 2 (so Compare can draw mean ± std bands
  and pair methods with ``joint`` by seed);
* preset ``noisy``: ``unimodal`` on each modality and every method, seed 0;
* preset ``complementary`` (each modality carries what the other lacks: the Learn page's
  contrast, where a low head is specialisation, not suppression): ``unimodal`` on each
  modality, ``joint``, ``ensemble`` and ``ogm_ge``, seed 0;
* preset ``three_modal``: ``unimodal`` on each modality, ``joint`` and one run per method
  family, seed 0.

Every run is trained after the ``unimodal`` references of its preset and seed, so its encoder
probes find their trained-alone level (``probe_util``) in the same root. Methods that need
another run to start from (``purify``) are initialised from the ``joint`` run of the same
preset and seed. Presets or methods this checkout does not define are left out.

To keep the folder small (target < 15 MB) the gallery is thinned after training, and what
was thinned is written into each run's ``thinned`` meta key so the dashboard can say so:
per-sample snapshots are kept for seed 0 only and only at the last epoch (strong-weak gap
only for three modalities); per-step scalars of seeds 1 and 2 are kept every 2nd step;
checkpoints (``checkpoint.pt``, ``best.pt``) are removed (re-run the stored config to get them); the SQLite files are vacuumed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

DEFAULT_EPOCHS = 20
NEEDS_INIT = {"purify": "joint"}


@dataclass(frozen=True)
class GalleryRun:
    name: str
    overrides: tuple[str, ...]
    seed: int
    preset: str
    init_from: str | None = None


def _method_family(name: str) -> str:
    from modalscope.methods import get_method

    return getattr(get_method(name), "family", "baseline") or "baseline"


#: opt-in diagnostics the seed-0 runs switch on, so every Live view has something to show in the gallery
#: (the Robustness view, and captum's cross-check on Contributions); they never change training.
SHOWCASE = ("diagnostics.robust=true", "diagnostics.captum=true")
PRESETS_SHOWN = ("imbalanced", "noisy", "complementary", "three_modal")
#: the few methods the complementary contrast needs beside the unimodal references
CONTRAST_METHODS = ("joint", "ensemble", "ogm_ge")


def plan(seeds: int = 3, epochs: int = DEFAULT_EPOCHS, presets: tuple[str, ...] = PRESETS_SHOWN) -> list[GalleryRun]:
    """The gallery's runs in dependency order (unimodal references first, a run's init source before it)."""
    from modalscope.data.synthetic import PRESETS
    from modalscope.methods import list_methods

    preferred = ["ogm_ge", "gmm_adaptive", "cal"]
    registered = list_methods()
    methods = [m for m in registered if m not in ("unimodal", "joint")]
    methods.sort(key=lambda m: (preferred.index(m) if m in preferred else len(preferred), m))
    runs: list[GalleryRun] = []

    def add(method: str, preset: str, seed: int, extra: tuple[str, ...] = (), label: str | None = None):
        label = label or method
        init = None
        if method in NEEDS_INIT:
            init = f"{NEEDS_INIT[method]}_{preset}_s{seed}"
        runs.append(
            GalleryRun(
                name=f"{label}_{preset}_s{seed}",
                overrides=(f"method.name={method}", f"data.preset={preset}", f"seed={seed}", f"epochs={epochs}", *extra,
                           *(SHOWCASE if seed == 0 else ())),
                seed=seed,
                preset=preset,
                init_from=init,
            )
        )

    for preset in presets:
        if preset not in PRESETS:
            continue
        mods = PRESETS[preset]["modalities"]
        if preset in ("three_modal", "complementary"):
            for mod in mods:
                add("unimodal", preset, 0, (f"method.modality={mod}",), label=f"unimodal-{mod}")
        if preset == "complementary":
            for m in CONTRAST_METHODS:
                if m in registered:
                    add(m, preset, 0)
            continue
        if preset == "three_modal":
            seen: set[str] = set()
            add("joint", preset, 0)
            for m in methods:
                fam = _method_family(m)
                if fam in seen or fam == "baseline" or m in NEEDS_INIT:
                    continue
                seen.add(fam)
                add(m, preset, 0)
            continue
        n_seeds = seeds if preset == "imbalanced" else 1
        for seed in range(n_seeds):
            for mod in mods:
                add("unimodal", preset, seed, (f"method.modality={mod}",), label=f"unimodal-{mod}")
            add("joint", preset, seed)
            for m in methods:
                add(m, preset, seed)
    return sorted(runs, key=_stage)


def _stage(run: GalleryRun) -> int:
    """0: unimodal references; 1: runs from scratch; 2: runs initialised from another run."""
    if run.init_from is not None:
        return 2
    return 0 if "method.name=unimodal" in run.overrides else 1


def _train_one(args: tuple[GalleryRun, str]) -> tuple[str, dict]:
    import torch

    from modalscope.config import resolve_config
    from modalscope.engine import Trainer

    torch.set_num_threads(1)
    run, root = args
    cfg = resolve_config(base={"runs_dir": root, "name": run.name, "device": "cpu", "log": {"progress": False}}, overrides=list(run.overrides))
    init = str(Path(root) / run.init_from) if run.init_from else None
    t = Trainer(cfg, init_from=init)
    metrics = t.fit()
    return run.name, metrics


def thin(run_dir: Path, keep_samples: bool, sample_epochs: list[int], step_stride: int = 1) -> str:
    """Thin one finished run in place; returns the description stored under ``thinned``."""
    notes = []
    db = run_dir / "metrics.sqlite"
    con = sqlite3.connect(db)
    try:
        from modalscope.store import SCHEMA

        con.executescript(SCHEMA)  # a file from before the sample_arrays table gets it (empty)
        if keep_samples:
            kept = ",".join(str(e) for e in sample_epochs)
            con.execute(f"DELETE FROM samples WHERE epoch NOT IN ({kept})")
            con.execute(f"DELETE FROM sample_arrays WHERE epoch NOT IN ({kept})")
            series = [r[0] for r in con.execute("SELECT DISTINCT name FROM samples UNION SELECT DISTINCT name FROM sample_arrays")]
            note = f"per-sample snapshots kept only for epoch(s) {','.join(str(e + 1) for e in sample_epochs)} (counted from 1)"
            if "strong-weak" in series and len(series) > 1:
                con.execute("DELETE FROM samples WHERE name != 'strong-weak'")
                con.execute("DELETE FROM sample_arrays WHERE name != 'strong-weak'")
                note += " and only for the strong-weak gap"
            notes.append(note)
        else:
            con.execute("DELETE FROM samples")
            con.execute("DELETE FROM sample_arrays")
            notes.append("per-sample snapshots removed (kept for seed 0 runs only)")
        if step_stride > 1:
            con.execute(
                "DELETE FROM scalars WHERE step % ? != 0 AND name_id IN "
                "(SELECT name_id FROM scalars GROUP BY name_id, epoch HAVING COUNT(*) > 1)",
                (step_stride,),
            )
            notes.append(f"per-step scalars kept every {step_stride} steps (per-epoch scalars all kept)")
            from modalscope.store import rebuild_buckets

            rebuild_buckets(con, commit=False)  # the block summary of the rows that remain
        removed = [f for f in ("checkpoint.pt", "best.pt") if (run_dir / f).exists()]
        for f in removed:
            (run_dir / f).unlink()
        if removed:
            notes.append(f"{' and '.join(removed)} removed (re-run the stored config to get them)")
        con.execute("DROP INDEX IF EXISTS scalars_name")
        con.execute("DROP INDEX IF EXISTS samples_epoch")
        notes.append("query indexes dropped (small runs scan fast)")
        text = "; ".join(notes)
        con.execute("INSERT OR REPLACE INTO run(key, value) VALUES ('thinned', ?)", (json.dumps(text),))
        con.commit()
        con.execute("VACUUM")
    finally:
        con.close()
    return text


def readme_table(out: Path) -> str:
    """The generated sample_runs/README.md (the test checks it against the stored metrics)."""
    from modalscope.store import open_run

    lines = [
        "# sample_runs",
        "",
        "Finished runs shipped with ModalScope; `make dashboard` opens on them. Generated by",
        "`modalscope sample-runs --out sample_runs` (deterministic: fixed seeds, CPU). Per-sample",
        "snapshots are thinned and checkpoints removed to keep the folder small; each run's",
        "`thinned` meta key says what (the dashboard shows it).",
        "",
        "| run | method | preset | seed | fused acc | per-modality acc | Bayes ceiling (fused) |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in sorted(p for p in out.iterdir() if (p / "metrics.sqlite").is_file()):
        r = open_run(d)
        s = r.summary()
        final = r.final_scalars("acc/test/")
        per = ", ".join(f"{k.split('/')[-1]} {v:.4f}" for k, v in sorted(final.items()) if not k.endswith("/fused"))
        bayes = ((r.meta().get("reference") or {}).get("bayes") or {}).get("fused")
        b = f"{bayes:.4f}" if bayes is not None else "–"
        lines.append(f"| {s['name']} | {s['method']} | {s['preset']} | {s['seed']} | {final.get('acc/test/fused', float('nan')):.4f} | {per} | {b} |")
    return "\n".join(lines) + "\n"


def generate(out: Path, seeds: int = 3, epochs: int = DEFAULT_EPOCHS, jobs: int = 2, only: str | None = None, progress: bool = True) -> list[str]:
    import fnmatch

    runs = plan(seeds=seeds, epochs=epochs)
    if only:
        wanted = {r.name for r in runs if fnmatch.fnmatch(r.name, only)}
        deps = {r.init_from for r in runs if r.name in wanted and r.init_from}
        refs = {(r.preset, r.seed) for r in runs if r.name in wanted}
        runs = [r for r in runs if r.name in wanted or r.name in deps or (_stage(r) == 0 and (r.preset, r.seed) in refs)]
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="modalscope-gallery-") as tmp:
        stages = [[r for r in runs if _stage(r) == k] for k in (0, 1, 2)]
        done: list[str] = []
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(runs), desc="sample runs", unit="run", file=sys.stderr)
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=mp.get_context("spawn")) as pool:
            for batch in stages:
                for name, _ in pool.map(_train_one, [(r, tmp) for r in batch]):
                    done.append(name)
                    if bar is not None:
                        bar.update(1)
        if bar is not None:
            bar.close()
        for r in runs:
            src = Path(tmp) / r.name
            thin(src, keep_samples=r.seed == 0, sample_epochs=[epochs - 1], step_stride=1 if r.seed == 0 else 2)
            dst = out / r.name
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(src, dst)
    (out / "README.md").write_text(readme_table(out))
    return done


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def cmd_sample_runs(args: argparse.Namespace) -> int:
    out = Path(args.out)
    names = generate(out, seeds=args.seeds, epochs=args.epochs, jobs=args.jobs, only=args.only, progress=not args.no_progress)
    size = folder_size(out)
    print(f"{len(names)} runs written to {out} ({size / 1e6:.1f} MB)")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("sample-runs", help="regenerate the shipped gallery of finished runs")
    p.add_argument("--out", default="sample_runs")
    p.add_argument("--seeds", type=int, default=3, help="seeds for the default preset")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    p.add_argument("--jobs", type=int, default=2, help="parallel training processes")
    p.add_argument("--only", help="regenerate only runs whose name matches this glob")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=cmd_sample_runs)
