from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from service.vision.embed import OnnxEmbedder  # noqa: E402
from service.vision.manifest import load_manifest, sha256_file  # noqa: E402
from service.vision.models import load_embedder_model  # noqa: E402
from training import export  # noqa: E402
from training.config import BackboneConfig, ExperimentConfig, RunConfig  # noqa: E402
from training.data.folder import folder_pairs, load_folder  # noqa: E402
from training.data.prepare import default_detector, prepare  # noqa: E402
from training.data.transforms import crop_to_tensor  # noqa: E402
from training.metrics import threshold_at_rate  # noqa: E402

ORL = Path(__file__).resolve().parents[1] / "fixtures" / "orl"


@pytest.fixture(scope="module")
def orl_aligned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tmp_path_factory.mktemp("raw")
    for i in range(1, 9):
        shutil.copytree(ORL / f"s{i}", raw / f"s{i}")
    out = tmp_path_factory.mktemp("aligned")
    assert prepare(raw, out, default_detector(), progress=False).written == 80
    return out


def test_export_from_a_checkpoint_writes_a_manifest_the_service_loads(
    tmp_path: Path, orl_aligned: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.backbones import get_model

    torch.manual_seed(0)
    cfg = ExperimentConfig(
        backbone=BackboneConfig(name="mobilefacenet", embedding_size=128), run=RunConfig(name="tiny-mfn")
    )
    model = get_model(cfg.backbone)
    # Batch-norm statistics from real crops: embeddings then differ from face to face
    # as a trained model's do (fresh statistics make every face nearly the same vector).
    crops, _, _ = load_folder(orl_aligned)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            module.reset_running_stats()
            module.momentum = None
    with torch.no_grad():
        model.train()(torch.stack([crop_to_tensor(c) for c in crops[::4]]))
    model.eval()
    checkpoint = tmp_path / "checkpoint_00000042.pt"
    torch.save({"config": cfg.to_dict(), "model": model.state_dict()}, checkpoint)

    parser = argparse.ArgumentParser()
    export.add_arguments(parser)
    out = tmp_path / "model"
    argv = [str(checkpoint), "--out", str(out), "--calibrate-folder", str(orl_aligned), "--max-images", "60"]
    assert export.main(parser.parse_args([*argv, "--far", "1e-3"])) == 0

    manifest = load_manifest(out / "manifest.json")
    assert (manifest.name, manifest.version, manifest.embedding_size) == ("tiny-mfn", "checkpoint_00000042", 128)
    assert manifest.sha256 == sha256_file(out / "model.onnx")
    assert manifest.preprocess.mean == (127.5, 127.5, 127.5)
    assert manifest.preprocess.std == (127.5, 127.5, 127.5)
    assert manifest.preprocess.color == "RGB"
    assert manifest.extra["parity"]["min_cosine_real"] >= 0.9999
    assert manifest.extra["parity"]["min_cosine_random"] >= 0.9999
    assert manifest.extra["opset"] >= 17
    assert manifest.threshold.far == 1e-3
    assert manifest.extra["calibration"]["measured_far"] <= 1e-3
    calibration = manifest.extra["calibration"]
    assert calibration["genuine_pairs"] + calibration["impostor_pairs"] == 60 * 59 // 2  # every pair of 60 images
    assert calibration["impostor_pairs"] > 1000  # enough to resolve FAR 1e-3
    # ... and to record the impostor distribution for the service's gallery-aware threshold.
    assert manifest.impostors is not None
    assert manifest.impostors.measured_on.endswith(f": {calibration['impostor_pairs']} impostor pairs")
    assert manifest.impostors.gallery_size == 8 - 1  # non-mated searches against the other 7 people
    assert manifest.impostors.top1 and manifest.impostors.quantiles
    assert "all pairs of 60 images" in json.loads(capsys.readouterr().out)["impostors"]

    # The threshold is the 1e-3 impostor quantile over all those pairs, embedded by the served model.
    served, data = load_embedder_model(str(out))
    embedder = OnnxEmbedder(served, data, providers=("CPUExecutionProvider",))
    chosen = export.load_calibration(None, orl_aligned, max_images=60, seed=0)
    assert chosen is not None
    scores, issame = chosen.scores(embedder.embed(chosen.images))
    found = threshold_at_rate(scores[~issame], 1e-3)
    assert found is not None
    assert manifest.threshold.cosine == pytest.approx(found[0], abs=1e-6)
    assert "batch" in str(embedder.session.get_inputs()[0].shape[0])

    # `eval` of the checkpoint (PyTorch) and of the exported model (ONNX) agree on the same pairs.
    from training import evaluate
    from training.data.images import encode_rgb
    from training.data.verification_bin import write_bin

    pairs = folder_pairs(orl_aligned, 12, seed=0)
    write_bin(tmp_path / "few.bin", [encode_rgb(c, ".png") for c in pairs.images], pairs.issame.tolist())
    reports: list[dict[str, float]] = []
    for model_args in (["--checkpoint", str(checkpoint)], ["--manifest", str(out)]):
        eval_parser = argparse.ArgumentParser()
        evaluate.add_arguments(eval_parser)
        report_dir = tmp_path / f"eval{len(reports)}"
        eval_args = [*model_args, "--bin", str(tmp_path / "few.bin"), "--out", str(report_dir), "--no-progress"]
        assert evaluate.main(eval_parser.parse_args(eval_args)) == 0
        reports.append(json.loads((report_dir / "report.json").read_text())["datasets"]["few"]["verification"])
    assert reports[0]["auc"] == pytest.approx(reports[1]["auc"])
    assert reports[0]["genuine_mean"] == pytest.approx(reports[1]["genuine_mean"], abs=1e-4)


def test_parity_check_catches_a_model_that_differs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=4), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 28 * 28, 16)
    ).eval()
    path = tmp_path / "tiny.onnx"
    export.export_onnx(model, path)
    crops = [np.random.default_rng(i).integers(0, 256, (112, 112, 3), dtype=np.uint8) for i in range(3)]
    report = export.check_parity(model, path, crops)
    assert report.min_cosine_real >= 0.9999
    with torch.no_grad():
        model[3].weight.add_(0.05 * torch.randn_like(model[3].weight))
    with pytest.raises(export.ExportError, match="differs from PyTorch"):
        export.check_parity(model, path, crops)


