"""The one validated run configuration, shared by the CLI, the dashboard and sweeps.

``RunConfig`` is a pydantic v2 model with ``extra="forbid"`` everywhere, so an unknown key
is an error, and every numeric field carries its allowed range. The ``data`` and ``method``
blocks are discriminated unions over the dataset and method registries (keyed by
``name``), so each dataset / method owns its knobs and their documentation, and adding one
never edits this file.

Errors are reported as one line naming the field, the allowed range and the value given,
e.g. ``config error: optim.lr: Input should be greater than 0 (got -1)``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from modalscope import data as _data
from modalscope import methods as _methods
from modalscope.data.base import _REGISTRY as _DATASETS
from modalscope.errors import ConfigError
from modalscope.methods.base import _REGISTRY as _METHODS

SCHEMA_VERSION = 1
_NOT_ONE_LINE = frozenset({"Cc", "Zl", "Zp"})
RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def validate_run_name(name: str) -> str:
    """Run names become folder names: letters, digits, ``._-``; no separators, no ``..``."""
    if not isinstance(name, str) or not RUN_NAME_RE.match(name) or ".." in name:
        raise ConfigError(
            f"invalid run name {name!r}: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit, no '/' or '..'"
        )
    return name


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Strict):
    hidden: int = Field(128, ge=1, le=8192, description="Hidden width of each encoder.")
    embed_dim: int = Field(64, ge=1, le=8192, description="Feature dimension each encoder outputs.")
    depth: int = Field(2, ge=1, le=8, description="Hidden layers per encoder.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout in the encoders.")
    fusion: Literal["concat", "sum", "gated"] = Field("concat", description="Late-fusion layer.")
    heads: Literal["auto", "slice", "separate", "trained"] = Field(
        "auto",
        description="Per-modality logits: slices of the fusion layer, detached monitor heads, or heads trained with the encoders.",
    )


class OptimConfig(Strict):
    name: Literal["sgd", "adam", "adamw"] = Field("sgd", description="Optimiser.")
    lr: float = Field(0.05, gt=0.0, le=10.0, description="Learning rate.")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum.")
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0, description="Weight decay.")
    schedule: Literal["none", "step", "cosine"] = Field("none", description="Learning-rate schedule (per epoch).")
    step_size: int = Field(10, ge=1, le=100000, description="Epochs between decays for schedule=step.")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="Decay factor for schedule=step.")
    grad_clip: float = Field(0.0, ge=0.0, le=1e6, description="Clip the total gradient norm (0 = off).")


class LogConfig(Strict):
    every_steps: int = Field(1, ge=1, le=100000, description="Log step scalars every N steps.")
    flush_rows: int = Field(2000, ge=1, le=10_000_000, description="Flush the store after this many buffered rows.")
    flush_seconds: float = Field(0.5, gt=0.0, le=3600.0, description="Commit logged rows to the store at least this often (what a live dashboard waits for).")
    heartbeat_seconds: float = Field(2.0, gt=0.0, le=3600.0, description="Heartbeat period of a running trainer.")
    eval_train: bool = Field(False, description="Run a no-grad pass over the training split each epoch; the train-split gap diagnostics then use it instead of the epoch's own training forward passes (stale by up to one epoch).")
    progress: bool = Field(True, description="Show a progress bar in the terminal.")
    checkpoint: bool = Field(True, description="Write checkpoint.pt (needed for --resume) and best.pt.")
    checkpoint_seconds: float = Field(
        30.0, ge=0.0, le=1e6,
        description="Write checkpoint.pt at the end of an epoch only when this many seconds have passed since the last one "
                    "(always after the last epoch; 0 = after every epoch). A resumed run replays from it exactly.",
    )


class DiagnosticsConfig(Strict):
    grad: bool = Field(True, description="Per-modality gradient norms, shares, dominance ratio (every step).")
    conflict: bool = Field(True, description="Gradient cosines fused-vs-unimodal and across modalities.")
    conflict_every: int = Field(
        50, ge=1, le=1_000_000,
        description="Steps between conflict-cosine evaluations (each costs M + 1 extra partial backward passes, about 1.4 bare steps).",
    )
    conflict_tau: float = Field(2.0, ge=1.0, le=1000.0, description="Dominance ratio above which a step is flagged.")
    gap: bool = Field(True, description="Per-sample modality gap histograms every epoch.")
    gap_every: int = Field(1, ge=1, le=100000, description="Epochs between gap/GMM evaluations.")
    gap_bins: int = Field(40, ge=4, le=1000, description="Histogram bins over [-1, 1].")
    gap_splits: list[Literal["train", "valid", "test"]] = Field(["train", "test"], description="Splits to evaluate.")
    samples: bool = Field(True, description="Store the per-sample gap snapshot.")
    samples_max: int = Field(20000, ge=0, le=10_000_000, description="At most this many samples per split in the snapshot.")
    gmm: bool = Field(True, description="Fit 1- and 2-component GMMs to the gap.")
    contrib: bool = Field(True, description="Shapley contribution I(m), confidence D(m), W^m every epoch.")
    contrib_batches: int = Field(4, ge=1, le=10000, description="Fixed evaluation batches for contributions.")
    contrib_absent: Literal["zero", "mean"] = Field("zero", description="How an absent modality is filled.")
    contrib_temperature: float = Field(1.0, gt=0.0, le=1000.0, description="Softmax temperature of W^m.")
    captum: bool = Field(
        False, description="Cross-check contributions with captum attribution (opt-in: importing captum adds a second-scale cost to every run's start-up)."
    )
    captum_method: Literal["shapley_sampling", "feature_ablation"] = Field("feature_ablation", description="captum algorithm.")
    probe: bool = Field(True, description="Linear probes on frozen encoder features (fit on train, scored on valid/test) at init, every probe_every epochs and at the last epoch.")
    probe_every: int = Field(5, ge=1, le=100000, description="Epochs between encoder probes (the last epoch is always probed).")
    probe_max_samples: int = Field(20000, ge=10, le=10_000_000, description="At most this many samples per split (a fixed seeded subset) for the probes.")
    robust: bool = Field(False, description="At the end of a run, test accuracy with each modality noised or blanked (opt-in).")
    robust_levels: list[Annotated[float, Field(ge=0.0, le=100.0)]] = Field(
        [0.5, 1.0, 2.0], min_length=1, max_length=16, description="Gaussian noise std as multiples of each feature's std."
    )


DataSpec = Annotated[Union[tuple(cls.Params for cls in _DATASETS.values())], Field(discriminator="name")]  # type: ignore[misc]
MethodSpec = Annotated[Union[tuple(cls.Params for cls in _METHODS.values())], Field(discriminator="name")]  # type: ignore[misc]


class RunConfig(Strict):
    """Everything that determines a run. Stored verbatim (all defaults resolved) in config.json."""

    schema_version: int = Field(SCHEMA_VERSION, ge=1)
    name: str | None = Field(None, description="Run folder name (default: method_preset_seed_time).")
    runs_dir: str = Field("runs", min_length=1, description="Folder that holds run folders.")
    data: DataSpec = Field(default_factory=lambda: _DATASETS["synthetic"].Params())  # type: ignore[assignment]
    method: MethodSpec = Field(default_factory=lambda: _METHODS["joint"].Params())  # type: ignore[assignment]
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    epochs: int = Field(20, ge=1, le=100000, description="Training epochs.")
    batch_size: int = Field(64, ge=1, le=65536, description="Batch size.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Training seed (initialisation, data order, dropout).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto uses CUDA when available.")
    log: LogConfig = Field(default_factory=LogConfig)
    diagnostics: DiagnosticsConfig = Field(default_factory=DiagnosticsConfig)
    tags: dict[str, str] = Field(default_factory=dict, description="Free-form labels (e.g. sweep name).")

    @field_validator("schema_version")
    @classmethod
    def _not_newer(cls, v: int) -> int:
        if v > SCHEMA_VERSION:
            raise ValueError(f"config schema {v} is newer than this ModalScope understands ({SCHEMA_VERSION}); upgrade ModalScope")
        return v

    @field_validator("tags")
    @classmethod
    def _tags_one_line(cls, v: dict[str, str]) -> dict[str, str]:
        """Tags are one-line printable labels: control characters and Unicode line breaks
        (U+0085, U+2028, U+2029) are refused, because YAML readers fold them into spaces and a
        config written to YAML would then no longer read back as itself."""
        for key, value in v.items():
            for what, text in (("key", key), ("value", value)):
                bad = next((c for c in text if unicodedata.category(c) in _NOT_ONE_LINE), None)
                if bad is not None:
                    raise ValueError(
                        f"tag {what} {text!r} contains U+{ord(bad):04X} ({unicodedata.category(bad)}); "
                        "tags must be one line of printable text"
                    )
        return v

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                validate_run_name(v)
            except ConfigError as e:
                raise ValueError(str(e)) from None
        return v

    @model_validator(mode="after")
    def _method_fits_data(self) -> "RunConfig":
        mods = _DATASETS[self.data.name].modalities(self.data)
        if mods is not None:
            try:
                _METHODS[self.method.name].check_config(self.method, mods, "classification")
            except ConfigError as e:
                raise ValueError(str(e)) from None
        return self

    def dump(self) -> dict:
        return self.model_dump(mode="json")

    def default_name(self) -> str:
        import time

        preset = getattr(self.data, "preset", self.data.name)
        method = self.method.name
        if method == "unimodal":
            method = f"unimodal-{self.method.modality}"
        return f"{method}_{preset}_s{self.seed}_{time.strftime('%Y%m%d-%H%M%S')}"


def format_validation_error(e: ValidationError) -> str:
    """One line: ``<field.path>: <message> (got <value>)`` for the first error (+N more)."""
    errs = e.errors()
    first = errs[0]
    loc = [str(p) for p in first.get("loc", ())]
    tags = set(_DATASETS) | set(_METHODS)
    if len(loc) >= 2 and loc[0] in ("data", "method") and loc[1] in tags:
        loc = [loc[0]] + loc[2:]
    field = ".".join(loc)
    msg = first.get("msg", "invalid value")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if not field:
        return f"config error: {msg}"
    if first.get("type") == "extra_forbidden":
        msg = "unknown key"
    if first.get("type") == "union_tag_invalid":
        kind = "method" if loc[:1] == ["method"] else "dataset"
        avail = sorted(_METHODS if kind == "method" else _DATASETS)
        msg = f"unknown {kind} {first.get('ctx', {}).get('tag')!r}; available: {', '.join(avail)}"
    got = first.get("input")
    more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
    show = first.get("type") not in ("extra_forbidden", "union_tag_invalid", "missing") and not isinstance(got, dict)
    got_s = f" (got {json.dumps(got, default=str)[:60]})" if show else ""
    return f"config error: {field}: {msg}{got_s}{more}"


def build_config(raw: dict[str, Any]) -> RunConfig:
    """Validate a plain dict into a RunConfig, raising ConfigError with one line."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config error: the config must be a mapping of keys to values, got {type(raw).__name__}")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e)) from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file (``yaml.safe_load``: no object construction)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    text = p.read_text(encoding="utf-8", errors="replace")
    try:
        raw = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"malformed JSON in {p}: {e.msg} at line {e.lineno} column {e.colno}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ConfigError(f"malformed YAML in {p}: {getattr(e, 'problem', None) or 'syntax error'}{where}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {p} must hold a mapping of keys to values, got {type(raw).__name__}")
    return raw


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` → (["a","b","c"], value) with the value parsed as YAML (safe_load)."""
    if "=" not in text:
        raise ConfigError(f"--set expects dotted.key=value, got {text!r}")
    key, _, val = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set has an empty key in {text!r}")
    try:
        value = yaml.safe_load(val) if val.strip() != "" else ""
    except yaml.YAMLError:
        value = val
    return key.split("."), value


def set_dotted(raw: dict[str, Any], path: list[str], value: Any) -> None:
    cur = raw
    for part in path[:-1]:
        nxt = cur.get(part)
        if nxt is None:
            nxt = {}
            cur[part] = nxt
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {'.'.join(path)}: {part!r} is not a section")
        cur = nxt
    cur[path[-1]] = value


def resolve_config(
    base: dict[str, Any] | None = None, config_file: str | None = None, overrides: list[str] | None = None
) -> RunConfig:
    """Merge a config file, a base dict and ``--set`` overrides (in that order), then validate."""
    raw: dict[str, Any] = {}
    if config_file:
        raw = read_config_file(config_file)
    for path, value in _flatten(base or {}):
        set_dotted(raw, path, value)
    for item in overrides or []:
        path, value = parse_override(item)
        set_dotted(raw, path, value)
    for section, default in (("method", "joint"), ("data", "synthetic")):
        if isinstance(raw.get(section), dict):
            raw[section].setdefault("name", default)
    _drop_stale_method_keys(raw)
    return build_config(raw)


def _drop_stale_method_keys(raw: dict[str, Any]) -> None:
    """When the method name changes from the file's, keep only keys the new method knows."""
    m = raw.get("method")
    if isinstance(m, dict) and m.get("name") in _METHODS:
        fields = _METHODS[m["name"]].Params.model_fields
        if m.get("_from_flag"):
            for k in [k for k in m if k not in fields]:
                m.pop(k)
        m.pop("_from_flag", None)


def _flatten(d: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[list[str], Any]]:
    out: list[tuple[list[str], Any]] = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.extend(_flatten(v, prefix + (k,)))
        else:
            out.append((list(prefix + (k,)), v))
    return out


def load_config_json(path: str | Path) -> RunConfig:
    """Load a run's stored config.json."""
    return build_config(read_config_file(path))


def config_schema() -> dict:
    """JSON schema of RunConfig (the dashboard builds its Launch form from it)."""
    return RunConfig.model_json_schema()


def method_params_class(name: str):
    return _methods.get_method(name).Params


def dataset_params_class(name: str):
    return _data.get_dataset(name).Params
