"""Gallery search: latency per query and memory per face, exact against approximate, against numpy.

    python -m bench.gallery [--sizes 10000,100000,1000000] [--dims 128,512] [--rounds 5] [--publish]

The gallery holds synthetic unit vectors shaped like face embeddings: one random
centre per identity and two faces per identity, each the centre plus isotropic noise
(cosine about 0.7 between two faces of one person). Queries are fresh faces of
enrolled identities, one query per call (what `/identify` sends for a one-face photo).

Indexes: plain numpy brute force (the baseline and the exact ground truth), the
service's `FaissGallery` with `flat` (exact), `flat_fp16` and `hnsw`, timed through
`FaissGallery.search` (the service path: top 5 identities, hits grouped by identity)
and through the FAISS index underneath (raw: top 1 face), and a FAISS IVF-Flat index
(not in the service) as a second approximate candidate. Recall@1 is the share of
queries whose best identity is the exact search's best identity.
FAISS and numpy's OpenBLAS run with the same `--threads` (default 1: on a shared 2-core
machine a one-query search that waits on a team of threads stalls whenever another
process holds a core); `service_all_threads` repeats the service path with FAISS's
default of one thread per core. IVF's nprobe is
chosen on tuning queries (other fresh faces of the same people), and the recall and
time reported for it are measured on the scored queries.
Honest timing: every index of a size is built first, then all are timed interleaved over
`--rounds` rounds of `--queries` single-query calls each, so they see the same machine
load; a figure is the median of the per-round medians with their spread (min-max). The
efSearch and nprobe sweeps are one timed pass each (what-ifs, not claims).
Writes bench/out/gallery.json and bench/out/gallery.png.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from bench.common import OUT, blas_threads, figure, machine, report_written, rss_bytes, write_json
from service.gallery import FaissGallery
from training.plots import save_figure

FACES_PER_IDENTITY = 2
SAME_PERSON_COSINE = 0.7
TOP_K = 5
HNSW_EF = (16, 32, 64, 128, 256)
IVF_NPROBE = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TARGET_RECALL = 0.99


def synthetic_gallery(
    n: int, dim: int, queries: int, seed: int = 0
) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float32], NDArray[np.int64]]:
    """(faces (n, dim), identity of each face, queries (q, dim), identity of each query); unit vectors."""
    rng = np.random.default_rng(seed)
    identities = max(1, n // FACES_PER_IDENTITY)
    # Two noisy copies of one centre have cosine 1 / (1 + dim * sigma^2).
    sigma = math.sqrt((1.0 / SAME_PERSON_COSINE - 1.0) / dim)
    faces = np.empty((n, dim), np.float32)
    owner = np.arange(n, dtype=np.int64) % identities
    centres = rng.standard_normal((identities, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        block = centres[owner[start:stop]] + sigma * rng.standard_normal((stop - start, dim), dtype=np.float32)
        faces[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    query_owner = rng.integers(0, identities, queries)
    q = centres[query_owner] + sigma * rng.standard_normal((queries, dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return faces, owner, q.astype(np.float32), query_owner.astype(np.int64)


def numpy_search(faces: NDArray[np.float32], q: NDArray[np.float32]) -> NDArray[np.int64]:
    """Index of the best face per query, chunked so (q, n) scores stay small."""
    best = np.empty(len(q), np.int64)
    step = max(1, 50_000_000 // len(faces))
    for s in range(0, len(q), step):
        best[s : s + step] = np.argmax(q[s : s + step] @ faces.T, axis=1)
    return best


def _numpy_best(faces: NDArray[np.float32], v: NDArray[np.float32]) -> int:
    return int(np.argmax(faces @ v))


def per_query(fn: Any, queries: NDArray[np.float32], limit_s: float = 20.0) -> dict[str, float]:
    """Median / p95 ms over single-query calls (stops early past `limit_s`)."""
    fn(queries[0])
    samples = []
    start = time.perf_counter()
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        samples.append(time.perf_counter() - t0)
        if time.perf_counter() - start > limit_s and len(samples) >= 20:
            break
    ms = np.array(samples) * 1000
    return {
        "median_ms": round(float(np.median(ms)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "n": len(ms),
    }


def index_bytes(index: Any, ntotal: int) -> int:
    """Bytes the FAISS index holds for its vectors (and graph), plus 8 per id in the id map."""
    inner: Any = faiss.downcast_index(index)
    total = ntotal * 8
    if isinstance(inner, faiss.IndexHNSW):
        total += faiss.downcast_index(inner.storage).sa_code_size() * ntotal
        graph: Any = inner.hnsw
        total += graph.neighbors.size() * 4 + graph.offsets.size() * 8 + graph.levels.size() * 4
    elif isinstance(inner, faiss.IndexIVF):
        total += inner.code_size * ntotal + ntotal * 8 + inner.quantizer.ntotal * inner.d * 4
    else:
        total += inner.sa_code_size() * ntotal
    return int(total)


Timer = Callable[[NDArray[np.float32]], object]


def bench_service_index(
    kind: str,
    faces: NDArray[np.float32],
    owner: NDArray[np.int64],
    q: NDArray[np.float32],
    exact_identity: NDArray[np.int64],
) -> tuple[dict[str, Any], dict[str, Timer]]:
    """Build the service's gallery of `kind`; (what does not vary by round, the calls to time by round)."""
    gc.collect()
    before = rss_bytes()
    t0 = time.perf_counter()
    gallery = FaissGallery(faces.shape[1], kind=kind, device="cpu")  # type: ignore[arg-type]
    for s in range(0, len(faces), 100_000):
        ids = np.arange(s, min(len(faces), s + 100_000), dtype=np.int64)
        gallery.add(ids, owner[ids], faces[ids])
    build_s = time.perf_counter() - t0
    grown = rss_bytes() - before
    index = gallery._index  # the raw FAISS index under the service wrapper
    out: dict[str, Any] = {
        "build_s": round(build_s, 2),
        "rss_bytes_per_face": round(grown / len(faces), 1),
        "index_bytes_per_face": round(index_bytes(index.index, index.ntotal) / len(faces), 1),
    }
    found = np.array([r[0].identity_id if r else -1 for r in gallery.search(q, TOP_K)])
    out["recall_at_1"] = round(float(np.mean(found == exact_identity)), 4)
    if kind == "hnsw":
        hnsw: Any = getattr(faiss.downcast_index(index.index), "hnsw")  # noqa: B009 (SWIG, untyped)
        out["ef_sweep"] = recall_sweep(
            "ef_search", HNSW_EF, lambda ef: setattr(hnsw, "efSearch", ef), index, q, owner, exact_identity
        )
        hnsw.efSearch = gallery.hnsw_ef_search
        out["service_ef_search"] = gallery.hnsw_ef_search

    def all_threads(v: NDArray[np.float32]) -> object:
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(os.cpu_count() or 1)  # FAISS's default: an OpenMP team over every core
        try:
            return gallery.search(v[None], TOP_K)
        finally:
            faiss.omp_set_num_threads(threads)

    timers: dict[str, Timer] = {
        "service": lambda v: gallery.search(v[None], TOP_K),
        "raw": lambda v: index.search(v[None], 1),
        "service_all_threads": all_threads,
    }
    return out, timers


