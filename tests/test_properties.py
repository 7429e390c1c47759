"""Property tests (hypothesis): configs round-trip, the store keeps exactly what it is given,
histograms account for every sample."""

from __future__ import annotations

import itertools
import json
import math
import tempfile
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modalscope.config import RUN_NAME_RE, build_config, resolve_config
from modalscope.diagnostics.gap import gap_histogram
from modalscope.errors import ConfigError
from modalscope.methods import list_methods
from modalscope.store import RunReader, RunWriter

pytestmark = pytest.mark.reliability

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PRESET_MODALITIES = {
    "balanced": ["audio", "visual"],
    "imbalanced": ["audio", "visual"],
    "complementary": ["audio", "visual"],
    "noisy": ["audio", "visual"],
    "three_modal": ["audio", "visual", "text"],
}


def floats(lo, hi, lo_open=False, hi_open=False):
    return st.floats(min_value=lo, max_value=hi, exclude_min=lo_open, exclude_max=hi_open, allow_nan=False, allow_infinity=False)


run_names = st.from_regex(RUN_NAME_RE, fullmatch=True).filter(lambda s: ".." not in s)
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)


@st.composite
def raw_configs(draw) -> dict:
    """A valid config dict over (nearly) every field, as a user could write it in YAML."""
    preset = draw(st.sampled_from(sorted(PRESET_MODALITIES)))
    mods = PRESET_MODALITIES[preset]
    method_name = draw(st.sampled_from(sorted(list_methods())))
    method = {"name": method_name}
    if method_name == "unimodal":
        method["modality"] = draw(st.sampled_from(mods))
    custom = draw(st.booleans())
    n_classes = draw(st.integers(2, 64) if custom else st.integers(5, 8))  # presets define 3 code bits
    bits = max(1, math.ceil(math.log2(n_classes)))
    data = {"name": "synthetic", "preset": preset, "n_classes": n_classes, "seed": draw(st.integers(0, 2**31 - 1))}
    if custom:
        data["strength"] = {m: draw(st.lists(floats(0, 10), min_size=bits, max_size=bits)) for m in mods}
        data["scale"] = {m: draw(floats(0, 100, lo_open=True)) for m in mods}
        data["dims"] = {m: draw(st.integers(bits, 4096)) for m in mods}
    raw = {
        "epochs": draw(st.integers(1, 100000)),
        "batch_size": draw(st.integers(1, 65536)),
        "seed": draw(st.integers(0, 2**31 - 1)),
        "device": draw(st.sampled_from(["auto", "cpu", "cuda"])),
        "data": data,
        "method": method,
        "model": {
            "hidden": draw(st.integers(1, 8192)),
            "depth": draw(st.integers(1, 8)),
            "dropout": draw(floats(0, 1, hi_open=True)),
            "fusion": draw(st.sampled_from(["concat", "sum", "gated"])),
        },
        "optim": {
            "name": draw(st.sampled_from(["sgd", "adam", "adamw"])),
            "lr": draw(floats(0, 10, lo_open=True)),
            "momentum": draw(floats(0, 1, hi_open=True)),
            "weight_decay": draw(floats(0, 1)),
            "schedule": draw(st.sampled_from(["none", "step", "cosine"])),
            "gamma": draw(floats(0, 1, lo_open=True)),
            "grad_clip": draw(floats(0, 1e6)),
        },
        "log": {"every_steps": draw(st.integers(1, 100000)), "flush_seconds": draw(floats(0, 3600, lo_open=True)),
                "checkpoint": draw(st.booleans())},
        "diagnostics": {"gap_bins": draw(st.integers(4, 1000)),
                        "gap_splits": draw(st.lists(st.sampled_from(["train", "valid", "test"]), max_size=3))},
        "tags": draw(st.dictionaries(text, text, max_size=3)),
    }
    if draw(st.booleans()):
        raw["name"] = draw(run_names)
    return raw


@SETTINGS
@given(raw_configs())
def test_config_round_trips_through_json_and_yaml(raw):
    bad = [c for t in raw["tags"].items() for s in t for c in s if unicodedata.category(c) in ("Cc", "Zl", "Zp")]
    if bad:
        with pytest.raises(ConfigError, match=r"^config error: tags.*one line of printable text") as e:
            build_config(raw)
        assert "\n" not in str(e.value)
        return
    cfg = build_config(raw)
    dumped = cfg.dump()
    assert build_config(json.loads(json.dumps(dumped))) == cfg
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "c.yaml"
        f.write_text(yaml.safe_dump(dumped, allow_unicode=True), encoding="utf-8")
        again = resolve_config(config_file=str(f))
    assert again == cfg and again.dump() == dumped


@pytest.mark.parametrize("char", ["\x85", "\u2028", "\u2029", "\n", "\t", "\x00"])
def test_tags_that_yaml_cannot_round_trip_are_refused_in_one_line(char):
    with pytest.raises(ConfigError) as e:
        build_config({"tags": {"note": f"a{char}b"}})
    msg = str(e.value)
    assert msg.startswith("config error: tags") and f"U+{ord(char):04X}" in msg and "\n" not in msg


