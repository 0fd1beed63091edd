"""Which margin wins on validation: one short run per head on the same data, each evaluated the same way.

    python -m bench.margins [--config training/configs/own_cpu_sweep.toml] \\
        [--val data/own/orl-val --val data/own/synth-val] [--variants arcface cosface ...] [--publish]

Each variant is the config plus `--set` overrides (VARIANTS below), trained as run
`margins_<variant>` with `--resume auto` (a finished run is only evaluated again, an
interrupted one continues), then evaluated with `faceid-train eval --checkpoint` on
every validation folder: balanced verification pairs (ROC AUC, 10-fold accuracy,
TAR at FAR 1e-2) and open-set rank-1 on a half/half gallery split. The real-face
validation is ORL s1..s10 (aligned with `faceid-train prepare`); s11..s20 stay out of
everything tuned here, for the final report (`bench.own_model`). Writes margins.json
and margins.png under --out (default bench/out/margins); --publish copies both to
bench/results/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import OUT, machine, report_written, write_json
from training.plots import save_figure

# name -> `--set` overrides of the config. The heads at the scale and margins the
# CPU recipe uses (s = 32 for a few hundred to a few thousand classes).
VARIANTS: dict[str, tuple[str, ...]] = {
    "arcface": (),
    "cosface": ("head.name=cosface", "head.margin=0.3"),
    "combined": ("head.name=combined", "head.combined=[1.0, 0.3, 0.2]"),
    "arcface_iam5": ("head.iam_beta=5.0",),
    "arcface_iam10": ("head.iam_beta=10.0",),
    "cosface_iam5": ("head.name=cosface", "head.margin=0.3", "head.iam_beta=5.0"),
    "arcface_iam5_distill20": ("head.iam_beta=5.0", "distill.weight=20.0"),
    # The published class-centre form (the default since issue 16; the rows above inherit
    # own_cpu.toml's "samples"). Its beta is per pair: 0.016 matches IAM5's size at start here.
    "arcface_iamc002": ("head.iam_anchor=centres", "head.iam_beta=0.02"),
    "arcface_iamc01": ("head.iam_anchor=centres", "head.iam_beta=0.1"),
}
DEFAULT_CONFIG = Path("training/configs/own_cpu_sweep.toml")
DEFAULT_VAL = (Path("data/own/orl-val"), Path("data/own/synth-val"))
RANK_BY = "auc"  # of the first validation folder (the real faces)


def run_variant(config: Path, name: str, overrides: Sequence[str], extra: Sequence[str]) -> tuple[Path, float]:
    """Train (or finish, or skip) `margins_<name>`; returns its run folder and the seconds it took here."""
    from training import cli
    from training.config import load_config

    sets = [f"run.name=margins_{name}", *overrides, *extra]
    cfg = load_config(config, sets)
    start = time.perf_counter()
    argv = ["train", "--config", str(config), "--resume", "auto"]
    for item in sets:
        argv += ["--set", item]
    if cli.main(argv) != 0:
        raise RuntimeError(f"training {name} failed")
    return cfg.run.out_dir / cfg.run.name, time.perf_counter() - start


def training_throughput(run_dir: Path) -> float | None:
    """Median images/s of the run's logged training records (what the run measured when it trained)."""
    rates = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "images_per_s" in record:
            rates.append(float(record["images_per_s"]))
    return round(statistics.median(rates), 1) if rates else None


def evaluate_variant(run_dir: Path, val: Sequence[Path], out: Path) -> dict[str, Any]:
    from training import cli
    from training.checkpoint import list_checkpoints

    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise FileNotFoundError(f"{run_dir} holds no checkpoint")
    argv = ["eval", "--checkpoint", str(checkpoints[-1]), "--out", str(out), "--no-progress"]
    for folder in val:
        argv += ["--folder", str(folder)]
    if cli.main(argv) != 0:
        raise RuntimeError(f"evaluating {run_dir} failed")
    report = json.loads((out / "report.json").read_text())
    result: dict[str, Any] = {"checkpoint": str(checkpoints[-1])}
    for folder in val:
        data = report["datasets"][folder.name]
        ver = data["verification"]
        result[folder.name] = {
            "auc": ver["auc"],
            "accuracy": ver["accuracy"],
            "tar_at_far_1e-2": ver["tar_at_far"]["1e-02"],
            "genuine_mean": ver["genuine_mean"],
            "impostor_mean": ver["impostor_mean"],
            "pairs": ver["pairs"],
            "rank1": data.get("open_set", {}).get("rank1"),
        }
    return result


def plot(results: dict[str, dict[str, Any]], val: Sequence[Path], path: Path) -> Path:
    from bench.common import figure

    names = list(results)
    fig = figure((max(7.0, 1.1 * len(names) + 2), 4.5))
    ax = fig.subplots()
    width = 0.8 / (2 * len(val))
    for j, folder in enumerate(val):
        for k, metric in enumerate(("auc", "tar_at_far_1e-2")):
            offset = (2 * j + k - (2 * len(val) - 1) / 2) * width
            values = [results[n][folder.name][metric] or 0.0 for n in names]
            ax.bar([i + offset for i in range(len(names))], values, width, label=f"{folder.name} {metric}")
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylim(0.0, 1.15)  # room for the legend above the bars
    ax.set_ylabel("validation score")
    ax.set_title("margin heads on validation (higher is better)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper center", ncol=2 * len(val), fontsize="small")
    return save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--val", type=Path, action="append", help="aligned validation folder (repeatable)")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--set", dest="extra", action="append", default=[], help="applied to every variant")
    parser.add_argument("--out", type=Path, default=OUT / "margins")
    parser.add_argument("--publish", action="store_true", help="copy the report and plot to bench/results/")
    args = parser.parse_args(argv)
    val = args.val or list(DEFAULT_VAL)
    for folder in val:
        if not folder.is_dir():
            parser.error(f"validation folder not found: {folder} (make it with faceid-train prepare or synth)")

    results: dict[str, dict[str, Any]] = {}
    for name in args.variants:
        run_dir, seconds = run_variant(args.config, name, VARIANTS[name], args.extra)
        results[name] = {
            "overrides": list(VARIANTS[name]),
            "train_call_s": round(seconds, 1),  # ~0 when the run had already finished
            "train_images_per_s": training_throughput(run_dir),
        }
        results[name] |= evaluate_variant(run_dir, val, args.out / name)
    best = max(results, key=lambda n: results[n][val[0].name][RANK_BY])
    report = {
        "config": str(args.config),
        "extra_overrides": args.extra,
        "validation": [str(v) for v in val],
        "ranked_by": f"{val[0].name} {RANK_BY}",
        "best": best,
        "variants": results,
        "machine": machine(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    paths = [write_json(args.out / "margins.json", report), plot(results, val, args.out / "margins.png")]
    report_written(*paths, publish_results=args.publish)
    for name, res in results.items():
        scores = "  ".join(f"{v.name}: AUC {res[v.name]['auc']:.3f}" for v in val)
        print(f"{name:24s} {scores}{'   <- best' if name == best else ''}")
    return report


if __name__ == "__main__":
    main()
