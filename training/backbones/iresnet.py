"""IResNet, the ArcFace paper's backbone (Deng et al., 2019; insightface `arcface_torch`).

The paper's three choices for 112x112 faces: input "L" (a 3x3 stride-1 first conv, so
the last stage still sees 7x7), block "IR" (BN-Conv-BN-PReLU-Conv-BN with the stride
on the second conv) and output "E" (BN-Dropout-FC-BN to the embedding). Layer
counts and init follow insightface so that its published training recipes apply.
"""

from __future__ import annotations

from torch import Tensor, nn

from training.backbones.embedding import fc_bn_fp32
from training.config import BackboneConfig

LAYERS: dict[str, tuple[int, int, int, int]] = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
}
INPUT_SIZE = 112
FINAL_SIZE = 7  # 112 / 2**4: four stride-2 stages


def _conv3x3(in_c: int, out_c: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_c, out_c, kernel_size=3, stride=stride, padding=1, bias=False)


class IRBlock(nn.Module):
    """BN-Conv-BN-PReLU-Conv-BN, stride on the second conv, plus the (projected) input."""

    def __init__(self, in_c: int, out_c: int, stride: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            nn.BatchNorm2d(in_c, eps=1e-5),
            _conv3x3(in_c, out_c),
            nn.BatchNorm2d(out_c, eps=1e-5),
            nn.PReLU(out_c),
            _conv3x3(out_c, out_c, stride),
            nn.BatchNorm2d(out_c, eps=1e-5),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_c != out_c:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_c, out_c, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_c, eps=1e-5),
            )

    def forward(self, x: Tensor) -> Tensor:
        return self.residual(x) + self.shortcut(x)  # (B, out_c, H/stride, W/stride)


class IResNet(nn.Module):
    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        if cfg.name not in LAYERS:
            raise ValueError(f"unknown IResNet {cfg.name!r}; choose one of: {', '.join(LAYERS)}")
        widths = (64, 128, 256, 512)
        self.stem = nn.Sequential(_conv3x3(3, 64), nn.BatchNorm2d(64, eps=1e-5), nn.PReLU(64))
        stages: list[nn.Module] = []
        in_c = 64
        for width, blocks in zip(widths, LAYERS[cfg.name], strict=True):
            stage = [IRBlock(in_c, width, stride=2)] + [IRBlock(width, width, stride=1) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            in_c = width
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(p=cfg.dropout)
        self.fc = nn.Linear(512 * FINAL_SIZE * FINAL_SIZE, cfg.embedding_size)
        self.features = nn.BatchNorm1d(cfg.embedding_size, eps=1e-5)
        self._init_weights(cfg.zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # insightface fixes the embedding BN's scale at 1: only its shift is learned.
        nn.init.ones_(self.features.weight)
        self.features.weight.requires_grad = False
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, IRBlock):
                    last_bn = m.residual[-1]
                    assert isinstance(last_bn, nn.BatchNorm2d)
                    nn.init.zeros_(last_bn.weight)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)  # (B, 64, 112, 112)
        x = self.stages(x)  # (B, 512, 7, 7)
        x = self.bn(x).flatten(1)  # (B, 512*7*7)
        return fc_bn_fp32(self.fc, self.features, self.dropout(x))  # (B, D), not normalised
