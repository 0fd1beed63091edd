from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training.data import synthetic  # noqa: E402
from training.data.folder import FolderDataset, load_folder  # noqa: E402

# Development copy of gan-face-generate 1.1.1's weights.tar (the product never reads shared/).
GENERATOR = Path(__file__).resolve().parents[3] / "shared" / "assets" / "synthetic" / "dcgan_digiface_64px.tar"
needs_generator = pytest.mark.skipif(not GENERATOR.is_file(), reason=f"no DCGAN weights at {GENERATOR}")


def _run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    synthetic.add_arguments(parser)
    assert synthetic.main(parser.parse_args([*argv, "--generator", str(GENERATOR), "--no-progress"])) == 0


@needs_generator
def test_synth_writes_resumable_deterministic_identities(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synth"
    _run(["--out", str(out), "--identities", "4", "--images", "4"])
    first = json.loads(capsys.readouterr().out)
    assert first["written"] + len(first["dropped"]) == 4
    assert first["written"] >= 3
    dataset = FolderDataset(out)
    assert dataset.num_classes == first["written"]
    assert len(dataset) == first["images"]
    # A person whose draws rarely show a detectable face keeps what was found (at least 2).
    assert 2 * first["written"] <= first["images"] <= 4 * first["written"]
    assert first["images"] >= 12
    assert dataset[0][0].shape == (3, 112, 112)

    # Resume: complete people are kept; a deleted one is drawn again, identically.
    victim = sorted(p for p in out.iterdir() if p.is_dir())[0]
    before = {p.name: p.read_bytes() for p in victim.iterdir()}
    for p in victim.iterdir():
        p.unlink()
    victim.rmdir()
    _run(["--out", str(out), "--identities", "4", "--images", "4"])
    again = json.loads(capsys.readouterr().out)
    assert (again["written"], again["skipped_complete"]) == (1, 3)
    assert {p.name: p.read_bytes() for p in victim.iterdir()} == before

    with pytest.raises(ValueError, match="other settings"):
        _run(["--out", str(out), "--identities", "4", "--images", "5"])

    # Two processes write the very same folder: a person's images depend only on (seed, index).
    parallel = tmp_path / "parallel"
    _run(["--out", str(parallel), "--identities", "4", "--images", "4", "--workers", "2"])
    assert json.loads(capsys.readouterr().out)["written"] == first["written"]

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*.png")}

    assert files(parallel) == files(out)

    # Nearby latents are one person: a real recogniser agrees after detection and alignment.
    from training.embedders import load_onnx_embedder

    crops, labels, _ = load_folder(out)
    emb = load_onnx_embedder("builtin:sface").embed(crops)
    sims = emb @ emb.T
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    assert sims[same & off_diagonal].mean() > sims[~same].mean() + 0.2


def test_generator_has_the_dcgan_tutorial_layout() -> None:
    generator = synthetic.DCGANGenerator()
    faces = generator.eval().draw(np.zeros((2, synthetic.LATENT_SIZE), np.float32))
    assert faces.shape == (2, 64, 64, 3)
    assert faces.dtype == np.uint8
    keys = set(generator.state_dict())
    assert {"main.0.weight", "main.1.running_var", "main.12.weight"} <= keys


def test_missing_weights_explain_how_to_get_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(synthetic.GENERATOR_ENV, raising=False)
    monkeypatch.setattr(synthetic, "GENERATOR_PACKAGE", "no_such_package_for_faceid_tests")
    with pytest.raises(FileNotFoundError, match=r"gan-face-generate==1\.1\.1"):
        synthetic.locate_generator()
