"""Schemathesis hooks for tests/integration/test_contract.py: real face photos for image fields.

A schema can only say "bytes" where the service needs a photo with a face in it, so without
this every enroll the fuzzer sends is refused (422 no_face) and its stateful phase never
reaches an identity it made itself. Here each image field is, half the time, what the schema
drew and otherwise a real photo (ORL s3-s10: s1 and s2 are enrolled by the test itself, and
s11-s20 are the benchmarks' strangers), so enroll answers 201 and the links from enroll lead
to real identities and faces.

Loaded with SCHEMATHESIS_HOOKS=tests.integration.contract_hooks (from the repository root).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import strategies as st

ORL = Path(__file__).resolve().parents[1] / "fixtures" / "orl"
PHOTOS = [(ORL / f"s{person}" / f"{n}.pgm").read_bytes() for person in range(3, 11) for n in range(1, 11)]
IMAGE_FIELDS = ("image", "image_a", "image_b")


@schemathesis.hook
def flatmap_body(ctx: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    if not isinstance(body, dict) or not any(k in body for k in ("images", *IMAGE_FIELDS)):
        return st.just(body)
    photo = st.sampled_from(PHOTOS)
    real: dict[str, st.SearchStrategy[Any]] = {}
    if isinstance(body.get("images"), list):
        real["images"] = st.lists(photo, min_size=1, max_size=3)
    for key in IMAGE_FIELDS:
        if isinstance(body.get(key), bytes | bytearray):
            real[key] = photo
    if not real:
        return st.just(body)
    with_photos = st.fixed_dictionaries(real).map(lambda drawn: {**body, **drawn})
    return st.one_of(st.just(body), with_photos)
