"""Bulk enrollment throughput: `faceid enroll-folder` on a folder of people, photos per second.

    python -m bench.enroll [--repeat 5] [--source orl|photo] [--publish]

Builds a folder with one sub-folder per person (ORL dev s1..s20, 10 photos each,
copied `--repeat` times under new names; or, with `--source photo`, the 640x480
one-face JPEG ten times per person), then runs the real command in a fresh process
against a fresh SQLite database. The wall time includes start-up (models, migrations);
a second run on a single photo measures that start-up, so the report also gives the
steady rate without it. Writes bench/out/enroll.json.
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
    parser.add_argument("--repeat", type=int, default=5, help="copies of the 20 people")
    parser.add_argument("--people", type=int, default=20)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--publish", action="store_true", help="copy the JSON to bench/results/")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"machine": machine(), "target_photos_per_s": TARGET_PHOTOS_PER_S, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="faceid-enroll-") as tmp:
        one = Path(tmp) / "one"
        make_people(one, "orl", repeat=1, people=1, photos=1)
        startup_s, _ = enroll_folder(one, Path(tmp) / "one.db")
        for source in args.source:
            root = Path(tmp) / source
            photos = make_people(root, source, args.repeat, people=args.people)
            seconds, summary = enroll_folder(root, Path(tmp) / f"{source}.db")
            found = re.search(r"enrolled (\d+) people from (\d+) photos", summary)
            accepted = int(found.group(2)) if found else 0
            report["runs"][source] = {
                "photos": photos,
                "accepted": accepted,
                "summary": summary,
                "wall_s": round(seconds, 2),
                "photos_per_s": round(photos / seconds, 2),
                "photos_per_s_without_startup": round(photos / max(1e-9, seconds - startup_s), 2),
            }
            print(source, report["runs"][source], flush=True)
    report["startup_s"] = round(startup_s, 2)
    report["machine"]["load_average_after"] = machine()["load_average_1_5_15"]
    path = write_json(args.out / "enroll.json", report)
    report_written(path, publish_results=args.publish)
    return report


if __name__ == "__main__":
    main()
