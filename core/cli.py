"""``modalscope`` command line: train, runs, dashboard (sweep, data, sample-runs plug in).

Every user error prints one line ``error: ...`` on stderr and exits with status 2; a
training that fails (e.g. a non-finite loss) exits 1; an interrupted one exits 130.
Subcommands live in their own modules and register through ``SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib.util
import importlib
import ipaddress
import json
import subprocess
import sys
from pathlib import Path

from modalscope.errors import ModalScopeError

MISSING = "—"  # how every table (CLI and dashboard) shows a value a run does not have

SUBCOMMANDS: list[str] = [
    "modalscope.gallery",
    "modalscope.data.check",
    "modalscope.sweep",
]


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML or JSON config file (RunConfig keys)")
    p.add_argument("--dataset", help="dataset name (data.name), e.g. synthetic")
    p.add_argument("--preset", help="dataset preset (data.preset), e.g. imbalanced")
    p.add_argument("--data-path", help="data file or folder (data.path) for file-based datasets")
    p.add_argument("--method", help="method name (method.name), e.g. joint, unimodal, ogm_ge")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="learning rate (optim.lr)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto | cpu | cuda")
    p.add_argument("--runs-dir", help="folder holding run folders (default runs)")
    p.add_argument("--name", help="run name (folder name under --runs-dir)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any field, e.g. method.alpha=0.3")


def config_from_args(args: argparse.Namespace):
    from modalscope.config import resolve_config

    base: dict = {}
    if args.dataset:
        base.setdefault("data", {})["name"] = args.dataset
    if args.preset:
        base.setdefault("data", {})["preset"] = args.preset
    if getattr(args, "data_path", None):
        base.setdefault("data", {})["path"] = args.data_path
    if args.method:
        base["method"] = {"name": args.method, "_from_flag": True}
    for key, attr in (("epochs", "epochs"), ("batch_size", "batch_size"), ("seed", "seed"), ("device", "device"),
                      ("runs_dir", "runs_dir"), ("name", "name")):
        v = getattr(args, attr)
        if v is not None:
            base[key] = v
    if args.lr is not None:
        base.setdefault("optim", {})["lr"] = args.lr
    if getattr(args, "allow_pickle", False):
        base.setdefault("data", {})["allow_pickle"] = True
    return resolve_config(base=base, config_file=args.config, overrides=args.set)


RESUME_FIXED = (("--config", "config"), ("--dataset", "dataset"), ("--preset", "preset"), ("--data-path", "data_path"),
                ("--method", "method"), ("--batch-size", "batch_size"), ("--lr", "lr"), ("--seed", "seed"),
                ("--runs-dir", "runs_dir"), ("--name", "name"), ("--init-from", "init_from"))


def _resume_trainer(args: argparse.Namespace):
    """``train --resume RUN [--epochs N]``: continue the stored config from its last checkpoint.

    ``--epochs N`` extends (or shortens, never below what is trained) the run, a finished
    one included; the stored config.json is updated once the checkpoint has loaded. Resuming
    a finished run without a larger ``--epochs`` is refused, as is any flag that would
    silently change the stored experiment (only ``--epochs``, ``--device``, ``--set`` apply).
    """
    from modalscope.config import build_config, read_config_file, resolve_config
    from modalscope.engine import Trainer
    from modalscope.errors import StoreError
    from modalscope.store import is_run_dir, open_run

    run_dir = Path(args.resume)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise ModalScopeError(f"--resume {run_dir}: not a run folder (no config.json)")
    fixed = [flag for flag, attr in RESUME_FIXED if getattr(args, attr, None) is not None]
    if fixed:
        raise ModalScopeError(f"--resume continues the stored config: {', '.join(fixed)} cannot change it (only --epochs, --device and --set apply)")
    raw = read_config_file(cfg_path)
    stored = dict(raw)
    if args.epochs is not None:
        raw["epochs"] = args.epochs
    if args.device is not None:
        raw["device"] = args.device
    cfg = resolve_config(base=raw, overrides=args.set) if args.set else build_config(raw)
    new = cfg.dump()
    if args.no_progress:
        cfg.log.progress = False
    try:
        reader = open_run(run_dir) if is_run_dir(run_dir) else None
        done = (reader.summary().get("epochs_done") or 0) if reader is not None else 0
    except StoreError:  # an unreadable store: the trainer refuses it in its own words below
        reader, done = None, 0
    if reader is not None:
        if reader.status() == "finished" and cfg.epochs <= done:
            raise ModalScopeError(f"--resume {run_dir}: the run already finished its {done} epochs; "
                                  f"add --epochs N with N > {done} to train it further")
        if cfg.epochs < done:
            raise ModalScopeError(f"--epochs {cfg.epochs}: the run has already trained {done} epochs (give at least {done})")
    trainer = Trainer(cfg, resume=True, run_dir=run_dir)
    if new != stored:
        cfg_path.write_text(json.dumps(new, indent=2))
    return trainer


def cmd_train(args: argparse.Namespace) -> int:
    from modalscope.engine import StopRequested, Trainer

    if args.resume:
        trainer = _resume_trainer(args)
    else:
        cfg = config_from_args(args)
        if args.no_progress:
            cfg.log.progress = False
        trainer = Trainer(cfg, init_from=args.init_from)
    print(f"run folder: {trainer.run_dir}", file=sys.stderr, flush=True)
    try:
        metrics = trainer.fit()
    except StopRequested as e:
        print(f"interrupted: {e or 'stopped'}; resume with: modalscope train --resume {trainer.run_dir}", file=sys.stderr)
        return 130
    summary = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
    print(summary, file=sys.stderr)
    print(trainer.run_dir)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    import pandas as pd

    from modalscope.store import list_runs, open_run, resolve_run

    if args.runs_cmd == "list":
        df = list_runs(*args.roots) if args.roots else list_runs(args.runs_dir)
        if df.empty:
            print(f"no runs under {', '.join(args.roots or [args.runs_dir])}")
            return 0
        cols = [c for c in ["name", "method", "preset", "seed", "status", "epochs_done", "epochs", "acc_fused", "best_acc_fused"] if c in df]
        cols += sorted(c for c in df.columns if c.startswith("acc_") and c != "acc_fused")
        out = df[cols].astype(object)
        for c in cols:  # a value a run lacks (a modality it does not have, no epoch yet) reads "—", as on the dashboard
            num = pd.to_numeric(df[c], errors="coerce") if c.startswith(("acc_", "best_")) else None
            if num is not None:
                out[c] = [MISSING if pd.isna(v) else f"{v:.4f}" for v in num]
            else:
                out[c] = [MISSING if v is None or (isinstance(v, float) and pd.isna(v)) else (int(v) if isinstance(v, float) and v.is_integer() else v)
                          for v in df[c]]
        with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_rows", 500):
            print(out.to_string(index=False))
        return 0
    run = open_run(resolve_run(args.run, args.runs_dir))
    if args.runs_cmd == "show":
        s = run.summary()
        meta = run.meta()
        print(f"run:      {s['name']}  ({s['path']})")
        if s["status"] == "interrupted":  # a stop is not a failure: say how to go on
            from modalscope.launcher import interrupted_message

            print(f"status:   interrupted · {interrupted_message(s.get('error', ''), s['path']).replace('`', '')}")
        else:
            print(f"status:   {s['status']}" + (f"  error: {s['error']}" if s.get("error") else ""))
        print(f"method:   {s['method']}   data: {s['dataset']} / {s['preset']}   seed: {s['seed']}")
        print(f"progress: {s['epochs_done'] or 0}/{s['epochs']} epochs")
        for k, v in sorted(s.items()):
            if k.startswith("acc_"):
                print(f"  test accuracy {k[4:]:<10} {v:.4f}")
        ref = meta.get("reference") or {}
        if ref.get("bayes"):
            print("bayes ceiling: " + ", ".join(f"{k}={v:.4f}" for k, v in ref["bayes"].items()))
        counts = run.counts()
        print("rows:     " + ", ".join(f"{k}={v}" for k, v in counts.items()))
        return 0
    if args.runs_cmd == "export":
        what = args.what
        if args.format == "tensorboard":
            from modalscope.export_tb import export_tensorboard

            if what != "scalars":
                raise ModalScopeError("--format tensorboard exports scalars and gap histograms; use --what scalars")
            print(export_tensorboard(run, Path(args.out) if args.out else run.dir / "export_tensorboard"))
            return 0
        df = {"scalars": run.scalars, "samples": run.samples, "contributions": run.contributions, "events": run.events, "gmm": run.gmm}[what]()
        if what == "gmm":
            for c in ("weights", "means", "variances"):
                df[c] = [json.dumps(v) for v in df[c]]
        out = Path(args.out) if args.out else run.dir / f"export_{what}.{args.format}"
        if args.format == "csv":
            df.to_csv(out, index=False)
        else:
            df.to_parquet(out, index=False)
        print(out)
        return 0
    raise ModalScopeError(f"unknown runs command {args.runs_cmd!r}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def dashboard_command(host: str, port: int, runs_dir: str, sample_runs: str) -> list[str]:
    app = Path(importlib.util.find_spec("modalscope.dashboard").submodule_search_locations[0]) / "app.py"
    return [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.address", host, "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer", "--theme.primaryColor", "#2E86AB",
        "--", "--runs-dir", runs_dir, "--sample-runs", sample_runs,
    ]


class _Stop(Exception):
    pass


def serve_child(cmd: list[str]) -> int:
    """Run ``cmd`` as a child and take it down with us: SIGTERM, SIGINT (Ctrl-C) or SIGHUP to
    this process terminates the child (SIGKILL after 10 s) before we exit, so no server is
    left holding the port. Returns the child's exit status, or 130 when we were stopped."""
    import signal

    proc = subprocess.Popen(cmd)

    def handler(signum, frame):
        raise _Stop(signum)

    old = {}
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        try:
            old[s] = signal.signal(s, handler)
        except (ValueError, OSError):
            pass
    try:
        return proc.wait()
    except (_Stop, KeyboardInterrupt):
        for s in old:  # a second signal must not interrupt the clean-up
            signal.signal(s, signal.SIG_IGN)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 130
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def cmd_dashboard(args: argparse.Namespace) -> int:
    if not _is_loopback(args.host):
        print(f"warning: binding the dashboard to {args.host}: anyone who can reach this address can launch and delete runs", file=sys.stderr)
    cmd = dashboard_command(args.host, args.port, args.runs_dir, args.sample_runs)
    print(f"ModalScope dashboard on http://{args.host}:{args.port}  (runs: {args.runs_dir}, gallery: {args.sample_runs})", file=sys.stderr)
    return serve_child(cmd)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="modalscope", description="Modality-imbalance training engine and dashboard.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one run")
    _add_config_args(t)
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    t.add_argument("--init-from", metavar="RUN", help="initialise the model from another run's checkpoint")
    t.add_argument("--allow-pickle", action="store_true", help="allow loading pickled data files (trusted files only)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(fn=cmd_train)

    r = sub.add_parser("runs", help="list, inspect and export runs")
    rs = r.add_subparsers(dest="runs_cmd", required=True)
    rl = rs.add_parser("list", help="table of runs")
    rl.add_argument("roots", nargs="*", help="runs roots (default: --runs-dir)")
    rl.add_argument("--runs-dir", default="runs")
    for name, helptext in (("show", "status, progress and final metrics of a run"), ("export", "export a run's rows")):
        q = rs.add_parser(name, help=helptext)
        q.add_argument("run", help="run folder or run name under --runs-dir")
        q.add_argument("--runs-dir", default="runs")
        if name == "export":
            q.add_argument("--what", choices=["scalars", "samples", "contributions", "events", "gmm"], default="scalars")
            q.add_argument("--format", choices=["csv", "parquet", "tensorboard"], default="csv",
                           help="tensorboard: a folder of event files (scalars and gap histograms)")
            q.add_argument("--out", help="output file or folder (default: export_<what>.<format> in the run's folder)")
    r.set_defaults(fn=cmd_runs)

    d = sub.add_parser("dashboard", help="start the Streamlit dashboard")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=int, default=8501)
    d.add_argument("--runs-dir", default="runs")
    d.add_argument("--sample-runs", default="sample_runs")
    d.set_defaults(fn=cmd_dashboard)

    for modname in SUBCOMMANDS:
        importlib.import_module(modname).add_parser(sub)
    return p


class _Parser(argparse.ArgumentParser):
    """Usage mistakes get the same one-line ``error: ...`` (exit 2) as every other user error."""

    def error(self, message: str):  # type: ignore[override]
        print(f"error: {self.prog}: {' '.join(message.split())} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except ModalScopeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:
        print(f"error: {e.strerror or e}: {e.filename}" if e.filename else f"error: {e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
