"""Checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint is one `torch.save` file holding plain state dicts, the resolved
config, the position in the run (epoch, step, batches done in the epoch) and the
random states of python, numpy and torch on every rank. It loads with
`weights_only=True`: no pickled code runs when a checkpoint is read.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_PATTERN = re.compile(r"checkpoint_(\d{8})\.pt")


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / f"checkpoint_{step:08d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    found = [p for p in run_dir.glob("checkpoint_*.pt") if CHECKPOINT_PATTERN.fullmatch(p.name)]
    return sorted(found)


def save(state: dict[str, Any], path: Path, keep: int) -> None:
    """Write atomically (a crash never leaves a half-written file), then keep the newest `keep`."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    if keep > 0:
        for old in list_checkpoints(path.parent)[:-keep]:
            old.unlink()


def shard_path(checkpoint: Path, rank: int, world_size: int) -> Path:
    """Where rank `rank` keeps its Partial FC head shard (and its momentum) next to `checkpoint`."""
    return checkpoint.with_name(f"{checkpoint.stem}.head{rank}of{world_size}.pt")


def save_shard(state: dict[str, Any], checkpoint: Path, rank: int, world_size: int, keep: int) -> None:
    """Write this rank's head shard atomically, then keep this rank's newest `keep` shards."""
    path = shard_path(checkpoint, rank, world_size)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    if keep > 0:
        mine = sorted(path.parent.glob(f"checkpoint_*.head{rank}of{world_size}.pt"))
        for old in mine[:-keep]:
            old.unlink()


def load(path: Path) -> dict[str, Any]:
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return state


def rng_state() -> dict[str, Any]:
    """This process's random states; numpy's as plain lists so that `weights_only` loading accepts it."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    assert isinstance(keys, np.ndarray)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's device only: one GPU per rank
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
