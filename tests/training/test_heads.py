"""Each margin against a plain per-sample `math` reference at known angles, in fp32 and fp64."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

torch = pytest.importorskip("torch")

from training.config import HeadConfig  # noqa: E402
from training.heads import (  # noqa: E402
    MarginHead,
    arcface_margin,
    combined_margin,
    cosface_margin,
    get_margin,
    iam_centre_penalty,
    iam_penalty,
    softmax_margin,
    sphereface_lambda,
    sphereface_margin,
)

# Covers theta + m > pi for m = 0.5 (2.8 and 3.1), and every SphereFace segment k = 0..3 for m = 4.
ANGLES = (0.1, 1.0, 2.0, 2.8, 3.1)
TOLERANCE = {torch.float32: 2e-5, torch.float64: 1e-12}


def ref_arcface(theta: float, m: float, easy_margin: bool = False) -> float:
    if easy_margin:
        return math.cos(theta + m) if math.cos(theta) > 0 else math.cos(theta)
    if theta + m <= math.pi:
        return math.cos(theta + m)
    return math.cos(theta) - m * math.sin(m)


def ref_cosface(theta: float, m: float) -> float:
    return math.cos(theta) - m


def ref_combined(theta: float, m1: float, m2: float, m3: float) -> float:
    if m1 * theta + m2 <= math.pi:
        return math.cos(m1 * theta + m2) - m3
    if m1 == 1.0:  # ArcFace's fallback, as insightface's CombinedMarginLoss
        return math.cos(theta) - m2 * math.sin(m2) - m3
    theta_max = (math.pi - m2) / m1
    return math.cos(theta) - math.cos(theta_max) - 1 - m3


def ref_sphereface(theta: float, m: int, lam: float) -> float:
    k = math.floor(m * theta / math.pi)
    psi = (-1) ** k * math.cos(m * theta) - 2 * k
    return (lam * math.cos(theta) + psi) / (1 + lam)


CASES: list[tuple[str, Callable[..., torch.Tensor], Callable[[float], float]]] = [
    ("softmax", softmax_margin, math.cos),
    ("cosface", lambda c, y: cosface_margin(c, y, m=0.35), lambda t: ref_cosface(t, 0.35)),
    ("arcface", lambda c, y: arcface_margin(c, y, m=0.5), lambda t: ref_arcface(t, 0.5)),
    (
        "arcface-easy",
        lambda c, y: arcface_margin(c, y, m=0.5, easy_margin=True),
        lambda t: ref_arcface(t, 0.5, easy_margin=True),
    ),
    (
        "combined",
        lambda c, y: combined_margin(c, y, m1=0.9, m2=0.4, m3=0.15),
        lambda t: ref_combined(t, 0.9, 0.4, 0.15),
    ),
    (
        "combined-m1-is-1",
        lambda c, y: combined_margin(c, y, m1=1.0, m2=0.4, m3=0.15),
        lambda t: ref_combined(t, 1.0, 0.4, 0.15),
    ),
    (
        "combined-fallback",
        lambda c, y: combined_margin(c, y, m1=1.2, m2=0.3, m3=0.1),
        lambda t: ref_combined(t, 1.2, 0.3, 0.1),
    ),
    ("sphereface", lambda c, y: sphereface_margin(c, y, m=4, lam=5.0), lambda t: ref_sphereface(t, 4, 5.0)),
    ("sphereface-pure", lambda c, y: sphereface_margin(c, y, m=4, lam=0.0), lambda t: ref_sphereface(t, 4, 0.0)),
]


def cosines_at(
    angles: tuple[float, ...], dtype: torch.dtype, num_classes: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C) cosines whose target column (a different one per row) is cos(angle)."""
    generator = torch.Generator().manual_seed(0)
    cosine = torch.rand(len(angles), num_classes, generator=generator, dtype=torch.float64) * 2 - 1
    labels = torch.arange(len(angles)) % num_classes
    cosine[torch.arange(len(angles)), labels] = torch.tensor([math.cos(a) for a in angles], dtype=torch.float64)
    return cosine.to(dtype), labels


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("name", "margin", "reference"), CASES, ids=[c[0] for c in CASES])
def test_margin_matches_per_sample_reference(
    name: str, margin: Callable[..., torch.Tensor], reference: Callable[[float], float], dtype: torch.dtype
) -> None:
    cosine, labels = cosines_at(ANGLES, dtype)
    out = margin(cosine, labels)
    assert out.dtype == dtype
    for row, (theta, label) in enumerate(zip(ANGLES, labels.tolist(), strict=True)):
        assert out[row, label].item() == pytest.approx(reference(theta), abs=TOLERANCE[dtype]), (name, theta)
        others = [c for c in range(cosine.shape[1]) if c != label]
        assert torch.equal(out[row, others], cosine[row, others]), "a margin must touch only the target column"


