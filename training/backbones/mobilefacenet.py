"""MobileFaceNet (Chen et al., 2018): about 1M parameters, for CPU and edge devices.

MobileNetV2 inverted-residual bottlenecks with PReLU, and a global depthwise
convolution (GDConv 7x7) instead of global average pooling: a face's centre and
its border carry different information, which an average would mix.
"""

from __future__ import annotations

from torch import Tensor, nn

from training.backbones.embedding import fc_bn_fp32
from training.config import BackboneConfig

# (expansion t, output channels c, repeats n, first stride s), from the paper's Table 1.
BOTTLENECKS: tuple[tuple[int, int, int, int], ...] = (
    (2, 64, 5, 2),
    (4, 128, 1, 2),
    (2, 128, 6, 1),
    (4, 128, 1, 2),
    (2, 128, 2, 1),
)


def _conv_bn(
    in_c: int, out_c: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True, padding: int | None = None
) -> nn.Sequential:
    padding = kernel // 2 if padding is None else padding
    layers: list[nn.Module] = [
        nn.Conv2d(in_c, out_c, kernel, stride=stride, padding=padding, groups=groups, bias=False),
        nn.BatchNorm2d(out_c),
    ]
    if act:
        layers.append(nn.PReLU(out_c))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """1x1 expand, 3x3 depthwise (stride s), 1x1 linear projection; residual when shapes match."""

    def __init__(self, in_c: int, out_c: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = in_c * expansion
        self.body = nn.Sequential(
            _conv_bn(in_c, hidden, 1),
            _conv_bn(hidden, hidden, 3, stride=stride, groups=hidden),
            _conv_bn(hidden, out_c, 1, act=False),
        )
        self.residual = stride == 1 and in_c == out_c

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)  # (B, out_c, H/stride, W/stride)
        return x + out if self.residual else out


class MobileFaceNet(nn.Module):
    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            _conv_bn(3, 64, 3, stride=2),  # (B, 64, 56, 56)
            _conv_bn(64, 64, 3, groups=64),  # depthwise
        ]
        in_c = 64
        for expansion, out_c, repeats, stride in BOTTLENECKS:
            for i in range(repeats):
                layers.append(Bottleneck(in_c, out_c, expansion, stride if i == 0 else 1))
                in_c = out_c
        layers.append(_conv_bn(in_c, 512, 1))  # (B, 512, 7, 7)
        layers.append(_conv_bn(512, 512, 7, groups=512, act=False, padding=0))  # GDConv: (B, 512, 1, 1)
        self.body = nn.Sequential(*layers)
        self.dropout = nn.Dropout(p=cfg.dropout)
        self.fc = nn.Linear(512, cfg.embedding_size, bias=False)
        self.features = nn.BatchNorm1d(cfg.embedding_size)
        self._init_weights(cfg.zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck) and m.residual:
                    projection = m.body[-1]
                    assert isinstance(projection, nn.Sequential)
                    last_bn = projection[1]
                    assert isinstance(last_bn, nn.BatchNorm2d)
                    nn.init.zeros_(last_bn.weight)

    def forward(self, x: Tensor) -> Tensor:
        x = self.body(x).flatten(1)  # (B, 512)
        return fc_bn_fp32(self.fc, self.features, self.dropout(x))  # (B, D), not normalised