def test_printable_unicode_tags_round_trip_through_yaml(tmp_path):
    cfg = build_config({"tags": {"ünï": "café \u00a0 ✓ \u200b"}})
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(cfg.dump(), allow_unicode=True), encoding="utf-8")
    assert resolve_config(config_file=str(f)) == cfg


def _set_items(dumped: dict) -> list[str]:
    """``--set`` overrides reproducing every field except free text (written as JSON, a YAML subset)."""
    out = []
    for key, value in dumped.items():
        if key in ("tags", "name"):
            continue
        if isinstance(value, dict) and key in ("model", "optim", "log", "diagnostics"):
            out += [f"{key}.{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in value.items()]
        else:
            out.append(f"{key}={value if isinstance(value, str) else json.dumps(value)}")
    return out


@SETTINGS
@given(raw_configs())
def test_config_round_trips_through_set_overrides(raw):
    raw.pop("name", None)
    raw.pop("tags", None)
    cfg = build_config(raw)
    assert resolve_config(overrides=_set_items(cfg.dump())) == cfg


# --------------------------------------------------------------------------- store

values = st.floats(allow_nan=True, allow_infinity=True, width=64)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("scalar"), st.sampled_from(["loss/fused", "grad_norm/audio", "acc/test/fused"]), values),
        st.tuples(st.just("scalars"), st.integers(1, 6), values),
        st.tuples(st.just("event"), text, st.just(0.0)),
        st.tuples(st.just("flush"), st.just(""), st.just(0.0)),
        st.tuples(st.just("read"), st.just(""), st.just(0.0)),
    ),
    max_size=60,
)


def _same_floats(a, b) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


@settings(SETTINGS, max_examples=25)
@given(ops=ops, flush_rows=st.integers(1, 25))
def test_store_returns_exactly_the_rows_written_in_any_batch_pattern(ops, flush_rows):
    with tempfile.TemporaryDirectory() as d:
        w = RunWriter(Path(d) / "r", flush_rows=flush_rows, flush_seconds=3600, heartbeat_seconds=3600)
        expected_scalars, expected_events = [], []
        step = 0
        for kind, a, v in ops:
            if kind == "scalar":
                w.log_scalar(step, step // 7, a, v)
                expected_scalars.append((step, step // 7, a, v))
            elif kind == "scalars":
                vals = {f"m/{i}": v + i for i in range(a)}
                w.log_scalars(step, step // 7, vals)
                expected_scalars += [(step, step // 7, k, x) for k, x in vals.items()]
            elif kind == "event":
                w.log_event(step, 0, "note", a)
                expected_events.append(a)
            elif kind == "flush":
                w.flush()
            else:
                r = RunReader(Path(d) / "r")
                n = len(r.scalars()) + len(r.events())
                assert n == w.rows_written, "a reader sees exactly the committed rows"
                assert n <= len(expected_scalars) + len(expected_events)
                assert len(expected_scalars) + len(expected_events) - n < flush_rows, "at most one buffer is pending"
            step += 1
        w.close("finished")
        r = RunReader(Path(d) / "r")
        df = r.scalars()
        assert df[["step", "epoch", "name"]].to_records(index=False).tolist() == [e[:3] for e in expected_scalars]
        assert _same_floats(df["value"], [e[3] for e in expected_scalars])
        assert r.events()["message"].tolist() == expected_events
        assert w.rows_written == len(expected_scalars) + len(expected_events) == sum(r.counts().values())


# --------------------------------------------------------------------------- histograms


@pytest.fixture(scope="module")
def hist_store(tmp_path_factory):
    """One live store for all examples (a writer per example would dominate the run time)."""
    d = tmp_path_factory.mktemp("hist") / "r"
    w = RunWriter(d, heartbeat_seconds=3600)
    yield w, d
    w.close("finished")


@SETTINGS
@given(
    gaps=st.lists(st.floats(allow_nan=False, allow_infinity=True, width=64), min_size=0, max_size=300),
    bins=st.integers(4, 200),
)
def test_gap_histogram_counts_sum_to_the_sample_count(hist_store, gaps, bins):
    """Modality-gap histograms use fixed edges over [-1, 1] with values clipped into range."""
    w, d = hist_store
    edges, counts = gap_histogram(np.asarray(gaps, dtype=np.float64), bins)
    assert np.array_equal(edges, np.linspace(-1.0, 1.0, bins + 1))
    assert counts.sum() == len(gaps)
    expected = np.zeros(bins)
    for g in gaps:
        g = min(max(g, -1.0), 1.0)
        i = next((k for k in range(bins) if edges[k] <= g < edges[k + 1]), bins - 1)
        expected[i] += 1
    assert np.array_equal(counts, expected), "every sample lands in the bin whose [left, right) holds it"
    epoch = w.rows_written
    w.log_histogram(epoch, "train", "gap", edges, counts)
    w.flush()
    h = RunReader(d).histograms()
    h = h[h["epoch"] == epoch]
    assert len(h) == 1
    assert np.array_equal(h["edges"].iloc[0], edges)
    assert np.array_equal(h["counts"].iloc[0], counts) and h["counts"].iloc[0].sum() == len(gaps)
