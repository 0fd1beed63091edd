"""ROC and DET plots as PNG files (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Curve = tuple[NDArray[np.float64], NDArray[np.float64]]


def _figure() -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    # A bare Figure (no pyplot) draws with Agg and keeps no global state between plots.
    fig = Figure(figsize=(6, 5), dpi=100)
    return fig, fig.subplots()


def _save(fig: Figure, ax: Axes, path: Path, title: str) -> Path:
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return save_figure(fig, path)


def save_figure(fig: Figure, path: Path, **savefig: Any) -> Path:
    """Lay the figure out and write it as PNG to `path`, making the folder; the benchmarks use it too."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", **savefig)
    return path


def plot_roc(curves: Mapping[str, Curve], path: Path, title: str = "ROC (verification)") -> Path:
    """TAR against FAR (log scale); `curves` maps a label to (FAR, TAR)."""
    fig, ax = _figure()
    floor = 1.0
    for label, (far, tar) in curves.items():
        keep = far > 0
        if keep.any():
            floor = min(floor, float(far[keep].min()))
            ax.plot(far[keep], tar[keep], label=label)
    ax.set_xscale("log")
    ax.set_xlim(max(floor, 1e-6), 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false accept rate (FAR)")
    ax.set_ylabel("true accept rate (TAR)")
    return _save(fig, ax, path, title)


def plot_det(
    curves: Mapping[str, Curve],
    path: Path,
    *,
    title: str = "DET",
    xlabel: str = "false positive rate",
    ylabel: str = "false negative rate",
) -> Path:
    """Miss rate against false alarm rate, both log scale; `curves` maps a label to (false alarms, misses)."""
    fig, ax = _figure()
    x_floor, y_floor = 1e-3, 1e-3
    for label, (fp, fn) in curves.items():
        keep = (fp > 0) & (fn > 0)
        if keep.any():
            ax.plot(fp[keep], fn[keep], label=label)
            x_floor, y_floor = min(x_floor, float(fp[keep].min())), min(y_floor, float(fn[keep].min()))
        else:
            ax.plot([], [], label=f"{label} (no errors to plot)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    # Explicit limits: a curve without errors leaves nothing positive for autoscaling on log axes.
    ax.set_xlim(x_floor, 1.0)
    ax.set_ylim(y_floor, 1.0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return _save(fig, ax, path, title)


def plot_clean(
    image_cosines: NDArray[np.float32],
    nearest_centres: NDArray[np.float32],
    threshold: float,
    merge_threshold: float | None,
    path: Path,
) -> Path:
    """`faceid-train clean`'s two decisions side by side: each histogram with its threshold drawn on it."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5), dpi=100)
    left, right = fig.subplots(1, 2)
    bins = np.linspace(-0.2, 1.0, 61)
    left.hist(np.clip(image_cosines, -0.2, 1.0), bins=bins, color="tab:blue")
    left.axvline(threshold, color="tab:red", label=f"drop below {threshold:.2f}")
    left.set_xlabel("cosine of an image to its identity's centre")
    left.set_ylabel("images")
    left.set_title(f"intra-class: {int((image_cosines < threshold).sum())} of {len(image_cosines)} images dropped")
    right.hist(np.clip(nearest_centres, -0.2, 1.0), bins=bins, color="tab:green")
    if merge_threshold is not None:
        close = int((nearest_centres > merge_threshold).sum())
        right.axvline(merge_threshold, color="tab:red", label=f"merge/drop above {merge_threshold:.2f}")
        right.set_title(f"inter-class: {close} identities have a centre closer than that")
    else:
        right.set_title("inter-class: no --merge-threshold given")
    right.set_xlabel("cosine of an identity's centre to the nearest other centre")
    right.set_ylabel("identities")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", fontsize="small")
    return save_figure(fig, path)
