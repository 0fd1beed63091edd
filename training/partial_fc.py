"""Partial FC: the margin head for very many classes, sharded across ranks (insightface's PartialFC v2).

Each of the N ranks keeps the class centres of C/N classes, `weight (C_r, D)`. A step
all-gathers the batch's embeddings and labels (N*B rows), samples `sample_rate * C_r`
of its centres (every class present in the gathered batch, then random others),
computes the cosines of the whole batch to those centres, applies the margin on the
rows whose class lives here, and joins the ranks' logits in one softmax cross-entropy
(a max and two sums all-reduced). Nothing of size C crosses the network: per step only
the embeddings (N*B x D) and three (N*B,) vectors do.

With `sample_rate = 1` the loss is the full head's on the gathered batch. The embedding
gradient is summed over ranks and multiplied by N, so that DDP's average over the ranks
gives the backbone the gradient of the global-batch loss, as with the replicated head.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from training.config import HeadConfig
from training.heads import HeadOutput, get_margin


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce(tensor: Tensor, op: Any = None) -> Tensor:
    if _world()[1] > 1:
        dist.all_reduce(tensor, op=op if op is not None else dist.ReduceOp.SUM)
    return tensor


def shard(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    """(first class, number of classes) that rank `rank` holds: C/N each, the first C mod N one more."""
    base, extra = divmod(num_classes, world_size)
    return base * rank + min(rank, extra), base + int(rank < extra)


class _AllGather(torch.autograd.Function):
    """(B, ...) on each rank -> (N*B, ...) on every rank; backward sums the ranks' gradients, times N."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        _, world_size = _world()
        if world_size == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(world_size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        rank, world_size = _world()
        if world_size == 1:
            return grad
        grad = _all_reduce(grad.contiguous().clone())
        rows = grad.shape[0] // world_size
        # x N: DDP then averages the backbone's gradient over the ranks, which gives the global-batch one.
        return grad[rank * rows : (rank + 1) * rows] * world_size


def all_gather_with_grad(x: Tensor) -> Tensor:
    out: Tensor = _AllGather.apply(x)
    return out


def all_gather(x: Tensor) -> Tensor:
    """All-gather without a gradient (labels)."""
    _, world_size = _world()
    if world_size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class _ShardedCrossEntropy(torch.autograd.Function):
    """Mean softmax cross-entropy over logits split by columns across ranks.

    logits (R, S) are this rank's columns; labels (R,) the column of each row's class
    here, or -1 when it lives on another rank.
    """

    @staticmethod
    def forward(ctx: Any, logits: Tensor, labels: Tensor) -> Tensor:
        top = logits.max(dim=1, keepdim=True).values if logits.shape[1] else logits.new_full((len(logits), 1), -1e30)
        top = _all_reduce(top, dist.ReduceOp.MAX)
        probs = (logits - top).exp()
        probs /= _all_reduce(probs.sum(dim=1, keepdim=True))
        here = (labels >= 0).nonzero()[:, 0]
        target = torch.zeros(len(logits), dtype=probs.dtype, device=probs.device)
        target[here] = probs[here, labels[here]]
        target = _all_reduce(target)
        ctx.save_for_backward(probs, labels)
        return -target.clamp_min(1e-30).log().mean()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        probs, labels = ctx.saved_tensors
        here = (labels >= 0).nonzero()[:, 0]
        grad_logits = probs.clone()
        grad_logits[here, labels[here]] -= 1.0
        return grad_logits * (grad / len(probs)), None


def sharded_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    out: Tensor = _ShardedCrossEntropy.apply(logits, labels)
    return out


class PartialFC(nn.Module):
    """This rank's share of the class centres, `weight (C_r, D)`, and the sampled, sharded margin loss.

    Every rank must hold the same batch size (the trainer drops the last partial batch).
    The margin is any of `heads.MARGINS`; the IAM term needs every centre and is not
    available here.
    """

    def __init__(self, cfg: HeadConfig, embedding_size: int, num_classes: int) -> None:
        super().__init__()
        get_margin(cfg)
        if cfg.iam_beta > 0:
            raise ValueError("head.iam_beta needs every class centre in one place; it is not available with partial_fc")
        if not 0.0 < cfg.sample_rate <= 1.0:
            raise ValueError(f"head.sample_rate must be in (0, 1], got {cfg.sample_rate}")
        self.cfg = cfg
        rank, world_size = _world()
        self.class_start, self.num_local = shard(num_classes, rank, world_size)
        self.num_classes = num_classes
        self.num_sample = max(1, int(cfg.sample_rate * self.num_local))
        self.weight = nn.Parameter(torch.empty(self.num_local, embedding_size).normal_(0, 0.01))
        self.iteration = 0

    def get_extra_state(self) -> dict[str, int]:
        return {"iteration": self.iteration, "class_start": self.class_start, "num_classes": self.num_classes}

    def set_extra_state(self, state: dict[str, int]) -> None:
        if (state["class_start"], state["num_classes"]) != (self.class_start, self.num_classes):
            raise ValueError("this head shard was saved by another rank or for another number of classes")
        self.iteration = int(state["iteration"])

    def _sample(self, local: Tensor) -> tuple[Tensor | None, Tensor]:
        """Centres to use (None: all) and the labels as columns of them (-1: not here)."""
        here = local >= 0
        if self.num_sample >= self.num_local:
            return None, local
        positive = torch.unique(local[here], sorted=True)
        if len(positive) >= self.num_sample:
            index = positive
        else:
            score = torch.rand(self.num_local, device=local.device)
            score[positive] = 2.0  # every class of the batch is kept
            index = torch.topk(score, k=self.num_sample).indices.sort().values
        columns = local.clone()
        columns[here] = torch.searchsorted(index, local[here])
        return index, columns

    def forward(self, embeddings: Tensor, labels: Tensor) -> HeadOutput:
        """embeddings (B, D) and labels (B,) of this rank -> the loss of the gathered (N*B) batch.

        `logits` and `cosine` are (N*B, S): the gathered rows against this rank's sampled centres.
        """
        dtype = torch.promote_types(embeddings.dtype, torch.float32)
        with torch.autocast(embeddings.device.type, enabled=False):
            x = F.normalize(all_gather_with_grad(embeddings.to(dtype)), dim=1)  # (N*B, D)
            gathered = all_gather(labels)  # (N*B,)
            local = gathered - self.class_start
            local = torch.where((local >= 0) & (local < self.num_local), local, torch.full_like(local, -1))
            index, columns = self._sample(local)
            weight = self.weight if index is None else self.weight[index]  # (S, D)
            cosine = (x @ F.normalize(weight.to(dtype), dim=1).T).clamp(-1.0, 1.0)  # (N*B, S)
            rows = (columns >= 0).nonzero()[:, 0]
            margin = get_margin(self.cfg, self.iteration)
            logits = cosine.index_copy(0, rows, margin(cosine[rows], columns[rows])) * self.cfg.scale
            loss = sharded_cross_entropy(logits, columns)
        if self.training:
            self.iteration += 1
        self._last = (cosine.detach(), index, gathered)
        return HeadOutput(loss, logits, cosine)

    @torch.no_grad()
    def num_correct(self, out: HeadOutput, labels: Tensor) -> Tensor:
        """How many of this rank's B samples have their class as the nearest (sampled) centre."""
        cosine, index, gathered = self._last
        if cosine.shape[1]:
            best, column = cosine.max(dim=1)
            ids = column if index is None else index[column]
        else:
            best = torch.full((len(cosine),), -2.0, device=cosine.device)
            ids = torch.zeros(len(cosine), dtype=torch.long, device=cosine.device)
        ids = ids + self.class_start
        rank = _world()[0]
        values, classes = all_gather(best[None]), all_gather(ids[None])  # (N, N*B) each
        winner = classes.gather(0, values.argmax(dim=0, keepdim=True))[0]  # (N*B,)
        rows = slice(rank * len(labels), (rank + 1) * len(labels))
        return (winner[rows] == gathered[rows]).sum()
