"""Embedding distillation: the projection, the loss, the teacher cache, and the loop that uses them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

torch = pytest.importorskip("torch")

from training import checkpoint  # noqa: E402
from training.backbones import BACKBONES  # noqa: E402
from training.config import ExperimentConfig, replace  # noqa: E402
from training.data.folder import FolderDataset  # noqa: E402
from training.distill import Distiller, WithIndex, cache_path, distill_loss, teacher_embeddings  # noqa: E402
from training.train import train  # noqa: E402


def unit(rows: int, cols: int, seed: int) -> NDArray[np.float32]:
    x = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def crop_folder(root: Path, people: int = 2, photos: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for p in range(people):
        (root / f"p{p}").mkdir(parents=True)
        base = rng.integers(0, 256, (112, 112, 3))
        for n in range(photos):
            crop = np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / f"p{p}" / f"{n}.png"), crop)
    return root


def test_projection_maps_student_to_teacher_size() -> None:
    distiller = Distiller(student_size=32, teacher=unit(10, 128, seed=0), weight=0.5)
    assert distiller.projection.weight.shape == (128, 32)
    assert distiller.projection.bias is None
    loss = distiller(torch.randn(4, 32), torch.tensor([0, 3, 3, 9]))
    assert loss.shape == ()
    assert 0.0 <= loss.item() <= 2 * 0.5
    assert "teacher" not in distiller.state_dict()  # recomputed from the cache, never checkpointed


def test_loss_is_zero_for_the_same_direction_and_two_for_the_opposite() -> None:
    teacher = torch.from_numpy(unit(5, 16, seed=1))
    assert distill_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)
    assert distill_loss(3.0 * teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)  # the scale does not matter
    assert distill_loss(-teacher, teacher).item() == pytest.approx(2.0, abs=1e-6)


def test_loss_decreases_when_a_tiny_student_trains() -> None:
    torch.manual_seed(0)
    images = torch.randn(8, 3, 16, 16)
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 24))
    distiller = Distiller(student_size=24, teacher=unit(8, 64, seed=2), weight=1.0)
    optimizer = torch.optim.Adam([*student.parameters(), *distiller.parameters()], lr=1e-2)
    index = torch.arange(8)
    losses = []
    for _ in range(30):
        loss = distiller(student(images), index)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_teacher_embeddings_are_cached_per_file_list(tmp_path: Path) -> None:
    dataset = FolderDataset(crop_folder(tmp_path / "crops"))
    calls: list[int] = []

    class Fake:
        def embed(self, crops: Sequence[NDArray[np.uint8]]) -> NDArray[np.float32]:
            calls.append(len(crops))
            return unit(len(crops), 8, seed=len(calls))

    first = teacher_embeddings(dataset, "fake", embedder=Fake(), progress=False)
    assert first.shape == (8, 8)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)
    assert cache_path(dataset.root, dataset.samples, "fake").exists()
    again = teacher_embeddings(dataset, "fake", embedder=Fake(), progress=False)
    np.testing.assert_array_equal(again, first)
    assert len(calls) == 1  # the second call read the cache
    assert cache_path(dataset.root, dataset.samples, "other") != cache_path(dataset.root, dataset.samples, "fake")


def test_training_with_sface_as_teacher_checkpoints_the_projection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny = lambda cfg: torch.nn.Sequential(  # noqa: E731  the real backbones have their own tests
        torch.nn.Conv2d(3, 8, 8, stride=8), torch.nn.Flatten(), torch.nn.Linear(8 * 14 * 14, cfg.embedding_size)
    )
    monkeypatch.setitem(BACKBONES, "tiny", tiny)
    root = crop_folder(tmp_path / "crops")
    cfg = replace(
        ExperimentConfig(),
        backbone={"name": "tiny", "embedding_size": 32},
        head={"name": "arcface", "scale": 16.0, "margin": 0.2},
        data={"kind": "folder", "root": root, "batch_size": 4, "num_workers": 0},
        optim={"lr": 0.05, "lr_batch": 0},
        schedule={"epochs": 1, "kind": "cosine"},
        run={"out_dir": tmp_path / "runs", "name": "distill", "progress": False, "threads": 2},
        distill={"teacher": "builtin:sface", "weight": 1.0},
    )
    run_dir = train(cfg, dataset=FolderDataset(root, flip=True), callbacks=[])
    state = checkpoint.load(checkpoint.list_checkpoints(run_dir)[-1])
    assert state["distill"]["projection.weight"].shape == (128, 32)  # to SFace's 128-d
    assert not any(key.startswith("projection") for key in state["model"])  # export loads the backbone alone
    assert len(list(root.glob(".teacher-*.npy"))) == 1
    assert len(WithIndex(FolderDataset(root))[5]) == 3


def test_teacher_matrix_is_not_a_buffer_ddp_broadcasts(tmp_path: Path) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    distiller = Distiller(student_size=8, teacher=unit(50, 16, seed=0), weight=1.0)
    model = torch.nn.ModuleDict({"backbone": torch.nn.Linear(4, 8), "distiller": distiller})
    assert not [name for name, _ in model.named_buffers() if "teacher" in name]
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(model)
        assert all(buffer is not distiller.teacher for buffer in ddp.modules_buffers)  # not re-sent each step
    finally:
        dist.destroy_process_group()
    model.to(torch.float64)  # .to() still moves (and casts) the matrix with the module
    assert distiller.teacher.dtype == torch.float64 and distiller.teacher.shape == (50, 16)
