"""Partial FC: one process against the full head, then two CPU ranks under torchrun (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from training.config import HeadConfig  # noqa: E402
from training.heads import MarginHead  # noqa: E402
from training.partial_fc import PartialFC, shard  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_shards_cover_the_classes_once() -> None:
    spans = [shard(11, rank, 4) for rank in range(4)]
    assert spans == [(0, 3), (3, 3), (6, 3), (9, 2)]


def test_one_process_at_sample_rate_1_is_the_full_head() -> None:
    torch.manual_seed(0)
    cfg = HeadConfig(name="arcface", scale=16.0, margin=0.4)
    full = MarginHead(cfg, 8, 7).double()
    part = PartialFC(HeadConfig(name="arcface", scale=16.0, margin=0.4, partial_fc=True), 8, 7).double()
    part.weight.data.copy_(full.weight.data)
    x = torch.randn(5, 8, dtype=torch.float64)
    labels = torch.tensor([0, 6, 2, 2, 5])
    a, b = full(x, labels), part(x, labels)
    torch.testing.assert_close(b.loss, a.loss, rtol=1e-12, atol=0)
    a.loss.backward()
    b.loss.backward()
    torch.testing.assert_close(part.weight.grad, full.weight.grad, rtol=1e-10, atol=1e-14)
    assert part.num_correct(b, labels) == full.num_correct(a, labels)


def test_sampling_keeps_every_class_of_the_batch_and_trains_only_the_sampled() -> None:
    torch.manual_seed(0)
    part = PartialFC(HeadConfig(scale=16.0, margin=0.3, partial_fc=True, sample_rate=0.1), 8, 100).double()
    labels = torch.tensor([3, 50, 97])
    out = part(torch.randn(3, 8, dtype=torch.float64), labels)
    assert out.cosine.shape == (3, 10)  # 10% of 100 centres
    out.loss.backward()
    touched = (part.weight.grad.abs().sum(dim=1) > 0).nonzero()[:, 0].tolist()
    assert len(touched) == 10 and {3, 50, 97} <= set(touched)


def test_iam_and_a_sample_rate_without_partial_fc_are_refused() -> None:
    with pytest.raises(ValueError, match="partial_fc"):
        PartialFC(HeadConfig(partial_fc=True, iam_beta=1.0), 8, 10)
    with pytest.raises(ValueError, match="partial_fc"):
        MarginHead(HeadConfig(sample_rate=0.5), 8, 10)


def test_two_ranks_match_the_full_head_and_resume_exactly(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += [str(Path(__file__).with_name("partial_fc_ranks.py")), str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [found["classes"] for found in ranks] == [5, 5]  # counted on rank 0 only, shared
    for found in ranks:
        for name, head in found["head"].items():
            assert head["loss"][0] == pytest.approx(head["loss"][1], rel=1e-12), name  # same loss at rate 1
            assert head["weight_grad_error"] < 1e-12, name
            assert head["embedding_grad_error"] < 1e-12, name
            assert head["correct"][0] == head["correct"][1], name
    main, other = ranks[0]["training"], ranks[1]["training"]
    assert sorted(main["full"], key=int) == ["1", "2", "3", "4", "5", "6"]
    assert main["resumed"] == main["full"]  # mid-epoch resume with sharded centres, bit for bit
    assert other["shards"] == ["checkpoint_00000003.head1of2.pt", "checkpoint_00000006.head1of2.pt"]
    assert main["centres_sum"] != other["centres_sum"]  # not broadcast or averaged by DDP