def over_rounds(rounds: list[dict[str, float]]) -> dict[str, Any]:
    medians = [r["median_ms"] for r in rounds]
    return {
        "median_ms": round(float(np.median(medians)), 3),
        "spread_ms": [round(min(medians), 3), round(max(medians), 3)],
        "p95_ms": round(float(np.median([r["p95_ms"] for r in rounds])), 3),
        "n": int(sum(r["n"] for r in rounds)),
        "per_round_ms": [round(m, 3) for m in medians],
    }


def recall_sweep(
    name: str,
    values: Sequence[int],
    apply: Callable[[int], object],
    index: Any,
    q: NDArray[np.float32],
    owner: NDArray[np.int64],
    exact_identity: NDArray[np.int64],
    *,
    timed: bool = True,
) -> list[dict[str, Any]]:
    """Per value of a search knob (efSearch, nprobe): the raw index's time per query and its recall@1."""
    sweep = []
    for value in values:
        apply(value)
        _, hit = index.search(q, 1)
        row: dict[str, Any] = {name: value}
        if timed:
            row["raw"] = per_query(lambda v: index.search(v[None], 1), q, limit_s=5.0)
        row["recall_at_1"] = round(float(np.mean(owner[hit[:, 0]] == exact_identity)), 4)
        sweep.append(row)
    return sweep


