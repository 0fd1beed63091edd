"""Experiment configs: strict keys, typed overrides, `extends`, and a lossless round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import ConfigError, ExperimentConfig, config_from_dict, load_config, to_toml

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_values_are_typed_by_their_field(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path / "a.toml",
            '[head]\nname = "cosface"\nscale = 30\ncombined = [1, 0.3, 0.2]\n[data]\nroot = "x/y"\n',
        )
    )
    assert cfg.head.name == "cosface"
    assert cfg.head.scale == 30.0
    assert isinstance(cfg.head.scale, float)
    assert cfg.head.combined == (1.0, 0.3, 0.2)
    assert cfg.data.root == Path("x/y")
    assert cfg.optim == ExperimentConfig().optim  # untouched sections keep their defaults


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[head]\nmargn = 0.4\n", r"unknown key 'head.margn'; did you mean 'head.margin'"),
        ("[heads]\nmargin = 0.4\n", r"unknown section 'heads'; did you mean 'head'"),
        ("[optim]\nlr = 'fast'\n", r"optim.lr must be float, got 'fast'"),
        ("[data]\nbatch_size = 1.5\n", r"data.batch_size must be int"),
        ("[schedule]\nkind = 'linear'\n", r"schedule.kind must be one of 'step', 'cosine', 'poly'"),
        ("[head]\ncombined = [1.0, 0.5]\n", r"head.combined must have 3 items"),
        ("[run]\namp = 1\n", r"run.amp must be bool"),
    ],
)
def test_strict_keys_and_types(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path / "bad.toml", text))


def test_overrides_are_parsed_for_the_field_they_set(tmp_path: Path) -> None:
    path = write(tmp_path / "a.toml", "[optim]\nlr = 0.1\n")
    cfg = load_config(
        path,
        [
            "optim.lr=0.05",
            "run.name=my run",
            "data.flip=false",
            "schedule.milestones=2,4.5",
            "head.combined=[1.0, 0.2, 0.1]",
            "data.val_pairs=lfw.bin",
            "optim.name=adamw",
            "data.batch_size=64",
        ],
    )
    assert cfg.optim.lr == 0.05
    assert cfg.run.name == "my run"
    assert cfg.data.flip is False
    assert cfg.schedule.milestones == (2.0, 4.5)
    assert cfg.head.combined == (1.0, 0.2, 0.1)
    assert cfg.data.val_pairs == Path("lfw.bin")
    assert load_config(path, ["data.val_pairs=none"]).data.val_pairs is None
    assert cfg.optim.name == "adamw"
    assert cfg.data.batch_size == 64


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=0.1", r"unknown key 'optim.lrr'"),
        ("optimizer.lr=0.1", r"unknown section 'optimizer'"),
        ("optim.lr", r"section.key=value"),
        ("data.batch_size=big", r"data.batch_size must be int, got 'big'"),
    ],
)
def test_bad_overrides_name_the_problem(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path / "a.toml", ""), [override])


def test_extends_merges_key_by_key_and_rejects_cycles(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write(tmp_path / "base.toml", '[head]\nname = "cosface"\nmargin = 0.35\n[optim]\nlr = 0.2\n')
    child = write(tmp_path / "sub" / "child.toml", 'extends = "../base.toml"\n[head]\nmargin = 0.4\n')
    cfg = load_config(child)
    assert (cfg.head.name, cfg.head.margin, cfg.optim.lr) == ("cosface", 0.4, 0.2)
    write(tmp_path / "x.toml", 'extends = "y.toml"\n')
    write(tmp_path / "y.toml", 'extends = "x.toml"\n')
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "x.toml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(write(tmp_path / "z.toml", 'extends = "missing.toml"\n'))


def test_round_trip_through_toml_and_dict(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path / "a.toml", ""), ["head.name=sphereface", "data.val_pairs=p.bin"])
    assert load_config(write(tmp_path / "b.toml", to_toml(cfg))) == cfg
    assert config_from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.toml")))
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(CONFIGS / name)
    assert cfg.backbone.embedding_size > 0
    assert cfg.optim.lr > 0
