"""The attack loop's output on tiny random networks is pinned: a change that alters protected
pixels (step rules, bounds, objective, EOT draws) shows here and must be deliberate.

The expected photos (``tests/data/pinned_attacks.npz``) were made by ``pinned_cases.cases()`` and
checked equal on the code before the one-house refactor. Float rounding differs a little between
CPUs, so a case passes with at most 0.5 % of values one 8-bit level off and none further.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pinned_cases import cases

EXPECTED = Path(__file__).parent / "data" / "pinned_attacks.npz"


@pytest.fixture(scope="module")
def produced() -> dict[str, np.ndarray]:
    return cases()


@pytest.mark.parametrize("name", ["signed", "signed_linf_momentum", "adam", "eot"])
def test_protected_pixels_are_pinned(produced, name):
    expected = np.load(EXPECTED)[name].astype(np.int16)
    got = produced[name].astype(np.int16)
    difference = np.abs(got - expected)
    assert difference.max() <= 1 and (difference > 0).mean() <= 0.005, (difference.max(), (difference > 0).mean())
    assert np.abs(expected - (np.load(EXPECTED)["clean"].astype(np.int16))).max() > 0  # the attack did move pixels