def test_calibration_refuses_an_unmeasurable_far() -> None:
    scores = np.linspace(0, 1, 40)
    issame = np.arange(40) % 2 == 0
    with pytest.raises(export.ExportError, match="cannot be measured"):
        export.calibrate(scores, issame, 1e-3, "tiny")
    found = export.calibrate(scores, issame, 0.1, "tiny")
    assert found.measured_far <= 0.1
    assert json.dumps(found.to_threshold().__dict__)


def test_impostor_record_needs_enough_impostor_pairs() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 5)  # 50 images: 100 genuine + 1125 impostor pairs
    emb = rng.standard_normal((50, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    chosen = export.CalibrationSet([], source="random", labels=labels)
    scores, issame = chosen.scores(emb)
    record = export.impostor_record(scores, issame, embeddings=emb, labels=labels, source="random")
    assert record is not None and record.gallery_size == 9
    assert record.quantiles["5e-01"] == pytest.approx(np.quantile(scores[~issame], 0.5), abs=1e-5)
    # The best non-mated score of each of the 40 probes, against the first image of the 9 other people.
    first = emb[::5]
    top1 = [max(float(emb[i] @ first[j]) for j in range(10) if j != i // 5) for i in range(50) if i % 5]
    assert record.top1["5e-01"] == pytest.approx(np.quantile(top1, 0.5), abs=1e-5)
    few = labels[:30]  # 30 images: fewer than 1000 impostor pairs
    scores, issame = export.CalibrationSet([], source="random", labels=few).scores(emb[:30])
    assert export.impostor_record(scores, issame, embeddings=emb[:30], labels=few) is None
