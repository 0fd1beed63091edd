"""The training loop: one process per device, resumable bit-for-bit on the CPU.

`faceid-train train --config training/configs/cpu_small.toml` runs on one process;
`torchrun --nproc_per_node 8 -m training.cli train --config ...` runs one per GPU.
The process group is started only when torchrun has set RANK and WORLD_SIZE.

Exact resume rests on four things: the data order is a function of (seed, epoch)
and the checkpoint records how many batches of the epoch were done; each sample's
augmentation draws from torch's RNG seeded by (seed, epoch, index), whichever loader
worker draws it; the loader's worker seeds come from a per-epoch generator rather
than the global RNG; and the python, numpy and torch random states of every rank are
saved and restored. What is not covered: augmentation drawing from numpy's or python's
RNG inside a dataset, and on CUDA the nondeterministic kernels (cuDNN autotuning is on).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
from numpy.typing import NDArray
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm import tqdm

from training import checkpoint
from training.backbones import get_model
from training.config import ExperimentConfig, OptimConfig, ScheduleConfig, load_config, to_toml
from training.data import FaceDataset, build_dataset
from training.distill import Distiller, WithIndex, build_distiller
from training.heads import HeadOutput, MarginHead
from training.partial_fc import PartialFC

METRICS_FILE = "metrics.jsonl"

# Called on rank 0 with the backbone in eval mode; returns metrics to log (e.g. verification accuracy).
Callback = Callable[[nn.Module], dict[str, float]]


@dataclass(frozen=True)
class Distributed:
    rank: int
    world_size: int
    device: torch.device
    owns_group: bool = False  # started the process group, so destroys it at the end

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return dist.is_available() and dist.is_initialized()


def setup_distributed(device: str) -> Distributed:
    """Join the torchrun process group when launched by torchrun; otherwise a single process."""
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Distributed(0, 1, torch.device("cuda" if use_cuda else "cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    where = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if dist.is_initialized():  # the caller's group (several runs in one process): used, not destroyed
        return Distributed(dist.get_rank(), dist.get_world_size(), where)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), where, owns_group=True)


class Recognizer(nn.Module):
    """Backbone and margin head as one module, so that DDP synchronises both."""

    def __init__(self, backbone: nn.Module, head: MarginHead | PartialFC, distiller: Distiller | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.distiller = distiller  # trains with the backbone; never exported

    def forward(self, images: Tensor, labels: Tensor, index: Tensor | None = None) -> HeadOutput:
        embeddings = self.backbone(images)  # images (B, 3, 112, 112) -> (B, D)
        out: HeadOutput = self.head(embeddings, labels)
        if self.distiller is not None and index is not None:
            out = out._replace(loss=out.loss + self.distiller(embeddings, index))
        return out


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of sample `index` in `epoch`: the same whichever worker draws it."""
    return ((seed * 1_000_003 + epoch) * 2_147_483_647 + index) % (1 << 63)


class ResumableSampler(Sampler[tuple[int, int]]):
    """This rank's share of a shuffled epoch, from any position, each index with its augmentation seed.

    A DataLoader worker's RNG depends on which batches it drew before, and a resume
    mid-epoch deals the batches out afresh; a seed per (epoch, sample) makes the
    augmentation independent of that, so a resume repeats it with any `num_workers`.
    """

    def __init__(self, dataset: Dataset[Any], world: Distributed, seed: int) -> None:
        self.order: DistributedSampler[int] = DistributedSampler(
            dataset, num_replicas=world.world_size, rank=world.rank, shuffle=True, seed=seed
        )
        self.seed = seed
        self.epoch = 0
        self.start = 0
        self.num_samples = self.order.num_samples

    def set_position(self, epoch: int, start: int) -> None:
        self.order.set_epoch(epoch)
        self.epoch = epoch
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in islice(iter(self.order), self.start, None):
            yield index, sample_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        return self.num_samples - self.start