def bench_ivf(
    faces: NDArray[np.float32],
    owner: NDArray[np.int64],
    q: NDArray[np.float32],
    exact_identity: NDArray[np.int64],
    tuning: NDArray[np.float32],
    tuning_identity: NDArray[np.int64],
) -> tuple[dict[str, Any], dict[str, Timer]]:
    n, dim = faces.shape
    nlist = max(1, min(n // 39, int(4 * math.sqrt(n))))
    t0 = time.perf_counter()
    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    sample = faces[np.random.default_rng(1).choice(n, min(n, 64 * nlist), replace=False)]
    ivf.train(sample)
    ivf.add(faces)
    build_s = time.perf_counter() - t0
    nprobes = [p for p in IVF_NPROBE if p <= nlist]
    # The knob is chosen on the tuning queries; the chosen setting is scored on the others.
    tuning_sweep = recall_sweep(
        "nprobe", nprobes, lambda p: setattr(ivf, "nprobe", p), ivf, tuning, owner, tuning_identity, timed=False
    )
    picked = next((s for s in tuning_sweep if s["recall_at_1"] >= TARGET_RECALL), tuning_sweep[-1])
    sweep = recall_sweep("nprobe", nprobes, lambda p: setattr(ivf, "nprobe", p), ivf, q, owner, exact_identity)
    chosen = next(s for s in sweep if s["nprobe"] == picked["nprobe"])
    ivf.nprobe = picked["nprobe"]
    return {
        "nlist": nlist,
        "build_s": round(build_s, 2),
        "index_bytes_per_face": round(index_bytes(ivf, n) / n, 1),
        "tuning_sweep": tuning_sweep,
        "nprobe_sweep": sweep,
        "chosen": chosen | {"chosen_on": "tuning queries", "tuning_recall_at_1": picked["recall_at_1"]},
    }, {"raw": lambda v: ivf.search(v[None], 1)}


def plot(report: dict[str, Any], path: Path) -> Path:
    fig = figure((10.0, 4.5))
    dims = sorted({int(k) for k in report["results"]})
    axes = fig.subplots(1, len(dims), squeeze=False)[0]
    series = {
        "numpy brute force": lambda r: r["numpy"]["median_ms"],
        "flat (service path)": lambda r: r["flat"]["service"]["median_ms"],
        "flat_fp16 (service path)": lambda r: r["flat_fp16"]["service"]["median_ms"],
        "hnsw (service path)": lambda r: r["hnsw"]["service"]["median_ms"],
        "ivf (raw, recall>=0.99)": lambda r: r["ivf"]["chosen"]["raw"]["median_ms"],
    }
    for ax, dim in zip(axes, dims, strict=True):
        per_size = report["results"][str(dim)]
        sizes = sorted(int(s) for s in per_size)
        for label, get in series.items():
            xs, ys = [], []
            for s in sizes:
                try:
                    ys.append(get(per_size[str(s)]))
                    xs.append(s)
                except (KeyError, TypeError):
                    continue
            if xs:
                ax.plot(xs, ys, marker="o", label=label)
        ax.axhline(60, color="grey", linestyle="--", linewidth=0.8)
        ax.axhline(5, color="grey", linestyle=":", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("faces in the gallery")
        ax.set_ylabel("ms per query (median)")
        ax.set_title(f"{dim}-d; dashed 60 ms, dotted 5 ms target")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize="small")
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated gallery sizes")
    parser.add_argument("--dims", default="128,512")
    parser.add_argument("--queries", type=int, default=100, help="scored queries, timed once per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (>= 5 for a claim)")
    parser.add_argument(
        "--kinds", default="numpy,flat,flat_fp16,hnsw,ivf", help="which of numpy,flat,flat_fp16,hnsw,ivf to run"
    )
    parser.add_argument(
        "--hnsw-max", type=int, default=1_000_000, help="skip HNSW above this size (its build is slow on few cores)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="threads for FAISS (OpenMP) and numpy (OpenBLAS) alike (0: defaults)"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--publish", action="store_true", help="copy the JSON and PNG to bench/results/")
    args = parser.parse_args(argv)
    if args.threads > 0:
        faiss.omp_set_num_threads(args.threads)
        blas_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    dims = [int(d) for d in args.dims.split(",")]
    kinds = set(args.kinds.split(","))
    report: dict[str, Any] = {
        "machine": machine(),
        "faiss": faiss.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        "numpy_blas_threads": blas_threads(),
        "queries": args.queries,
        "rounds": args.rounds,
        "method": "indexes built first, then timed interleaved round by round; medians of per-round medians",
        "top_k": TOP_K,
        "data": f"{FACES_PER_IDENTITY} faces per identity, same-person cosine ~{SAME_PERSON_COSINE}",
        "results": {},
    }
    json_path = args.out / "gallery.json"
    for dim in dims:
        for n in sizes:
            faces, owner, both, _ = synthetic_gallery(n, dim, 2 * args.queries)
            q, tuning = both[: args.queries], both[args.queries :]  # scored queries, tuning queries
            exact_identity = owner[numpy_search(faces, q)]
            tuning_identity = owner[numpy_search(faces, tuning)]
            row: dict[str, Any] = {"raw_vector_bytes_per_face": dim * 4}
            timers: dict[tuple[str, str], Timer] = {}
            if "numpy" in kinds:
                row["numpy"] = {}
                timers["numpy", ""] = partial(_numpy_best, faces)
            for kind in ("flat", "flat_fp16", "hnsw"):
                if kind not in kinds:
                    continue
                if kind == "hnsw" and n > args.hnsw_max:
                    row[kind] = {"skipped": f"n > --hnsw-max {args.hnsw_max}"}
                    continue
                row[kind], calls = bench_service_index(kind, faces, owner, q, exact_identity)
                timers.update({(kind, name): fn for name, fn in calls.items()})
            if "ivf" in kinds:
                row["ivf"], calls = bench_ivf(faces, owner, q, exact_identity, tuning, tuning_identity)
                timers["ivf", "chosen"] = calls["raw"]
            rounds: dict[tuple[str, str], list[dict[str, float]]] = {key: [] for key in timers}
            for _ in tqdm(range(args.rounds), desc=f"{dim}-d x {n:,} rounds", unit="round"):
                for key, fn in timers.items():
                    rounds[key].append(per_query(fn, q))
            for (kind, name), got in rounds.items():
                timed = over_rounds(got)
                if not name:
                    row[kind] = timed
                elif kind == "ivf":
                    row["ivf"]["chosen"]["raw"] = timed
                else:
                    row[kind][name] = timed
            report["results"].setdefault(str(dim), {})[str(n)] = row
            print(dim, n, {k: v.get("service", v.get("chosen", v)) for k, v in row.items() if isinstance(v, dict)})
            write_json(json_path, report)  # partial results survive an interrupted run
            del faces, owner, q
            gc.collect()
    report["machine"]["load_average_after"] = machine()["load_average_1_5_15"]
    write_json(json_path, report)
    png_path = plot(report, args.out / "gallery.png")
    report_written(json_path, png_path, publish_results=args.publish)
    return report


if __name__ == "__main__":
    main()
