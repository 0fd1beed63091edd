"""Held-out discipline: whoever sets a threshold never measures it."""

import dataclasses

import pytest

from bench.accuracy import NEVER_ENROLLED
from bench.common import ORL_STRANGERS, calibration_people, check_held_out
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
