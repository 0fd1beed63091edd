"""Bulk enrollment throughput: `faceid enroll-folder` on a folder of people, photos per second.

    python -m bench.enroll [--rounds 5] [--repeat 1] [--source orl|photo] [--publish]

Builds a folder with one sub-folder per person (ORL dev s1..s20, 10 photos each,
copied `--repeat` times under new names; or, with `--source photo`, the 640x480
one-face JPEG ten times per person), then runs the real command in a fresh process
against a fresh SQLite database. The wall time includes start-up (models, migrations);
a second run on a single photo measures that start-up, so the report also gives the
steady rate without it. The runs are repeated over `--rounds` rounds, the sources (and the
start-up) interleaved within each, and every rate is the median over rounds with its spread
(min-max); the target counts as met only when the slowest round clears it.
Writes bench/out/enroll.json.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import FACE_640, ORL, OUT, machine, report_written, write_json

TARGET_PHOTOS_PER_S = 8.0


def make_people(root: Path, source: str, repeat: int, people: int = 20, photos: int = 10) -> int:
    """One sub-folder per person under `root`; returns the number of photos written."""
    count = 0
    for r in range(repeat):
        for person in range(1, people + 1):
            folder = root / f"s{person}-copy{r}"
            folder.mkdir(parents=True)
            for n in range(1, photos + 1):
                if source == "orl":
                    shutil.copyfile(ORL / f"s{person}" / f"{n}.pgm", folder / f"{n}.pgm")
                else:
                    shutil.copyfile(FACE_640, folder / f"{n}.jpg")
                count += 1
    return count


def enroll_folder(root: Path, db: Path) -> tuple[float, str]:
    """Run `faceid enroll-folder root` in a fresh process; (wall seconds, its summary line)."""
    env = {
        **os.environ,
        "FACEID_DATABASE_URL": f"sqlite:///{db}",
        "FACEID_PROVIDERS": "CPUExecutionProvider",
        "FACEID_LOG_LEVEL": "warning",
    }
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "service", "enroll-folder", str(root)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"enroll-folder failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    summary = next((line for line in done.stdout.splitlines() if line.startswith("enrolled ")), "")
    return seconds, summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", choices=["orl", "photo"], nargs="+", default=["orl", "photo"])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (>= 5 for a claim)")
    parser.add_argument("--repeat", type=int, default=1, help="copies of the 20 people")
    parser.add_argument("--people", type=int, default=20)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--publish", action="store_true", help="copy the JSON to bench/results/")
    args = parser.parse_args(argv)
    from tqdm import tqdm

    report: dict[str, Any] = {
        "machine": machine(),
        "rounds": args.rounds,
        "target_photos_per_s": TARGET_PHOTOS_PER_S,
        "runs": {},
    }
    startups: list[float] = []
    walls: dict[str, list[float]] = {source: [] for source in args.source}
    with tempfile.TemporaryDirectory(prefix="faceid-enroll-") as tmp:
        one = Path(tmp) / "one"
        make_people(one, "orl", repeat=1, people=1, photos=1)
        roots = {source: Path(tmp) / source for source in args.source}
        photos = {source: make_people(root, source, args.repeat, people=args.people) for source, root in roots.items()}
        summaries: dict[str, str] = {}
        with tqdm(total=args.rounds * (1 + len(roots)), desc="enroll-folder runs", unit="run") as bar:
            for r in range(args.rounds):
                startups.append(enroll_folder(one, Path(tmp) / f"one{r}.db")[0])
                bar.update()
                for source, root in roots.items():
                    seconds, summaries[source] = enroll_folder(root, Path(tmp) / f"{source}{r}.db")
                    walls[source].append(seconds)
                    bar.update()
        for source in args.source:
            found = re.search(r"enrolled (\d+) people from (\d+) photos", summaries[source])
            rates = [photos[source] / s for s in walls[source]]
            steady = [photos[source] / max(1e-9, s - start) for s, start in zip(walls[source], startups, strict=True)]
            report["runs"][source] = {
                "photos": photos[source],
                "accepted": int(found.group(2)) if found else 0,
                "summary": summaries[source],
                "wall_s": round(float(np.median(walls[source])), 2),
                "photos_per_s": round(float(np.median(rates)), 2),
                "photos_per_s_spread": [round(min(rates), 2), round(max(rates), 2)],
                "photos_per_s_without_startup": round(float(np.median(steady)), 2),
                "photos_per_s_without_startup_spread": [round(min(steady), 2), round(max(steady), 2)],
                "target_met": min(rates) > TARGET_PHOTOS_PER_S,
            }
            print(source, report["runs"][source], flush=True)
    report["startup_s"] = round(float(np.median(startups)), 2)
    report["startup_s_spread"] = [round(min(startups), 2), round(max(startups), 2)]
    report["machine"]["load_average_after"] = machine()["load_average_1_5_15"]
    path = write_json(args.out / "enroll.json", report)
    report_written(path, publish_results=args.publish)
    return report


if __name__ == "__main__":
    main()
