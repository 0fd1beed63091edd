"""One experiment as frozen dataclasses, read from a TOML file with strict keys.

A config file has one table per section (`[backbone]`, `[head]`, `[data]`,
`[optim]`, `[schedule]`, `[run]`, `[distill]`) and may start with `extends = "base.toml"`
(relative to itself); its keys then override the base's, key by key. Every key
must name a field: a typo is an error that names the key and suggests the
closest field, never a silently ignored setting. Command-line overrides
(`--set head.margin=0.4`) are typed by the field they set.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal


class ConfigError(ValueError):
    """A config file or override names an unknown key or holds a value of the wrong type."""


@dataclass(frozen=True)
class BackboneConfig:
    name: str = "iresnet50"
    embedding_size: int = 512
    dropout: float = 0.0  # before the embedding FC; insightface uses 0 for IResNet
    zero_init_residual: bool = False  # start each residual branch at zero (last BN gamma = 0)


@dataclass(frozen=True)
class HeadConfig:
    name: str = "arcface"  # softmax | sphereface | cosface | arcface | combined
    scale: float = 64.0
    margin: float = 0.5  # radians for arcface, cosine for cosface, integer multiplier for sphereface
    combined: tuple[float, float, float] = (1.0, 0.5, 0.0)  # (m1, m2, m3) of cos(m1*theta + m2) - m3
    easy_margin: bool = False  # arcface: keep cos(theta) when theta > pi/2 instead of the fallback
    # SphereFace blend weight lambda = max(lambda_min, lambda_base * (1 + lambda_gamma * it) ** -lambda_power)
    lambda_base: float = 1000.0
    lambda_gamma: float = 0.12
    lambda_power: float = 1.0
    lambda_min: float = 5.0
    iam_beta: float = 0.0  # weight of the inter-class angular margin term; 0 turns it off
    # "centres": the published form, between class centres, a pair's pull independent of C;
    # "samples": sample-to-other-centre cosines averaged over the C - 1 others (own_cpu's model v1).
    iam_anchor: Literal["samples", "centres"] = "centres"
    # Partial FC (training/partial_fc.py): the class centres sharded across the ranks, and the
    # fraction of each shard sampled per step (every class of the batch is always kept).
    partial_fc: bool = False
    sample_rate: float = 1.0


@dataclass(frozen=True)
class DataConfig:
    kind: Literal["folder", "recordio", "synthetic"] = "folder"
    root: Path = Path("data")
    num_workers: int = 2
    batch_size: int = 128  # per process (per GPU)
    val_pairs: Path | None = None  # an InsightFace verification .bin, or an aligned folder to draw pairs from
    val_num_pairs: int = 3000  # at most this many pairs drawn from a val_pairs folder; a .bin is used whole
    flip: bool = True
    synthetic_identities: int = 100  # kind = "synthetic" only
    synthetic_images_per_identity: int = 20
    synthetic_seed: int = 0


@dataclass(frozen=True)
class OptimConfig:
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.1
    # `lr` is the rate at a global batch of `lr_batch` images and scales linearly with the
    # real global batch; 0 uses `lr` as it is.
    lr_batch: int = 0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad_norm: float = 5.0  # of the backbone's gradient (not the head's, as insightface); 0 turns it off


@dataclass(frozen=True)
class ScheduleConfig:
    epochs: int = 20
    warmup_epochs: float = 0.0
    kind: Literal["step", "cosine", "poly"] = "poly"
    milestones: tuple[float, ...] = (10.0, 16.0, 18.0)  # epochs, for "step"
    gamma: float = 0.1  # "step": factor at each milestone
    power: float = 2.0  # "poly"
    min_lr_ratio: float = 0.0  # "cosine" and "poly" end at lr * min_lr_ratio


@dataclass(frozen=True)
class RunConfig:
    name: str = "run"
    out_dir: Path = Path("runs")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True  # mixed precision; used on CUDA only
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    log_every: int = 50  # steps between JSON-lines records
    checkpoint_every: int = 0  # steps; 0 = at the end of each epoch only
    keep_checkpoints: int = 2
    verify_every: int = 0  # steps; 0 = at the end of each epoch
    max_steps: int = 0  # stop early after this many steps (the schedule is unchanged); 0 = no limit
    # After the schedule's last step, recompute the batch-norm statistics over this many
    # training batches with the final weights (PreciseBN); 0 = keep the running averages.
    # Short runs need it: the running averages trail weights that are still moving fast.
    precise_bn_batches: int = 0
    progress: bool = True


@dataclass(frozen=True)
class DistillConfig:
    """Embedding distillation towards a teacher ONNX model (see training/distill.py); off at weight 0."""

    teacher: str = "builtin:sface"  # builtin:<name> or a manifest path the service can load
    weight: float = 0.0  # times the mean (1 - cosine) added to the head's loss


@dataclass(frozen=True)
class ExperimentConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: RunConfig = field(default_factory=RunConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain TOML-compatible values (paths as strings, tuples as lists, None left out)."""
        return {
            section.name: {
                f.name: _plain(getattr(getattr(self, section.name), f.name))
                for f in fields(getattr(self, section.name))
                if getattr(getattr(self, section.name), f.name) is not None
            }
            for section in fields(self)
        }


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in fields(ExperimentConfig)}  # type: ignore[misc]


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Read `path` (following `extends`), then apply `section.key=value` overrides."""
    values = _read_toml(Path(path), seen=())
    for override in overrides:
        section, key, raw = _split_override(override)
        values.setdefault(section, {})[key] = _OverrideValue(raw)
    return config_from_dict(values, source=str(path))


def config_from_dict(values: Mapping[str, Any], source: str = "config") -> ExperimentConfig:
    """Build a config from nested plain values (as `ExperimentConfig.to_dict` writes them)."""
    unknown = set(values) - set(SECTIONS)
    if unknown:
        raise ConfigError(_unknown_message(source, "section", sorted(unknown)[0], SECTIONS))
    built = {}
    for name, cls in SECTIONS.items():
        section = values.get(name, {})
        if not isinstance(section, Mapping):
            raise ConfigError(f"{source}: [{name}] must be a table, got {section!r}")
        built[name] = _build_section(cls, name, section, source)
    return ExperimentConfig(**built)


def to_toml(cfg: ExperimentConfig) -> str:
    """The resolved config as TOML text that `load_config` reads back to an equal config."""
    lines: list[str] = []
    for section, values in cfg.to_dict().items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


class _OverrideValue(str):
    """A command-line value: typed by the field it sets rather than by TOML syntax."""


def _read_toml(path: Path, seen: tuple[Path, ...]) -> dict[str, dict[str, Any]]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: `extends` forms a cycle through {', '.join(map(str, seen))}")
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None
    base: dict[str, dict[str, Any]] = {}
    parent = data.pop("extends", None)
    if parent is not None:
        if not isinstance(parent, str):
            raise ConfigError(f"{path}: `extends` must be a file name, got {parent!r}")
        base = _read_toml(path.parent / parent, seen=(*seen, path))
    for section, values in data.items():
        if section not in SECTIONS:
            raise ConfigError(_unknown_message(str(path), "section", section, SECTIONS))
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: `{section}` must be a table ([{section}]), got {values!r}")
        base.setdefault(section, {}).update(values)
    return base


def _split_override(override: str) -> tuple[str, str, str]:
    name, sep, raw = override.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not key:
        raise ConfigError(f"override {override!r} must look like section.key=value")
    if section not in SECTIONS:
        raise ConfigError(_unknown_message("--set", "section", section, SECTIONS))
    return section, key, raw.strip()


def _build_section(cls: type, section: str, values: Mapping[str, Any], source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(_unknown_message(source, "key", f"{section}.{key}", {f"{section}.{n}" for n in names}))
        kwargs[key] = _coerce(value, hints[key], f"{source}: {section}.{key}")
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """`value` as type `tp`, or a ConfigError; a command-line string is parsed for `tp`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        if isinstance(value, _OverrideValue) and value.lower() in ("none", ""):
            return None
        if value is None:
            return None
        (inner,) = (a for a in args if a is not type(None))
        return _coerce(value, inner, where)
    if origin is Literal:
        text = _parse_override(value, str) if isinstance(value, _OverrideValue) else value
        if text not in args:
            raise ConfigError(f"{where} must be one of {', '.join(map(repr, args))}, got {text!r}")
        return text
    if origin is tuple:
        items = _parse_override(value, list) if isinstance(value, _OverrideValue) else value
        if not isinstance(items, list | tuple):
            raise ConfigError(f"{where} must be a list, got {items!r}")
        item_types = [args[0]] * len(items) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(item_types) != len(items):
            raise ConfigError(f"{where} must have {len(item_types)} items, got {len(items)}")
        return tuple(_coerce(v, t, f"{where}[{i}]") for i, (v, t) in enumerate(zip(items, item_types, strict=True)))
    if isinstance(value, _OverrideValue):
        value = _parse_override(value, tp)
    if tp is Path and isinstance(value, str):
        return Path(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (bool, int, float, str) and type(value) is tp:
        return value
    raise ConfigError(f"{where} must be {getattr(tp, '__name__', tp)}, got {value!r}")


def _parse_override(raw: str, tp: Any) -> Any:
    if tp in (str, Path) and not raw.startswith(('"', "'")):
        return str(raw)
    if tp is list and not raw.startswith("["):
        return [_OverrideValue(part.strip()) for part in raw.split(",")]
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return str(raw)


def _unknown_message(source: str, what: str, name: str, choices: Iterable[str]) -> str:
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{source}: unknown {what} {name!r}{hint} (known: {', '.join(choices)})"


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, int | float):
        return repr(value)
    raise TypeError(f"cannot write {value!r} as TOML")


def replace(cfg: ExperimentConfig, **sections: Mapping[str, Any]) -> ExperimentConfig:
    """A copy of `cfg` with some fields of some sections changed (for tests and callers in code)."""
    changed = {name: dataclasses.replace(getattr(cfg, name), **values) for name, values in sections.items()}
    return dataclasses.replace(cfg, **changed)
