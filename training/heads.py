"""Margin heads: class centres, a margin on the target cosine, a scale, cross-entropy.

Each margin is a pure function `(cosine (B, C), labels (B,)) -> cosine (B, C)` in
radians that changes only the target column. `MarginHead` owns the class centres
`W (C, D)`, computes `cos = normalize(x) @ normalize(W).T`, applies the margin,
scales by `s` and returns the loss: cross-entropy plus, when `iam_beta > 0`, the
inter-class angular margin (IAM) term.

Angles near 0 or pi make d(theta)/d(cos) infinite, so the functions that need theta
clamp the cosine to `[-1 + EPS, 1 - EPS]` before `acos`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.config import HeadConfig

EPS = 1e-7

Margin = Callable[[Tensor, Tensor], Tensor]


def _with_target(cosine: Tensor, labels: Tensor, target: Tensor) -> Tensor:
    """`cosine` with column `labels[i]` of row i replaced by `target[i]` (out of place, autograd-safe)."""
    return cosine.scatter(1, labels[:, None], target[:, None])


def _target(cosine: Tensor, labels: Tensor) -> Tensor:
    return cosine.gather(1, labels[:, None])[:, 0]


def _theta(cos: Tensor) -> Tensor:
    return torch.acos(cos.clamp(-1 + EPS, 1 - EPS))


def softmax_margin(cosine: Tensor, labels: Tensor) -> Tensor:
    """Normalised softmax: no margin, the head only scales the cosines."""
    del labels  # every margin has the same signature; this one ignores the labels
    return cosine


def cosface_margin(cosine: Tensor, labels: Tensor, m: float) -> Tensor:
    """CosFace / AM-softmax: cos(theta_y) - m."""
    return _with_target(cosine, labels, _target(cosine, labels) - m)


def arcface_margin(cosine: Tensor, labels: Tensor, m: float, easy_margin: bool = False) -> Tensor:
    """ArcFace: cos(theta_y + m).

    cos(theta + m) stops decreasing once theta + m > pi, which would reward a target
    angle growing past pi - m. There the target becomes cos(theta) - m * sin(m)
    (insightface's `th`/`mm`), which keeps decreasing in theta. With `easy_margin`
    the margin applies only when theta < pi/2 and the cosine is left as it is beyond.
    """
    cos_t = _target(cosine, labels)
    sin_t = torch.sqrt((1.0 - cos_t * cos_t).clamp_min(1e-12))
    with_margin = cos_t * math.cos(m) - sin_t * math.sin(m)  # cos(theta + m), without acos
    if easy_margin:
        target = torch.where(cos_t > 0, with_margin, cos_t)
    else:
        target = torch.where(cos_t > math.cos(math.pi - m), with_margin, cos_t - m * math.sin(m))
    return _with_target(cosine, labels, target)


def combined_margin(cosine: Tensor, labels: Tensor, m1: float, m2: float, m3: float) -> Tensor:
    """Combined margin: cos(m1 * theta + m2) - m3 (SphereFace, ArcFace and CosFace in one).

    Past theta_max = (pi - m2) / m1 the curve would turn back up. With m1 = 1 the
    target there is ArcFace's own fallback cos(theta) - m2 * sin(m2) - m3, so (1, m, 0)
    is ArcFace exactly, as in insightface's CombinedMarginLoss. Otherwise it becomes
    cos(theta) - cos(theta_max) - 1 - m3, which meets the curve at theta_max (value
    -1 - m3) and keeps decreasing.
    """
    if m1 == 1.0:
        return (
            cosface_margin(arcface_margin(cosine, labels, m2), labels, m3) if m3 else arcface_margin(cosine, labels, m2)
        )
    cos_t = _target(cosine, labels)
    theta = _theta(cos_t)
    theta_max = (math.pi - m2) / m1
    target = torch.where(
        theta <= theta_max,
        torch.cos(m1 * theta + m2) - m3,
        cos_t - math.cos(min(theta_max, math.pi)) - 1.0 - m3,
    )
    return _with_target(cosine, labels, target)


def sphereface_psi(theta: Tensor, m: int) -> Tensor:
    """psi(theta) = (-1)^k cos(m theta) - 2k for theta in [k pi/m, (k+1) pi/m]: monotonic on [0, pi]."""
    k = torch.floor(theta * m / math.pi).clamp(0, m - 1)
    sign = 1.0 - 2.0 * torch.remainder(k, 2)
    return sign * torch.cos(m * theta) - 2.0 * k


def sphereface_margin(cosine: Tensor, labels: Tensor, m: int, lam: float) -> Tensor:
    """SphereFace (A-softmax) target (lam * cos(theta) + psi(theta)) / (1 + lam).

    `lam` is annealed from large (plain softmax) to small as training goes on
    (`sphereface_lambda`); without the blend A-softmax rarely converges.
    """
    cos_t = _target(cosine, labels)
    target = (lam * cos_t + sphereface_psi(_theta(cos_t), m)) / (1.0 + lam)
    return _with_target(cosine, labels, target)


def sphereface_lambda(iteration: int, cfg: HeadConfig) -> float:
    return max(cfg.lambda_min, cfg.lambda_base * (1.0 + cfg.lambda_gamma * iteration) ** (-cfg.lambda_power))


def iam_penalty(similarity: Tensor, labels: Tensor) -> Tensor:
    """Inter-class angular margin term, samples form: mean over anchors of the MEAN of
    ((1 + cos) / 2)^2 over the OTHER class centres.

    `similarity (A, C)` holds cosines of A anchors (samples, or class centres) to all C
    centres; `labels (A,)` names each anchor's own class, which is left out. The
    gradient with respect to a cosine is (1 + cos) / 2: it grows as the angle to
    another class shrinks, so the closest classes are pushed apart hardest and classes
    already at pi are left alone. Averaging over the C - 1 others makes each pair's pull
    shrink as 1 / (C - 1): a beta tuned at one class count is weaker at a larger one.
    """
    others = torch.ones_like(similarity, dtype=torch.bool).scatter(1, labels[:, None], False)
    penalty = ((1.0 + similarity) / 2.0).square()
    per_anchor = (penalty * others).sum(dim=1) / others.sum(dim=1).clamp_min(1)
    return per_anchor.mean()


def iam_centre_penalty(centres: Tensor, classes: Tensor) -> Tensor:
    """The IAM term in its published shape (Sun et al., 2020): a penalty on the angles between
    class centres, heavier for smaller angles.

    `centres (C, D)` are the unit class centres and `classes (A,)` the distinct classes
    of the batch, the anchors. For each anchor the SUM over the other C - 1 centres of
    ((1 + cos) / 2)^2, averaged over the anchors. The normalisation is this project's
    choice: a pair's pull is beta * (1 + cos) / 2 / A whatever C is, so a beta carries over
    between class counts (the total grows with C; centres spread evenly feel little of it).
    """
    similarity = centres[classes] @ centres.T  # (A, C)
    others = torch.ones_like(similarity, dtype=torch.bool).scatter(1, classes[:, None], False)
    penalty = ((1.0 + similarity) / 2.0).square()
    return (penalty * others).sum(dim=1).mean()


def _softmax(cfg: HeadConfig, iteration: int) -> Margin:
    return softmax_margin


def _sphereface(cfg: HeadConfig, iteration: int) -> Margin:
    return partial(sphereface_margin, m=int(cfg.margin), lam=sphereface_lambda(iteration, cfg))


def _cosface(cfg: HeadConfig, iteration: int) -> Margin:
    return partial(cosface_margin, m=cfg.margin)


def _arcface(cfg: HeadConfig, iteration: int) -> Margin:
    return partial(arcface_margin, m=cfg.margin, easy_margin=cfg.easy_margin)


def _combined(cfg: HeadConfig, iteration: int) -> Margin:
    m1, m2, m3 = cfg.combined
    return partial(combined_margin, m1=m1, m2=m2, m3=m3)


MARGINS: dict[str, Callable[[HeadConfig, int], Margin]] = {
    "softmax": _softmax,
    "sphereface": _sphereface,
    "cosface": _cosface,
    "arcface": _arcface,
    "combined": _combined,
}


def get_margin(cfg: HeadConfig, iteration: int = 0) -> Margin:
    """The margin function named by `cfg.name`, at training iteration `iteration`."""
    if cfg.name not in MARGINS:
        raise ValueError(f"unknown head {cfg.name!r}; choose one of: {', '.join(MARGINS)}")
    if cfg.name == "sphereface" and (cfg.margin != int(cfg.margin) or cfg.margin < 1):
        raise ValueError(f"sphereface needs an integer margin >= 1, got {cfg.margin}")
    return MARGINS[cfg.name](cfg, iteration)


class HeadOutput(NamedTuple):
    loss: Tensor  # () cross-entropy (+ beta * IAM)
    logits: Tensor  # (B, C) scaled, with the margin on the target column
    cosine: Tensor  # (B, C) without the margin: its argmax is the prediction


class MarginHead(nn.Module):
    """Class centres `weight (C, D)` and a margin loss over normalised features."""

    def __init__(self, cfg: HeadConfig, embedding_size: int, num_classes: int) -> None:
        super().__init__()
        get_margin(cfg)  # fail at construction on an unknown name, not at the first step
        if cfg.sample_rate != 1.0:
            raise ValueError("head.sample_rate applies to head.partial_fc = true only")
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size).normal_(0, 0.01))
        self.iteration = 0  # training steps taken; the SphereFace lambda follows it

    def forward(self, embeddings: Tensor, labels: Tensor) -> HeadOutput:
        # Margins are computed in at least fp32 even under autocast: fp16 cosines near 1 lose the margin.
        dtype = torch.promote_types(embeddings.dtype, torch.float32)
        with torch.autocast(embeddings.device.type, enabled=False):
            x = F.normalize(embeddings.to(dtype), dim=1)  # (B, D)
            w = F.normalize(self.weight.to(dtype), dim=1)  # (C, D)
            cosine = (x @ w.T).clamp(-1.0, 1.0)  # (B, C)
            margin = get_margin(self.cfg, self.iteration)
            logits = margin(cosine, labels) * self.cfg.scale
            loss = F.cross_entropy(logits, labels)
            if self.cfg.iam_beta > 0:
                loss = loss + self.cfg.iam_beta * self._iam(cosine, w, labels)
        if self.training:
            self.iteration += 1
        return HeadOutput(loss, logits, cosine)

    @torch.no_grad()
    def num_correct(self, out: HeadOutput, labels: Tensor) -> Tensor:
        """How many samples have their own class as the nearest centre."""
        return (out.cosine.argmax(dim=1) == labels).sum()

    # The iteration count travels in `state_dict`, so a resumed run anneals from where it stopped.
    def get_extra_state(self) -> dict[str, int]:
        return {"iteration": self.iteration}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.iteration = int(state["iteration"])

    def _iam(self, cosine: Tensor, w: Tensor, labels: Tensor) -> Tensor:
        if self.cfg.iam_anchor == "samples":
            return iam_penalty(cosine, labels)
        return iam_centre_penalty(w, torch.unique(labels))  # the batch's classes as anchors, not all C
