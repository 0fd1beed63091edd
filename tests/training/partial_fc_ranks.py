"""Run by test_partial_fc.py as `torchrun --standalone --nproc_per_node 2 partial_fc_ranks.py OUT` (gloo, CPU).

Each rank writes OUT/rank<r>.json with what the test asserts:
0. a RecordIO without identity records has its classes counted by rank 0 only;
1. the sharded head against the full head on the gathered batch, at sample rate 1: loss,
   the gradient of this rank's centres, the embedding gradient (x N, for DDP's average);
2. a short training run with Partial FC at sample rate 0.5 under DDP, interrupted and
   resumed mid-epoch (rank 0 decides and reads; each rank reads its own shard), against
   the same run uninterrupted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from training import checkpoint
from training.backbones import BACKBONES
from training.config import BackboneConfig, ExperimentConfig, HeadConfig, replace
from training.heads import MarginHead
from training.partial_fc import PartialFC, shard
from training.train import read_metrics, train


class Faces(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    num_classes = 6

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(1)
        self.images = torch.rand(24, 3, 112, 112, generator=generator) * 2 - 1
        self.labels = [i % self.num_classes for i in range(24)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        return (image.flip(2) if torch.rand(()) < 0.5 else image), self.labels[index]


def tiny(cfg: BackboneConfig) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 8, stride=8),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 14 * 14, cfg.embedding_size),
        torch.nn.BatchNorm1d(cfg.embedding_size),
    )


def head_against_full(rank: int, world: int) -> dict[str, object]:
    found: dict[str, object] = {}
    classes, dim, batch = 11, 8, 6  # shards of 6 and 5 classes
    for name in ("arcface", "cosface", "combined"):
        torch.manual_seed(0)  # the same global batch and centres on every rank
        embeddings = torch.randn(world * batch, dim, dtype=torch.float64)
        labels = torch.randint(0, classes, (world * batch,))
        labels[0], labels[1] = 0, classes - 1  # both shards hold a class of the batch
        weight = torch.randn(classes, dim, dtype=torch.float64)
        cfg = HeadConfig(name=name, scale=16.0, margin=0.3, combined=(1.1, 0.2, 0.1))
        full = MarginHead(cfg, dim, classes).double()
        full.weight.data.copy_(weight)
        full_x = embeddings.clone().requires_grad_(True)
        full_out = full(full_x, labels)
        full_out.loss.backward()

        part = PartialFC(replace(ExperimentConfig(head=cfg), head={"partial_fc": True}).head, dim, classes).double()
        start, count = shard(classes, rank, world)
        part.weight.data.copy_(weight[start : start + count])
        rows = slice(rank * batch, (rank + 1) * batch)
        x = embeddings[rows].clone().requires_grad_(True)
        out = part(x, labels[rows])
        out.loss.backward()
        correct = part.num_correct(out, labels[rows]).clone()
        dist.all_reduce(correct)
        assert full.weight.grad is not None and part.weight.grad is not None
        assert full_x.grad is not None and x.grad is not None
        found[name] = {
            "loss": [out.loss.item(), full_out.loss.item()],
            "weight_grad_error": (part.weight.grad - full.weight.grad[start : start + count]).abs().max().item(),
            "embedding_grad_error": (x.grad - world * full_x.grad[rows]).abs().max().item(),
            "correct": [int(correct), int(full.num_correct(full_out, labels))],
        }
    return found


def training(out: Path) -> dict[str, object]:
    BACKBONES["tiny"] = tiny
    cfg = replace(
        ExperimentConfig(),
        backbone={"name": "tiny", "embedding_size": 16},
        head={"name": "arcface", "scale": 16.0, "margin": 0.2, "partial_fc": True, "sample_rate": 0.5},
        data={"batch_size": 4, "num_workers": 0},
        optim={"lr": 0.05, "lr_batch": 0},
        schedule={"epochs": 2, "kind": "cosine"},
        run={"out_dir": out, "name": "full", "log_every": 1, "progress": False, "threads": 1},
    )
    full = train(cfg, dataset=Faces(), callbacks=[])  # 24 images / 2 ranks / 4 = 3 steps an epoch
    part_cfg = replace(cfg, run={"name": "part", "max_steps": 2})
    train(part_cfg, dataset=Faces(), callbacks=[])
    part = train(replace(part_cfg, run={"max_steps": 0}), dataset=Faces(), callbacks=[], resume="auto")

    def losses(run: Path) -> dict[str, float]:
        return {str(r["step"]): r["loss"] for r in read_metrics(run) if "loss" in r}

    rank = dist.get_rank()
    centres = checkpoint.load(full / f"checkpoint_00000006.head{rank}of2.pt")["head"]["weight"]
    return {
        "full": losses(full),
        "resumed": losses(part),
        "shards": sorted(p.name for p in part.glob("*.head*")),
        "centres_sum": centres.double().sum().item(),  # DDP must leave each rank's own centres alone
    }


def classes_counted_once(out: Path) -> int:
    """A .rec without identity records: rank 0 reads every label, the others are told the count."""
    import training.data.recordio as recordio
    from training.data.images import encode_rgb
    from training.train import Distributed, _build_dataset

    rank = dist.get_rank()
    if rank == 0:
        crop = encode_rgb(torch.zeros(112, 112, 3, dtype=torch.uint8).numpy(), ".png")
        with recordio.IndexedRecordWriter(out / "train.rec", out / "train.idx") as writer:
            for key, label in enumerate([0, 4, 2]):
                writer.write(key, recordio.pack(recordio.IRHeader(0, float(label), key), crop))
    else:

        def no_second_pass(header: recordio.IRHeader) -> int:
            raise AssertionError("a rank other than 0 read the labels to count the classes")

        recordio.image_label = no_second_pass  # type: ignore[assignment]
    cfg = replace(ExperimentConfig(), data={"kind": "recordio", "root": out})
    world = Distributed(rank, dist.get_world_size(), torch.device("cpu"))
    return _build_dataset(cfg, world).num_classes


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    found: dict[str, object] = {"classes": classes_counted_once(out), "head": head_against_full(rank, world)}
    found["training"] = training(out / f"runs{rank}")  # each rank its own disk: nothing shared
    dist.destroy_process_group()
    (out / f"rank{rank}.json").write_text(json.dumps(found))


if __name__ == "__main__":
    main()
