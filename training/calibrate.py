"""`faceid-train calibrate`: record a model's impostor distribution in its manifest.

The service turns a target false-positive identification rate into a threshold
for the current gallery size (`service.threshold.GalleryAwareThreshold`); for that
it needs how the model scores *different* people. This measures it on people kept
out of training and tuning:

- synthetic people from the DCGAN (a seed of their own, one photo each), and
- real people: a folder with one sub-folder of photos per person,

through the service's own decode, detect, align and embed code, and writes the
impostor quantiles, a fitted generalised Pareto tail, exceedance counts (of the fitted
pairs and of the real-against-real pairs, which measure the synthetic-to-real gap), the
top-1 scores of non-mated searches and the people it used into the manifest's
`impostors` field. With `--pair-far` it also recalibrates the 1:1 threshold: the lowest
cosine whose upper confidence bound on the false-accept rate is at most that rate.

Held-out discipline: whoever evaluates the threshold must not be among `--people`
(`tests/service/test_held_out.py` checks the built-in manifests against the
benchmarks' and tests' strangers).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from service.threshold import fit_impostor_tail, one_to_one_threshold
from service.vision.align import align_face
from service.vision.decode import decode_image
from service.vision.detect import Detector, largest_face
from service.vision.embed import OnnxEmbedder
from service.vision.manifest import ImpostorTail, ModelManifest, Threshold
from service.vision.models import load_embedder_model

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".pgm", ".ppm"}


def real_embeddings(
    embedder: OnnxEmbedder, detector: Detector, root: Path, people: list[str] | None = None
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """(embeddings, person index) of every photo with a face under root/<person>/."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and (people is None or p.name in people))
    crops, owners = [], []
    for index, folder in enumerate(tqdm(folders, desc="real people", unit="person")):
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            image = decode_image(path.read_bytes())
            face = largest_face(detector.detect(image))
            if face is not None:
                crops.append(align_face(image, face.landmarks, embedder.manifest.preprocess.size))
                owners.append(index)
    return embedder.embed(crops), np.array(owners, dtype=np.int64)


def synthetic_embeddings(
    embedder: OnnxEmbedder, detector: Detector, count: int, seed: int, generator: Path | None
) -> NDArray[np.float32]:
    """One photo each of `count` synthetic people (distinct latents)."""
    from training.data.synthetic import SynthOptions, draw_identity, load_generator

    gen = load_generator(generator)
    options = SynthOptions(identities=count, images_per_identity=1, seed=seed)
    crops = []
    for index in tqdm(range(count), desc="synthetic people", unit="person"):
        drawn = draw_identity(gen, detector, index, options)
        if drawn:
            crop = drawn[0]
            if crop.shape[:2] != embedder.manifest.preprocess.size[::-1]:
                raise ValueError("synthetic crops are 112x112; this model wants another size")
            crops.append(crop)
    out = [embedder.embed(crops[i : i + 64]) for i in range(0, len(crops), 64)]
    return np.concatenate(out) if out else np.zeros((0, embedder.manifest.embedding_size), np.float32)


def impostor_record(
    synthetic: NDArray[np.float32],
    real: NDArray[np.float32],
    owners: NDArray[np.int64],
    measured_on: str,
    *,
    synthetic_pairs: bool = False,
    people: list[str] | None = None,
) -> ImpostorTail:
    """Different-person comparisons, and the best score of each real photo against the synthetic people.

    The fitted shape rests on real-vs-synthetic pairs (many, so the rare end is reached);
    real-vs-real pairs are kept as counts beside it: they measure how much more often a
    real impostor passes a bar than a synthetic one does (the service's bound multiplies
    the fitted tail by that gap). Without synthetic people the real pairs are fitted.
    Synthetic-vs-synthetic pairs are left out by default: DCGAN faces resemble each
    other far more than real people do (their impostor cosine runs ~0.1 higher), which
    would make every threshold too strict.
    """
    scores = []
    if synthetic_pairs and len(synthetic) > 1:
        s = synthetic @ synthetic.T
        scores.append(s[np.triu_indices(len(synthetic), 1)])
    if len(real) and len(synthetic):
        scores.append((real @ synthetic.T).ravel())
    real_pairs = np.zeros(0)
    if len(real) > 1:
        upper = np.triu_indices(len(real), 1)
        different = (owners[:, None] != owners[None, :])[upper]
        real_pairs = (real @ real.T)[upper][different]
    if not scores:
        scores.append(real_pairs)
    if not sum(len(s) for s in scores):
        raise ValueError("no impostor pairs: give --real people and/or --synthetic people")
    pairs = np.concatenate(scores)
    top1 = (real @ synthetic.T).max(axis=1) if len(real) and len(synthetic) else None
    return fit_impostor_tail(
        pairs,
        top1=top1,
        gallery_size=len(synthetic),
        measured_on=measured_on,
        real_scores=real_pairs if len(synthetic) else None,
        people=people,
    )


