import tomllib
from pathlib import Path

import pytest

from qa_core.config import Config, ConfigError, load_config, to_toml

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("preset", sorted((REPO / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_preset_loads_and_validates(preset):
    cfg = load_config(preset)
    assert isinstance(cfg, Config)
    # The resolved TOML round-trips to the same config.
    tmp = tomllib.loads(to_toml(cfg))
    assert tmp["optim"]["lr"] == cfg.optim.lr


def test_defaults_without_file():
    cfg = load_config(None)
    assert cfg == Config()


def test_overrides_are_parsed_to_the_field_type():
    cfg = load_config(None, ["optim.lr=5e-5", "train.batch_size=8", "model.dropout.hidden=0.3",
                             "early_stopping.enabled=true", "model.revision=main", "model.cache_dir=none"])
    assert cfg.optim.lr == 5e-5 and isinstance(cfg.optim.lr, float)
    assert cfg.train.batch_size == 8 and isinstance(cfg.train.batch_size, int)
    assert cfg.model.dropout.hidden == 0.3 and cfg.model.dropout.attention is None
    assert cfg.early_stopping.enabled is True
    assert cfg.model.revision == "main" and cfg.model.cache_dir is None


def test_override_beats_file(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text("[optim]\nlr = 1e-4\n[train]\nepochs = 3\n")
    cfg = load_config(path, ["optim.lr=2e-5"])
    assert (cfg.optim.lr, cfg.train.epochs) == (2e-5, 3)


def test_unknown_override_key_suggests_closest():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["optim.lrr=1e-4"])
    assert str(err.value).startswith("--set: unknown key 'optim.lrr'; did you mean optim.lr?")


def test_unknown_file_key_names_file_and_suggests(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text("[train]\nbatch_sise = 8\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: unknown key 'train.batch_sise'; did you mean train.batch_size?")


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'optimizer'; did you mean optim\?"):
        load_config(None, ["optimizer.lr=1"])


def test_wrong_type_in_file(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text('[train]\nbatch_size = "16"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: train.batch_size must be int, got str '16'"


def test_bad_override_value():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.batch_size=sixteen"])
    assert str(err.value) == "--set train.batch_size=sixteen: train.batch_size must be int, could not parse 'sixteen'"


def test_malformed_override():
    with pytest.raises(ConfigError, match=r"expected section.key=value"):
        load_config(None, ["optim.lr"])


def test_choice_field_suggests():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.precision=bf61"])
    assert "did you mean 'bf16'?" in str(err.value)


@pytest.mark.parametrize("override,message", [
    ("optim.lr=0", "optim.lr = 0.0 is out of range (0.0, 1.0]"),
    ("model.dropout.hidden=1.5", "model.dropout.hidden = 1.5 is out of range [0.0, 1.0]"),
    ("train.epochs=0", "train.epochs = 0 is out of range [1, 10000]"),
])
def test_out_of_range(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value) == message


def test_section_is_not_a_value():
    with pytest.raises(ConfigError, match="is a section"):
        load_config(None, ["model.dropout=0.3"])


def test_early_stopping_metric_must_be_reported():
    with pytest.raises(ConfigError, match="is not a reported metric"):
        load_config(None, ["early_stopping.enabled=true", "early_stopping.metric=val_accuracy"])


def test_stride_must_leave_room():
    with pytest.raises(ConfigError, match="doc_stride"):
        load_config(None, ["data.max_seq_length=128", "data.doc_stride=100"])
