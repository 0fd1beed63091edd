"""`faceid-train`: one entry point, one subcommand per step of making a model.

Each subcommand's arguments are declared by `add_arguments(parser)` in the module
that implements it, next to its `main(args)`. Only the chosen subcommand's module
is imported, so `faceid-train --help` is quick and one missing piece does not
break the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from training.config import ConfigError

# subcommand -> (module with add_arguments and main, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("training.data.prepare", "detect and align raw photos (one folder per person) into 112x112 crops"),
    "synth": ("training.data.synthetic", "draw synthetic identities for tests and demos"),
    "clean": ("training.data.clean", "drop images far from their identity's centre under a model"),
    "train": ("training.train", "train a backbone with a margin head (a TOML config per experiment)"),
    "eval": ("training.evaluate", "verification and open-set identification reports with ROC/DET plots"),
    "export": ("training.export", "export a checkpoint to ONNX with a parity check and a manifest"),
    "calibrate": ("training.calibrate", "record a model's impostor distribution in its manifest (open-set thresholds)"),
}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    """The parser, with the full arguments of `command` only (the others are listed by name)."""
    parser = argparse.ArgumentParser(prog="faceid-train", description="Train, evaluate and export face models.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = _import(parser, name, module_name)
            module.add_arguments(sub)
            sub.set_defaults(handler=module.main)
    return parser


def _import(parser: argparse.ArgumentParser, command: str, module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name == "torch":
            parser.error(f"{command} needs PyTorch: pip install 'faceid[train]'")
        if error.name and module_name.startswith(error.name):
            parser.error(f"{command} is not available in this version ({module_name} is missing)")
        raise


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args_list if a in COMMANDS), None)
    parser = build_parser(command)
    args = parser.parse_args(args_list)
    try:
        result = args.handler(args)
    except ConfigError as error:
        parser.exit(2, f"faceid-train {args.command}: {error}\n")
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
