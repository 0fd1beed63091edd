"""Held-out discipline: whoever sets a threshold never measures it."""

import dataclasses

import numpy as np
import pytest

from bench.accuracy import NEVER_ENROLLED
from bench.common import ORL_STRANGERS, calibration_people, check_held_out, held_out_sface
from service.vision.models import load_embedder_model
from tests.service.api.test_recognition import STRANGERS


def test_the_benchmark_and_the_tests_use_the_same_strangers() -> None:
    assert {f"orl:s{i}" for i in NEVER_ENROLLED} == set(ORL_STRANGERS) == {f"orl:s{i}" for i in STRANGERS}


def test_sface_was_calibrated_without_the_strangers() -> None:
    manifest, _ = load_embedder_model("builtin:sface")
    people = calibration_people(manifest)
    assert {f"orl:s{i}" for i in range(1, 11)} <= people  # the calibration side is named, person by person
    check_held_out(manifest, ORL_STRANGERS)


def test_the_check_fails_on_a_shared_person_or_an_unnamed_calibration() -> None:
    manifest, _ = load_embedder_model("builtin:sface")
    assert manifest.impostors is not None
    leaked = dataclasses.replace(
        manifest, impostors=dataclasses.replace(manifest.impostors, people=[*manifest.impostors.people, "orl:s12"])
    )
    with pytest.raises(ValueError, match="orl:s12"):
        check_held_out(leaked, ORL_STRANGERS)
    unnamed = dataclasses.replace(
        manifest,
        threshold=dataclasses.replace(manifest.threshold, people=[]),
        impostors=dataclasses.replace(manifest.impostors, people=[]),
    )
    with pytest.raises(ValueError, match="does not say"):
        check_held_out(unnamed, ORL_STRANGERS)


def test_the_benchmarks_sface_is_refused_to_anyone_who_calibrated_it() -> None:
    embedder, impostors = held_out_sface(ORL_STRANGERS)
    assert embedder.manifest.impostors == impostors
    with pytest.raises(ValueError, match=r"orl:s1\b"):
        held_out_sface(["orl:s1", *ORL_STRANGERS])


def test_calibrate_records_its_people_and_keeps_real_pairs_apart() -> None:
    from service.threshold import GRID, one_to_one_threshold
    from training.calibrate import impostor_record, recalibrated_pair_threshold

    rng = np.random.default_rng(0)

    def unit(n: int) -> np.ndarray:
        v = rng.standard_normal((n, 128)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    synthetic, real = unit(300), unit(100)
    owners = np.repeat(np.arange(10), 10)
    people = [f"orl:s{i}" for i in range(1, 11)] + ["dcgan:1001"]
    record = impostor_record(synthetic, real, owners, "test", people=people)
    assert record.people == people
    assert record.pair_tail["n"] == 300 * 100  # the fitted shape: synthetic against real only
    assert record.real_pairs == 100 * 99 // 2 - 10 * 45  # real pairs of different people, kept apart
    assert len(record.counts) == len(record.real_counts) == len(GRID)
    threshold = recalibrated_pair_threshold(record, 1e-3, people)
    assert threshold.people == people and threshold.far == 1e-3
    assert one_to_one_threshold(record, 1e-3) <= threshold.cosine < one_to_one_threshold(record, 1e-3) + 0.005