def test_fallback_region_is_exercised_and_differs_from_the_raw_formula() -> None:
    # Without the fallback cos(theta + m) turns back up past pi - m; the reference must not.
    assert ref_arcface(3.1, 0.5) < ref_arcface(2.8, 0.5)
    assert math.cos(3.1 + 0.5) > math.cos(2.8 + 0.5)


@pytest.mark.parametrize(
    "margin",
    [
        lambda c, y: arcface_margin(c, y, m=0.5),
        lambda c, y: combined_margin(c, y, m1=1.2, m2=0.3, m3=0.1),
        lambda c, y: combined_margin(c, y, m1=1.0, m2=0.5, m3=0.0),
        lambda c, y: sphereface_margin(c, y, m=4, lam=0.0),
        lambda c, y: cosface_margin(c, y, m=0.35),
    ],
    ids=["arcface", "combined", "combined-as-arcface", "sphereface", "cosface"],
)
def test_target_logit_decreases_monotonically_over_0_to_pi(margin: Callable[..., torch.Tensor]) -> None:
    angles = torch.linspace(0.01, math.pi - 0.01, 2000, dtype=torch.float64)
    cosine = torch.cos(angles)[:, None]
    target = margin(cosine, torch.zeros(len(angles), dtype=torch.long))[:, 0]
    assert bool((target[1:] < target[:-1]).all())


def test_combined_margin_reduces_to_arcface_and_cosface() -> None:
    cosine, labels = cosines_at(ANGLES, torch.float64)  # 2.8 and 3.1 lie past pi - m: the fallback too
    assert torch.equal(combined_margin(cosine, labels, 1.0, 0.5, 0.0), arcface_margin(cosine, labels, 0.5))
    cosine, labels = cosines_at(ANGLES, torch.float64)
    assert torch.allclose(combined_margin(cosine, labels, 1.0, 0.0, 0.35), cosface_margin(cosine, labels, 0.35))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_margin_gradients(case: tuple[str, Callable[..., torch.Tensor], Callable[[float], float]]) -> None:
    _, margin, _ = case
    cosine, labels = cosines_at(ANGLES, torch.float64)
    cosine.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda c: margin(c, labels), (cosine,))


def test_iam_penalty_matches_reference_and_skips_own_class() -> None:
    cosine, labels = cosines_at(ANGLES, torch.float64)
    expected = 0.0
    for row, label in enumerate(labels.tolist()):
        others = [cosine[row, j].item() for j in range(cosine.shape[1]) if j != label]
        expected += sum(((1 + s) / 2) ** 2 for s in others) / len(others)
    expected /= len(ANGLES)
    assert iam_penalty(cosine, labels).item() == pytest.approx(expected, abs=1e-12)
    moved = cosine.clone()
    moved[torch.arange(len(ANGLES)), labels] = 0.999  # the own class must not count
    assert iam_penalty(moved, labels).item() == pytest.approx(expected, abs=1e-12)
    cosine.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda c: iam_penalty(c, labels), (cosine,))


def test_iam_gradient_is_larger_for_closer_classes() -> None:
    cosine = torch.tensor([[1.0, 0.8, 0.1, -0.5]], dtype=torch.float64, requires_grad=True)
    iam_penalty(cosine, torch.tensor([0])).backward()
    grad = cosine.grad
    assert grad is not None
    assert grad[0, 1] > grad[0, 2] > grad[0, 3] > 0


