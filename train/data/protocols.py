"""The AU / emotion label sets of the paper's benchmarks (which labels each dataset evaluates)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from train.data.sample import au_mask

BP4D_DETECTION_AUS = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)
BP4D_INTENSITY_AUS = (6, 10, 12, 14, 17)
DISFA_DETECTION_AUS = (1, 2, 4, 6, 9, 12, 25, 26)
DISFA_INTENSITY_AUS = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)
DISFA_OCCURRENCE_THRESHOLD = 2  # occurrence = intensity >= 2 (A-level is not counted)


@dataclass(frozen=True)
class Protocol:
    """Which labels a dataset is trained and evaluated on."""

    name: str
    detection_aus: tuple[int, ...] = ()
    intensity_aus: tuple[int, ...] = ()
    emotions: bool = False

    @property
    def detection_mask(self) -> np.ndarray:
        return au_mask(self.detection_aus)

    @property
    def intensity_mask(self) -> np.ndarray:
        return au_mask(self.intensity_aus)


PROTOCOLS: dict[str, Protocol] = {
    "bp4d": Protocol("bp4d", BP4D_DETECTION_AUS, BP4D_INTENSITY_AUS),
    "bp4d+": Protocol("bp4d+", BP4D_DETECTION_AUS, BP4D_INTENSITY_AUS),
    "disfa": Protocol("disfa", DISFA_DETECTION_AUS, DISFA_INTENSITY_AUS),
    "affectnet": Protocol("affectnet", emotions=True),
    "rafdb": Protocol("rafdb", emotions=True),
}


def protocol(name: str) -> Protocol:
    key = name.lower().replace("_", "").replace("-", "")
    key = {"bp4dplus": "bp4d+", "raf": "rafdb", "rafdbbasic": "rafdb"}.get(key, key)
    if key not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; expected one of {sorted(PROTOCOLS)}")
    return PROTOCOLS[key]
