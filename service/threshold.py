"""How the open-set decision threshold is chosen.

`FixedThreshold` is a cosine threshold that does not depend on the gallery: from
the settings, or the model manifest's calibrated 1:1 threshold.
"""

from __future__ import annotations

from typing import Protocol


class ThresholdPolicy(Protocol):
    def threshold(self, gallery_size: int) -> tuple[float, float | None, str]:
        """(cosine threshold, expected false-positive identification rate or None, source)."""
        ...

    def pair_threshold(self) -> float:
        """The 1:1 verification threshold."""
        ...


class FixedThreshold:
    def __init__(self, value: float, source: str) -> None:
        self.value = value
        self.source = source

    def threshold(self, gallery_size: int) -> tuple[float, float | None, str]:
        return self.value, None, self.source

    def pair_threshold(self) -> float:
        return self.value
