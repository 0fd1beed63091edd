"""The last two layers every backbone shares: FC then BN, in fp32 even under autocast."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def fc_bn_fp32(fc: nn.Module, features: nn.Module, x: Tensor) -> Tensor:
    """`features(fc(x))` for x (B, F) -> (B, D), run in fp32 as insightface's backbones do.

    Under mixed precision the embedding would otherwise come out of an fp16 FC, and its
    rounding (about 1e-3 relative) lands directly in the cosines the margin works on.
    Outside autocast (evaluation, ONNX export) this is the plain composition.
    """
    if not torch.is_autocast_enabled(x.device.type):
        return features(fc(x))
    with torch.autocast(x.device.type, enabled=False):
        return features(fc(x.float()))
