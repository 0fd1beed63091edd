"""`faceid-train`: subcommands dispatch to the module that implements them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from training import cli
from training.config import load_config

CPU_SMALL = Path(__file__).resolve().parents[2] / "training" / "configs" / "cpu_small.toml"


def test_train_prints_the_resolved_config_with_overrides(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("torch")
    code = cli.main(["train", "--config", str(CPU_SMALL), "--set", "optim.lr=0.02", "--print-config"])
    assert code == 0
    printed = tmp_path / "printed.toml"
    printed.write_text(capsys.readouterr().out)
    assert load_config(printed) == load_config(CPU_SMALL, ["optim.lr=0.02"])


def test_only_the_chosen_subcommand_is_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "training.export", raising=False)
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "training.export" not in sys.modules


def test_a_missing_subcommand_module_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(cli.COMMANDS, "synth", ("training.data.not_written_yet", "draw people"))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["synth"])
    assert exit_info.value.code == 2
    assert "synth is not available" in capsys.readouterr().err


def test_unknown_override_key_fails_before_training(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--config", str(CPU_SMALL), "--set", "optim.lrate=1"])
    assert exit_info.value.code == 2
    assert "unknown key 'optim.lrate'" in capsys.readouterr().err


def test_calibrate_is_a_subcommand_with_its_own_arguments() -> None:
    pytest.importorskip("torch")
    args = cli.build_parser("calibrate").parse_args(["calibrate", "--manifest", "builtin:sface", "--synthetic", "50"])
    assert (args.manifest, args.synthetic, args.seed) == ("builtin:sface", 50, 1001)
    assert args.handler.__module__ == "training.calibrate"
