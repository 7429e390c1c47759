import json

import pytest
import yaml

from modalscope.config import RunConfig, build_config, resolve_config, validate_run_name
from modalscope.errors import ConfigError


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["optim.lr=-1"], "optim.lr: Input should be greater than 0 (got -1)"),
        (["optim.lr=100"], "optim.lr: Input should be less than or equal to 10"),
        (["epochs=0"], "epochs: Input should be greater than or equal to 1"),
        (["epochs=abc"], "epochs: Input should be a valid integer"),
        (["batch_size=-5"], "batch_size: Input should be greater than or equal to 1"),
        (["device=gpu"], "device: Input should be 'auto', 'cpu' or 'cuda'"),
        (["optim.name=rmsprop"], "optim.name: Input should be 'sgd', 'adam' or 'adamw'"),
        (["optim.momentum=1.5"], "optim.momentum: Input should be less than 1"),
        (["model.fusion=film"], "model.fusion: Input should be 'concat', 'sum' or 'gated'"),
        (["data.preset=hard"], "data.preset: Input should be 'balanced', 'imbalanced', 'complementary', 'noisy' or 'three_modal'"),
        (["data.corrupt_rate=1.5"], "data.corrupt_rate: Input should be less than 1"),
        (["method.name=nosuch"], "method: unknown method 'nosuch'; available:"),
        (["data.name=nosuch"], "data: unknown dataset 'nosuch'; available:"),
        (["bogus=1"], "bogus: unknown key"),
        (["optim.bogus=1"], "optim.bogus: unknown key"),
        (["method.alpha=0.3"], "method.alpha: unknown key"),
        (["name=../evil"], "name: invalid run name '../evil'"),
        (["name=a/b"], "name: invalid run name 'a/b'"),
        (["schema_version=99"], "schema_version: config schema 99 is newer"),
        (["method.name=unimodal", "method.modality=text"], "method.modality: 'text' is not a modality of this dataset"),
        (["diagnostics.conflict_every=0"], "diagnostics.conflict_every: Input should be greater than or equal to 1"),
    ],
)
def test_bad_values_give_one_line_naming_the_field(overrides, expected):
    with pytest.raises(ConfigError) as ei:
        resolve_config(overrides=overrides)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith("config error: ")
    assert expected in msg, msg


def test_defaults_resolve_preset_knobs():
    cfg = resolve_config()
    assert cfg.data.name == "synthetic" and cfg.data.preset == "imbalanced"
    assert set(cfg.data.strength) == {"audio", "visual"}
    assert cfg.method.name == "joint"


def test_round_trip_dump_load_is_identity():
    cfg = resolve_config(overrides=["method.name=unimodal", "method.modality=audio", "optim.lr=0.01", "data.preset=three_modal"])
    again = build_config(json.loads(json.dumps(cfg.dump())))
    assert again == cfg
    assert again.dump() == cfg.dump()


def test_config_file_yaml_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"epochs": 3, "method": {"name": "unimodal", "modality": "audio"}}))
    cfg = resolve_config(config_file=str(f), overrides=["seed=7"])
    assert cfg.epochs == 3 and cfg.seed == 7 and cfg.method.modality == "audio"


def test_method_flag_replaces_method_from_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"method": {"name": "unimodal", "modality": "audio"}}))
    cfg = resolve_config(base={"method": {"name": "joint", "_from_flag": True}}, config_file=str(f))
    assert cfg.method.name == "joint"


@pytest.mark.parametrize(
    "text, expected",
    [("epochs: [1, 2\n", "malformed YAML"), ("- a\n- b\n", "must hold a mapping")],
)
def test_malformed_files(tmp_path, text, expected):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        resolve_config(config_file=str(f))


def test_malformed_json(tmp_path):
    f = tmp_path / "c.json"
    f.write_text('{"epochs": 3,,}')
    with pytest.raises(ConfigError, match=r"malformed JSON in .*line 1"):
        resolve_config(config_file=str(f))


def test_yaml_never_constructs_objects(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("epochs: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        resolve_config(config_file=str(f))


@pytest.mark.parametrize("name", ["ok", "run-1.b_2", "A" * 128])
def test_good_run_names(name):
    assert validate_run_name(name) == name


@pytest.mark.parametrize("name", ["", "../x", "a/b", "..", ".hidden", "a\\b", "x" * 129, "a b", "run..1"])
def test_bad_run_names(name):
    with pytest.raises(ConfigError, match="invalid run name"):
        validate_run_name(name)


def test_json_schema_lists_method_params():
    schema = RunConfig.model_json_schema()
    text = json.dumps(schema)
    assert "unimodal_weight" in text and "modality" in text