@pytest.mark.parametrize(
    ("name", "anchor"),
    [
        ("softmax", "samples"),
        ("sphereface", "centres"),
        ("cosface", "samples"),
        ("arcface", "centres"),
        ("combined", "samples"),
    ],
)
def test_head_loss_gradients_in_fp64(name: str, anchor: str) -> None:
    torch.manual_seed(0)
    cfg = HeadConfig(name=name, scale=8.0, margin=4 if name == "sphereface" else 0.3, iam_beta=0.5, iam_anchor=anchor)
    head = MarginHead(cfg, embedding_size=6, num_classes=5).double()
    embeddings = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    weight = head.weight.detach().clone().requires_grad_(True)
    labels = torch.tensor([0, 1, 3, 3])
    head.eval()

    def loss(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(head, {"weight": w}, (x, labels)).loss

    assert loss(embeddings, weight).item() > 0
    assert torch.autograd.gradcheck(loss, (embeddings, weight))


def test_head_logits_are_scaled_cosines_with_the_margin() -> None:
    torch.manual_seed(0)
    head = MarginHead(HeadConfig(name="cosface", scale=30.0, margin=0.35), embedding_size=8, num_classes=3)
    x = torch.randn(5, 8)
    labels = torch.tensor([0, 1, 2, 0, 1])
    out = head(x, labels)
    w = head.weight
    cosine = torch.nn.functional.normalize(x) @ torch.nn.functional.normalize(w).T
    assert torch.allclose(out.cosine, cosine, atol=1e-6)
    expected = cosine.clone()
    expected[torch.arange(5), labels] -= 0.35
    assert torch.allclose(out.logits, 30.0 * expected, atol=1e-5)
    assert out.loss.item() == pytest.approx(torch.nn.functional.cross_entropy(30.0 * expected, labels).item(), rel=1e-5)


def test_sphereface_lambda_anneals_and_resumes_with_the_head() -> None:
    cfg = HeadConfig(name="sphereface", margin=4)
    assert sphereface_lambda(0, cfg) == 1000.0
    assert sphereface_lambda(10**6, cfg) == cfg.lambda_min
    head = MarginHead(cfg, embedding_size=4, num_classes=3)
    for _ in range(3):
        head(torch.randn(2, 4), torch.tensor([0, 1]))
    restored = MarginHead(cfg, embedding_size=4, num_classes=3)
    restored.load_state_dict(head.state_dict())
    assert restored.iteration == head.iteration == 3


def test_unknown_head_name_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown head 'arcfase'.*arcface"):
        get_margin(HeadConfig(name="arcfase"))
    with pytest.raises(ValueError, match="integer margin"):
        MarginHead(HeadConfig(name="sphereface", margin=0.5), embedding_size=4, num_classes=3)


def test_margin_is_applied_in_fp32_under_autocast() -> None:
    # Under mixed precision the cosines would be bf16/fp16 (about 3 significant digits): a
    # cosine of 0.999 and the margin on it would round away. The head computes them in fp32.
    torch.manual_seed(0)
    head = MarginHead(HeadConfig(name="arcface", scale=64.0, margin=0.5), embedding_size=16, num_classes=7)
    x = torch.randn(5, 16)
    labels = torch.tensor([0, 1, 2, 3, 6])
    reference = head(x, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = head(x.bfloat16(), labels)
    assert mixed.logits.dtype == mixed.cosine.dtype == torch.float32
    assert torch.allclose(mixed.cosine, reference.cosine, atol=1e-2)  # the input itself was rounded to bf16
    x16 = x.bfloat16().float()
    assert torch.allclose(mixed.logits, head(x16, labels).logits, atol=1e-4)


def test_iam_centre_form_pull_per_pair_does_not_depend_on_the_class_count() -> None:
    # Class 0 (in the batch) and class 1 at 0.6 rad; every other centre opposite class 0, where
    # the penalty and its gradient are zero. The pull on class 1 must be the same at C = 3 and C = 300.
    def pull_on_class_1(num_classes: int, form: str) -> torch.Tensor:
        w = torch.zeros(num_classes, 3, dtype=torch.float64)
        w[0, 0] = 1.0
        w[1, :2] = torch.tensor([math.cos(0.6), math.sin(0.6)], dtype=torch.float64)
        w[2:, 0] = -1.0
        w.requires_grad_(True)
        labels = torch.tensor([0, 0])
        if form == "centres":
            iam_centre_penalty(w, torch.unique(labels)).backward()
        else:
            iam_penalty(w[labels] @ w.T, labels).backward()
        assert w.grad is not None
        return w.grad[1]

    torch.testing.assert_close(pull_on_class_1(3, "centres"), pull_on_class_1(300, "centres"), rtol=1e-12, atol=0)
    expected = (1 + math.cos(0.6)) / 2  # d/dcos of ((1 + cos) / 2)^2, one anchor
    assert pull_on_class_1(3, "centres")[0].item() == pytest.approx(expected, rel=1e-12)
    # The samples form averages over the C - 1 others: its pull shrinks ~1/C.
    ratio = pull_on_class_1(3, "samples").norm() / pull_on_class_1(300, "samples").norm()
    assert ratio.item() == pytest.approx(299 / 2, rel=1e-9)


def test_iam_defaults_to_the_published_centre_form() -> None:
    assert HeadConfig().iam_anchor == "centres"