class SeededSamples(Dataset[Any]):
    """Draws sample `index` with torch's RNG seeded by its seed (`ResumableSampler`'s pairs).

    Augmentation must draw from torch's RNG (`transforms.random_flip` does). The global
    state is restored afterwards, so with `num_workers = 0` the model's dropout stream is
    untouched. A plain int index (PreciseBN's loader) draws as it is.
    """

    def __init__(self, dataset: Dataset[Any]) -> None:
        self.dataset = dataset
        self.num_classes: int = dataset.num_classes  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: int | tuple[int, int]) -> Any:
        if isinstance(item, int):
            return self.dataset[item]
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def lr_factor(schedule: ScheduleConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier of the base learning rate at optimizer step `step` (0-based)."""
    total = max(1, schedule.epochs * steps_per_epoch)
    warmup = round(schedule.warmup_epochs * steps_per_epoch)
    milestones = [round(m * steps_per_epoch) for m in schedule.milestones]
    floor = schedule.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule.kind == "step":
            return schedule.gamma ** sum(step >= m for m in milestones)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule.kind == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        return floor + (1 - floor) * (1 - progress) ** schedule.power

    return factor


def build_optimizer(params: Sequence[nn.Parameter], cfg: OptimConfig, global_batch: int) -> torch.optim.Optimizer:
    lr = cfg.lr * global_batch / cfg.lr_batch if cfg.lr_batch else cfg.lr
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}; choose one of: sgd, adamw")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Owns the devices, the model, the optimiser, the data order and the checkpoints of one run."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        dataset: FaceDataset,
        world: Distributed,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.cfg = cfg
        self.world = world
        self.callbacks = callbacks
        self.run_dir = cfg.run.out_dir / cfg.run.name
        self.use_amp = cfg.run.amp and world.device.type == "cuda"
        if world.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed 112x112 inputs: pick the fastest kernels once
        seed_everything(cfg.run.seed + world.rank)

        backbone = get_model(cfg.backbone)
        head: MarginHead | PartialFC
        if cfg.head.partial_fc:
            head = PartialFC(cfg.head, cfg.backbone.embedding_size, dataset.num_classes)  # this rank's shard
        else:
            head = MarginHead(cfg.head, cfg.backbone.embedding_size, dataset.num_classes)
        distiller = None
        if cfg.distill.weight > 0:
            progress = world.is_main and cfg.run.progress
            distiller = build_distiller(
                dataset, cfg.backbone.embedding_size, cfg.distill.teacher, cfg.distill.weight, progress
            )
            dataset = cast(FaceDataset, WithIndex(cast(Dataset[tuple[Tensor, int]], dataset)))  # batches carry indices
        dataset = cast(FaceDataset, SeededSamples(cast(Dataset[Any], dataset)))
        self.model = Recognizer(backbone, head, distiller).to(world.device)
        self.ddp: nn.Module = self.model
        if world.enabled:
            if cfg.head.partial_fc:
                # Each rank's centres are its own: DDP must neither broadcast nor average them.
                self.model._ddp_params_and_buffers_to_ignore = ["head.weight"]  # type: ignore[assignment]
            device_ids = [world.device.index] if world.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=device_ids)

        self.batch_size = cfg.data.batch_size
        self.sampler = ResumableSampler(cast(Dataset[Any], dataset), world, seed=cfg.run.seed)
        # The loader's seeds come from this generator, re-seeded each epoch, never from the global RNG.
        self.loader_generator = torch.Generator()
        self.loader: DataLoader[tuple[Tensor, int]] = DataLoader(
            cast(Dataset[tuple[Tensor, int]], dataset),
            batch_size=self.batch_size,
            sampler=self.sampler,
            num_workers=cfg.data.num_workers,
            pin_memory=world.device.type == "cuda",
            drop_last=True,
            generator=self.loader_generator,
        )
        self.steps_per_epoch = self.sampler.num_samples // self.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{len(dataset)} images over {world.world_size} process(es) give no full batch of {self.batch_size}"
            )
        self.total_steps = cfg.schedule.epochs * self.steps_per_epoch

        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(params, cfg.optim, self.batch_size * world.world_size)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_factor(cfg.schedule, self.steps_per_epoch)
        )
        self.scaler = torch.amp.GradScaler(world.device.type, enabled=self.use_amp)
        self.step = 0
        # Running sums since the last log record, checkpointed so a resumed run logs the same numbers.
        self.window = {"loss": 0.0, "correct": 0.0, "seen": 0.0, "steps": 0.0}

    # -- checkpoints -------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        rng: list[Any] = [checkpoint.rng_state()]
        if self.world.enabled:
            rng = [None] * self.world.world_size
            dist.all_gather_object(rng, checkpoint.rng_state())
        return {
            "config": self.cfg.to_dict(),
            "model": self.model.backbone.state_dict(),  # the backbone: what eval and export load
            # With Partial FC each rank's shard goes to its own file (`shard_state`).
            "head": None if self.cfg.head.partial_fc else self.model.head.state_dict(),
            "distill": self.model.distiller.state_dict() if self.model.distiller is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "batches_in_epoch": self.step % self.steps_per_epoch,
            "world_size": self.world.world_size,
            "window": dict(self.window),
        }

    def shard_state(self) -> dict[str, Any]:
        """This rank's Partial FC centres and their optimiser state (momentum): C/N rows each."""
        weight = self.model.head.weight
        return {"head": self.model.head.state_dict(), "optimizer": dict(self.optimizer.state.get(weight, {}))}

    def save_checkpoint(self) -> None:
        state = self.state()  # every rank joins the RNG gather
        path = checkpoint.checkpoint_path(self.run_dir, self.step)
        if self.cfg.head.partial_fc:  # every rank writes its shard, on its own disk if it has no shared one
            self.run_dir.mkdir(parents=True, exist_ok=True)
            keep = self.cfg.run.keep_checkpoints
            checkpoint.save_shard(self.shard_state(), path, self.world.rank, self.world.world_size, keep)
        if self.world.is_main:
            checkpoint.save(state, path, self.cfg.run.keep_checkpoints)

    def resume(self, path: Path) -> None:
        """Rank 0 reads the checkpoint and broadcasts it; with Partial FC each rank also reads its own shard."""
        box: list[Any] = [checkpoint.load(path) if self.world.is_main else None]
        if self.world.enabled:
            dist.broadcast_object_list(box, src=0)
        state: dict[str, Any] = box[0]
        if state["world_size"] != self.world.world_size:
            raise ValueError(
                f"{path} was written by {state['world_size']} process(es), this run has {self.world.world_size}: "
                "the data order would differ"
            )
        self.model.backbone.load_state_dict(state["model"])
        if self.model.distiller is not None and state.get("distill") is not None:
            self.model.distiller.load_state_dict(state["distill"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.cfg.head.partial_fc:
            # Next to the checkpoint on a shared filesystem, else in this rank's own run folder.
            mine = checkpoint.shard_path(path, self.world.rank, self.world.world_size)
            if not mine.exists():
                mine = checkpoint.shard_path(self.run_dir / path.name, self.world.rank, self.world.world_size)
            shard = checkpoint.load(mine)
            self.model.head.load_state_dict(shard["head"])
            weight = self.model.head.weight
            # The optimizer state above holds rank 0's head momentum; this rank's is in its shard.
            # ("step", AdamW's count, stays on the CPU as load_state_dict leaves it.)
            self.optimizer.state[weight] = {
                k: v if k == "step" else v.to(weight.device) for k, v in shard["optimizer"].items()
            }
        else:
            self.model.head.load_state_dict(state["head"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        checkpoint.set_rng_state(state["rng"][self.world.rank])
        self.step = int(state["step"])
        self.window = dict(state["window"])
        if self.world.is_main:
            _truncate_metrics(self.run_dir / METRICS_FILE, self.step)

    # -- the loop ----------------------------------------------------------------------------

    def fit(self) -> None:
        cfg = self.cfg.run
        last_step = self.total_steps if cfg.max_steps <= 0 else min(self.total_steps, cfg.max_steps)
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            disable=not (self.world.is_main and cfg.progress),
            unit="step",
            dynamic_ncols=True,
        )
        self.ddp.train()
        tick = time.perf_counter()
        while self.step < last_step:
            epoch, done = divmod(self.step, self.steps_per_epoch)
            self.sampler.set_position(epoch, done * self.batch_size)
            self.loader_generator.manual_seed((cfg.seed * 100_003 + epoch) * 1_009 + self.world.rank)
            bar.set_description(f"epoch {epoch + 1}/{self.cfg.schedule.epochs}")
            for batch in self.loader:
                self._train_step(*batch)  # (images, labels) or, when distilling, (images, labels, index)
                self.step += 1
                bar.update()
                at_epoch_end = self.step % self.steps_per_epoch == 0
                if self.step % cfg.log_every == 0 or at_epoch_end or self.step == last_step:
                    tick = self._log(bar, tick)
                paused = False
                if self.step == self.total_steps and cfg.precise_bn_batches > 0:
                    self._precise_bn()  # before the last verification and checkpoint
                    paused = True
                every = self.step % cfg.verify_every == 0 if cfg.verify_every else at_epoch_end
                if every or self.step == self.total_steps:  # the finished model is always verified
                    self._verify()
                    paused = True
                if (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or at_epoch_end:
                    self.save_checkpoint()
                    paused = True
                if paused:
                    tick = time.perf_counter()  # throughput counts training time only
                if self.step >= last_step:
                    break
        if self.step % self.steps_per_epoch and (not cfg.checkpoint_every or self.step % cfg.checkpoint_every):
            self.save_checkpoint()  # stopped early by max_steps between checkpoints
        bar.close()

    def _train_step(self, images: Tensor, labels: Tensor, index: Tensor | None = None) -> None:
        images = images.to(self.world.device, non_blocking=True)  # (B, 3, 112, 112)
        labels = labels.to(self.world.device, non_blocking=True)  # (B,)
        if index is not None:
            index = index.to(self.world.device, non_blocking=True)  # (B,) sample indices, for the teacher
        with torch.autocast(self.world.device.type, dtype=torch.float16, enabled=self.use_amp):
            out: HeadOutput = self.ddp(images, labels, index)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out.loss).backward()
        if self.cfg.optim.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            # The backbone only, as insightface: clipping the head too shrank its first steps about 27x.
            nn.utils.clip_grad_norm_(self.model.backbone.parameters(), self.cfg.optim.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        # .item() waits for the device; worth it for exact per-step records at this scale of logging.
        self.window["loss"] += out.loss.item()
        self.window["correct"] += self.model.head.num_correct(out, labels).item()
        self.window["seen"] += labels.numel()
        self.window["steps"] += 1

    def _precise_bn(self) -> None:
        """Batch-norm statistics of the final weights, averaged over `run.precise_bn_batches` training batches.

        Each rank measures its own shard; the ranks' averages are then averaged.
        """
        sampler: DistributedSampler[int] = DistributedSampler(
            cast(Dataset[Any], self.loader.dataset),
            num_replicas=self.world.world_size,
            rank=self.world.rank,
            shuffle=True,
            seed=self.cfg.run.seed + 1,
        )
        loader = DataLoader(
            self.loader.dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.cfg.data.num_workers,
            drop_last=True,  # a batch of one has no variance
            generator=torch.Generator().manual_seed(self.cfg.run.seed + 1),
        )
        batches = (batch[0].to(self.world.device) for batch in islice(loader, self.cfg.run.precise_bn_batches))
        with torch.autocast(self.world.device.type, dtype=torch.float16, enabled=self.use_amp):
            seen = recompute_bn_statistics(self.model.backbone, batches)
        if self.world.enabled:
            for module in self.model.backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    for stat in (module.running_mean, module.running_var):
                        if stat is not None:
                            dist.all_reduce(stat)
                            stat.div_(self.world.world_size)
        self._write({"step": self.step, "precise_bn_batches": seen * self.world.world_size})

    def _log(self, bar: tqdm[Any], since: float) -> float:
        now = time.perf_counter()
        w = self.window
        record = {
            "step": self.step,
            "epoch": self.step / self.steps_per_epoch,
            "loss": w["loss"] / max(1.0, w["steps"]),
            "accuracy": w["correct"] / max(1.0, w["seen"]),
            "lr": self.scheduler.get_last_lr()[0],
            "images_per_s": w["seen"] * self.world.world_size / max(1e-9, now - since),
        }
        self.window = dict.fromkeys(w, 0.0)
        bar.set_postfix(
            loss=f"{record['loss']:.3f}", acc=f"{record['accuracy']:.3f}", img_s=f"{record['images_per_s']:.0f}"
        )
        self._write(record)
        return now

    def _verify(self) -> None:
        if self.callbacks and self.world.is_main:
            backbone = self.model.backbone
            backbone.eval()
            metrics: dict[str, Any] = {"step": self.step, "epoch": self.step / self.steps_per_epoch}
            with torch.no_grad():
                for callback in self.callbacks:
                    metrics.update(callback(backbone))
            backbone.train()
            self._write(metrics)
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
        if self.world.enabled:
            dist.barrier()

    def _write(self, record: dict[str, Any]) -> None:
        if self.world.is_main:
            with (self.run_dir / METRICS_FILE).open("a") as f:
                f.write(json.dumps(record) + "\n")


@torch.no_grad()
def recompute_bn_statistics(model: nn.Module, batches: Iterable[Tensor]) -> int:
    """PreciseBN (Wu & Johnson, 2021): replace every batch norm's running mean and variance
    by their plain average over `batches` (B, 3, 112, 112), computed with the current weights.

    Only the batch norms run in training mode (dropout stays off, as at inference);
    the model is left in the mode it was in. Returns the number of batches seen.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    model.eval()
    for module in norms:
        module.reset_running_stats()
        module.momentum = None  # None: a cumulative average over the batches
        module.train()
    seen = 0
    try:
        for images in batches:
            model(images)
            seen += 1
    finally:
        for module, momentum in zip(norms, momenta, strict=True):
            module.momentum = momentum
        model.train(was_training)
    if seen == 0:
        raise ValueError("no batches to recompute the batch-norm statistics on")
    return seen


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records past `step`: the interrupted run logged them, the resumed run will again."""
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept))


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def train(
    cfg: ExperimentConfig,
    *,
    dataset: FaceDataset | None = None,
    callbacks: Sequence[Callback] | None = None,
    resume: str | Path | None = None,
) -> Path:
    """Train one run and return its folder. `resume` is a checkpoint path, or "auto" for the run's latest."""
    if cfg.run.threads > 0:
        torch.set_num_threads(cfg.run.threads)
    world = setup_distributed(cfg.run.device)
    try:
        if dataset is None:
            dataset = _build_dataset(cfg, world)
        if callbacks is None:
            callbacks = default_callbacks(cfg, world)
        trainer = Trainer(cfg, dataset, world, callbacks)
        # Rank 0 decides where to start (its filesystem holds the checkpoints) and tells the others.
        decision: list[Any] = [None, None]
        if world.is_main:
            try:
                decision[0] = _prepare_run_dir(trainer.run_dir, resume, cfg)
            except (FileNotFoundError, FileExistsError) as error:
                decision[1] = error
        if world.enabled:
            dist.broadcast_object_list(decision, src=0)
        start, problem = decision
        if problem is not None:
            raise problem
        if start is not None:
            trainer.resume(start)
        trainer.fit()
        return trainer.run_dir
    finally:
        if world.owns_group:
            dist.destroy_process_group()


def _build_dataset(cfg: ExperimentConfig, world: Distributed) -> FaceDataset:
    """The training set, built by rank 0 before the others.

    `synthetic` data are generated on first use; one rank writes them while the
    others wait, then find them complete and only read them. Rank 0 counts the
    classes and hands the count on, so a RecordIO without identity records is read
    in full once, not once per rank.
    """
    shared: list[int | None] = [None]
    if world.is_main:
        dataset = cast(FaceDataset, build_dataset(cfg.data, train=True))
        shared = [dataset.num_classes]
    if world.enabled:
        dist.broadcast_object_list(shared, src=0)  # the others wait here until rank 0 has built the set
    if not world.is_main:
        dataset = cast(FaceDataset, build_dataset(cfg.data, train=True, num_classes=shared[0]))
    return dataset


def _prepare_run_dir(run_dir: Path, resume: str | Path | None, cfg: ExperimentConfig) -> Path | None:
    """On rank 0: the checkpoint to start from (None: a fresh run), and the run folder made ready."""
    start = _resume_path(run_dir, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    if start is None and checkpoint.list_checkpoints(run_dir):
        raise FileExistsError(f"{run_dir} already holds checkpoints: resume with --resume auto, or set run.name")
    if start is None:
        (run_dir / METRICS_FILE).unlink(missing_ok=True)
    (run_dir / "config.toml").write_text(to_toml(cfg))
    return start


def _resume_path(run_dir: Path, resume: str | Path | None) -> Path | None:
    if resume is None or resume == "":
        return None
    if str(resume) == "auto":
        found = checkpoint.list_checkpoints(run_dir) if run_dir.exists() else []
        return found[-1] if found else None
    path = Path(resume)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def default_callbacks(cfg: ExperimentConfig, world: Distributed) -> list[Callback]:
    """Verification on `cfg.data.val_pairs`: an InsightFace `.bin`, or an aligned folder to draw pairs from."""
    if not world.is_main or cfg.data.val_pairs is None:
        return []
    path = Path(cfg.data.val_pairs)
    if path.is_dir():
        from training.data.folder import max_balanced_pairs, read_crop, sample_pairs, scan_folder

        _, samples = scan_folder(path)
        labels = np.array([label for _, label in samples], dtype=np.int64)
        # Half of what the labels allow at most (as `eval` does): genuine pairs run out first on small sets.
        num_pairs = min(cfg.data.val_num_pairs, max_balanced_pairs(labels) // 2)
        index, issame = sample_pairs(labels, num_pairs, seed=cfg.run.seed)
        # Each image is read and embedded once, however many pairs it is in.
        used, index = np.unique(index, return_inverse=True)
        crops = [read_crop(samples[int(i)][0]) for i in used]
        return [
            VerificationCallback(
                crops, issame, pairs=index.reshape(-1, 2), batch_size=cfg.data.batch_size, device=world.device
            )
        ]
    from training.data.verification_bin import load_bin

    # Every pair: a named benchmark's figure is comparable only over all of it (LFW's pairs.txt
    # order makes the first 3000 pairs whole folds of one kind).
    found = load_bin(path)
    return [VerificationCallback(found.images, found.issame, batch_size=cfg.data.batch_size, device=world.device)]


class VerificationCallback:
    """Verification metrics on pairs of aligned RGB crops.

    Pair i is crops `pairs[i, 0]` and `pairs[i, 1]`, or crops 2i and 2i+1 without
    `pairs` (a `.bin`). An embedding is normalise(e(x) + e(mirror x)), insightface's
    protocol.
    """

    def __init__(
        self,
        crops: Sequence[NDArray[np.uint8]],
        issame: NDArray[np.bool_],
        batch_size: int,
        device: torch.device,
        prefix: str = "val",
        pairs: NDArray[np.int64] | None = None,
    ) -> None:
        self.crops = crops
        self.issame = issame
        self.pairs = np.arange(2 * len(issame)).reshape(-1, 2) if pairs is None else pairs  # (P, 2)
        self.batch_size = batch_size
        self.device = device
        self.prefix = prefix

    def __call__(self, backbone: nn.Module) -> dict[str, float]:
        from training.embedders import TorchEmbedder, embed_all
        from training.metrics import verification_metrics

        emb = embed_all(TorchEmbedder(backbone, device=self.device), self.crops, flip=True, batch_size=self.batch_size)
        scores = np.sum(emb[self.pairs[:, 0]] * emb[self.pairs[:, 1]], axis=1)  # (P,) cosine of each pair
        metrics = verification_metrics(scores, self.issame)
        return {f"{self.prefix}/{k}": v for k, v in _flatten(metrics).items()}


def _flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}@"))
        elif isinstance(value, int | float | np.floating | np.integer):
            flat[f"{prefix}{key}"] = float(value)
    return flat


# -- command line -------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="experiment TOML (see training/configs)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set optim.lr=0.05 (repeatable)",
    )
    parser.add_argument("--resume", default=None, help='checkpoint to continue from, or "auto" for the latest')
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(to_toml(cfg), end="")
        return 0
    run_dir = train(cfg, resume=args.resume)
    print(f"run folder: {run_dir}")
    return 0
