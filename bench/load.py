"""Load generator: N concurrent clients against a running faceid server.

    python -m bench.load --url http://127.0.0.1:8000 --endpoint identify --image photo.jpg --clients 4 --requests 200

Reports throughput, p50/p95/p99 latency, errors, and the server's per-stage time
(from the Server-Timing header). Bounded by --requests and --duration, whichever
comes first. Writes JSON (and a latency histogram PNG with --plot).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import numpy as np


def parse_server_timing(header: str) -> dict[str, float]:
    stages = {}
    for part in header.split(","):
        name, _, rest = part.strip().partition(";")
        if rest.startswith("dur="):
            stages[name] = float(rest.removeprefix("dur="))
    return stages


async def run_load(
    url: str, endpoint: str, image: bytes, clients: int, requests: int, duration: float, warmup: int = 3
) -> dict[str, Any]:
    latencies: list[float] = []
    stages: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    issued = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def once(counter: int) -> httpx.Response:
            if endpoint == "identify":
                return await client.post("/identify", files={"image": ("probe", image, "application/octet-stream")})
            return await client.post(
                "/enroll",
                data={"name": f"load-{counter}"},
                files=[("images", ("probe", image, "application/octet-stream"))],
            )

        for i in range(warmup):
            await once(-1 - i)
        start = time.perf_counter()
        deadline = start + duration

        async def worker() -> None:
            nonlocal issued
            while issued < requests and time.perf_counter() < deadline:
                issued += 1
                t0 = time.perf_counter()
                try:
                    r = await once(issued)
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                if r.status_code >= 400:
                    errors[str(r.status_code)] += 1
                for name, ms in parse_server_timing(r.headers.get("server-timing", "")).items():
                    stages[name].append(ms)

        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {
        "endpoint": endpoint,
        "clients": clients,
        "requests": len(latencies),
        "seconds": round(elapsed, 2),
        "throughput_rps": round(len(latencies) / elapsed, 2) if elapsed else 0.0,
        "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
        "p95_ms": round(float(np.percentile(ms, 95)), 1) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
        "errors": dict(errors),
        "server_stage_median_ms": {k: round(statistics.median(v), 2) for k, v in stages.items()},
        "latencies_ms": [round(float(x), 2) for x in ms],
    }


def plot_histogram(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        ax.hist(r["latencies_ms"], bins=40, alpha=0.6, label=f"{r['endpoint']} {r['clients']} client(s)")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("requests")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--endpoint", choices=["identify", "enroll"], default="identify")
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=Path("bench/out/load.json"))
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args(argv)
    image = args.image.read_bytes()
    results = [
        asyncio.run(run_load(args.url, args.endpoint, image, c, args.requests, args.duration)) for c in args.clients
    ]
    for r in results:
        summary = {k: v for k, v in r.items() if k != "latencies_ms"}
        print(json.dumps(summary))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    if args.plot:
        plot_histogram(results, args.plot)


if __name__ == "__main__":
    main()