def recalibrated_pair_threshold(record: ImpostorTail, far: float, people: list[str]) -> Threshold:
    """The 1:1 threshold whose upper-bound false-accept rate is at most `far`, rounded up to 0.005."""
    cosine = round(math.ceil(one_to_one_threshold(record, far) * 200 - 1e-9) / 200, 3)
    return Threshold(
        cosine=cosine,
        far=far,
        calibrated_on=(
            f"95% upper bound of the 1:1 false-accept rate <= {far:g} at {cosine:.3f}, "
            f"on {record.measured_on} (service.threshold.one_to_one_threshold)"
        ),
        people=list(people),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="the model: builtin:sface or a manifest.json")
    parser.add_argument("--out", type=Path, help="write the updated manifest here (default: in place)")
    parser.add_argument("--synthetic", type=int, default=2000, help="synthetic people, one photo each")
    parser.add_argument("--seed", type=int, default=1001, help="keep it apart from training and benchmark seeds")
    parser.add_argument("--generator", type=Path, default=None, help="DCGAN weights (see `synth --help`)")
    parser.add_argument("--real", type=Path, default=None, help="folder with one sub-folder of photos per person")
    parser.add_argument("--people", nargs="*", default=None, help="only these sub-folders of --real")
    parser.add_argument(
        "--synthetic-pairs", action="store_true", help="also count synthetic-vs-synthetic pairs (stricter)"
    )
    parser.add_argument("--cache", type=Path, default=None, help="keep the embeddings in this .npz and reuse them")
    parser.add_argument(
        "--detector",
        choices=("cascade", "retinaface", "yunet"),
        default=None,
        help="face detector (default yunet, as the shipped record was made; cascade is the service's default)",
    )
    parser.add_argument(
        "--pair-far", type=float, default=None, help="also recalibrate the 1:1 threshold at this false-accept rate"
    )


def main(args: argparse.Namespace) -> int:
    manifest, model = load_embedder_model(args.manifest)
    embedder = OnnxEmbedder(manifest, model)
    from training.data.prepare import default_detector

    detector = default_detector(args.detector)
    if args.cache is not None and args.cache.exists():
        cached = np.load(args.cache)
        synthetic, real, owners = cached["synthetic"], cached["real"], cached["owners"]
    else:
        synthetic = synthetic_embeddings(embedder, detector, args.synthetic, args.seed, args.generator)
        real, owners = (
            real_embeddings(embedder, detector, args.real, args.people)
            if args.real
            else (np.zeros((0, manifest.embedding_size), np.float32), np.zeros(0, np.int64))
        )
        if args.cache is not None:
            np.savez(args.cache, synthetic=synthetic, real=real, owners=owners)
    folders = sorted(p.name for p in args.real.iterdir() if p.is_dir()) if args.real else []
    chosen = [f for f in folders if args.people is None or f in args.people]
    source = args.real.name if args.real else "real"
    people = [f"{source}:{name}" for name in chosen if len(real)] + ([f"dcgan:{args.seed}"] if len(synthetic) else [])
    where = f"{len(synthetic)} synthetic people (DCGAN seed {args.seed})"
    if len(real):
        where += f" x {len(real)} photos of {len(set(owners.tolist()))} real people ({source} {', '.join(chosen)})"
        where += ", and those real people between themselves"
    record = impostor_record(synthetic, real, owners, where, synthetic_pairs=args.synthetic_pairs, people=people)
    updated: ModelManifest = dataclasses.replace(manifest, impostors=record)
    if args.pair_far is not None:
        updated = dataclasses.replace(updated, threshold=recalibrated_pair_threshold(record, args.pair_far, people))
        print(f"1:1 threshold: {updated.threshold.cosine} ({updated.threshold.calibrated_on})")
    out = args.out or (Path(args.manifest) if not args.manifest.startswith("builtin:") else None)
    if out is None:
        print(json.dumps(updated.to_dict()["impostors"], indent=2))
    else:
        updated.save(Path(out))
        print(f"wrote {out}")
    print(f"pair tail: {record.pair_tail}; top-1 against {record.gallery_size}: {record.top1}")
    return 0
