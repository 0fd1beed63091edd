"""Backbones: output shapes, parameter counts of the published architectures, the registry."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from training.backbones import BACKBONES, get_model  # noqa: E402
from training.config import BackboneConfig  # noqa: E402


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "embedding_size", "low", "high"),
    [
        ("iresnet50", 512, 43.4e6, 43.8e6),  # insightface reports 43.6M
        ("iresnet100", 512, 65.0e6, 65.3e6),  # 65.2M
        ("mobilefacenet", 128, 0.95e6, 1.05e6),  # the paper's 0.99M at 128-d
    ],
)
def test_parameter_counts_match_the_published_models(name: str, embedding_size: int, low: float, high: float) -> None:
    with torch.device("meta"):  # no memory, no init cost: only shapes matter here
        model = get_model(BackboneConfig(name=name, embedding_size=embedding_size))
    assert low <= count(model) <= high


@pytest.mark.parametrize("name", ["iresnet18", "mobilefacenet"])
def test_forward_maps_faces_to_embeddings(name: str) -> None:
    torch.manual_seed(0)
    model = get_model(BackboneConfig(name=name, embedding_size=64)).eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 64)
    assert torch.isfinite(y).all()
    assert not torch.allclose(y[0], y[1])  # different faces, different embeddings


def test_iresnet_follows_the_arcface_choices() -> None:
    model = get_model(BackboneConfig(name="iresnet18"))
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert (first.kernel_size, first.stride) == ((3, 3), (1, 1))  # input "L"
    block = model.stages[0][0]
    kinds = [type(m).__name__ for m in block.residual]
    assert kinds == ["BatchNorm2d", "Conv2d", "BatchNorm2d", "PReLU", "Conv2d", "BatchNorm2d"]  # block "IR"
    assert block.residual[1].stride == (1, 1)
    assert block.residual[4].stride == (2, 2)
    assert isinstance(model.features, torch.nn.BatchNorm1d)  # output "E": ... FC-BN


def test_zero_init_residual_starts_blocks_as_identity_branches() -> None:
    model = get_model(BackboneConfig(name="iresnet18", zero_init_residual=True))
    assert all(not b.residual[-1].weight.any() for s in model.stages for b in s)


def test_unknown_backbone_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet50'.*iresnet50.*mobilefacenet"):
        get_model(BackboneConfig(name="resnet50"))
    assert {"iresnet18", "iresnet34", "iresnet50", "iresnet100", "mobilefacenet"} <= set(BACKBONES)


@pytest.mark.parametrize("name", ["iresnet18", "mobilefacenet"])
def test_final_fc_and_bn_run_in_fp32_under_autocast(name: str) -> None:
    # insightface casts to fp32 before the last FC and BN: the embedding the margin sees is not rounded to 16 bits.
    torch.manual_seed(0)
    model = get_model(BackboneConfig(name=name, embedding_size=64)).eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
        captured: list[torch.Tensor] = []
        hook = model.fc.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
        model(x)
        hook.remove()
    with torch.no_grad():
        expected = model.features(model.fc(captured[0].float()))  # the same input, FC and BN in fp32
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
