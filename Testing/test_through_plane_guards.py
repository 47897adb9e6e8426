"""Guards of the shipped through-plane models on held-out subjects of two sources (slow).

evaluation/through_plane_cases.py at 4 mm (axial box slices from the 1 mm T2, restored onto the 1 mm grid, scored on
the coronal reformat), the guide check off: the models themselves. Each test prints its margin. Guards: the guided
model at least +2 dB over the cubic B-spline on every subject; the T1 adds at least 0.5 dB over the no-T1 model on
every subject; a moved or foreign T1 leaves the result no worse than the no-T1 model by more than 0.1 dB (the
network itself must not trust a bad guide); a foreign T1 costs at least 0.1 dB against the registered one (the guide
is used).

Guards the shipped weights do not meet are strict expected failures (SHORTFALLS, with the margin measured on the
networks of factor 4 a 4 mm run uses, the guided one shipped on 2026-12-06): they fail the suite as soon as better
weights meet them, so that the mark is removed. All are on the BraTS case, whose native T1 has thick axial slices:
patient26's own T1 made that thick adds less than the 0.5 dB asked there too (bench/thick_t1.py; docs/benchmarks.md,
"What the BraTS case's T1 leaves to gain"). The
library does not leave a user with such a T1 worse off by default: the through-plane guide check
(inference/through_plane_guide_check.py) declines the T1s that cost more than 0.1 dB here, and 'auto' then runs the
model without T1 (docs/benchmarks.md, "The through-plane guide check").
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from CohfTSuperResLib.evaluation.guide_cases import FOREIGN_SOURCE, REGISTERED, Subject, guide_cases, reporting_subjects
from CohfTSuperResLib.evaluation.through_plane_cases import (
    BSPLINE,
    NO_T1,
    evaluate_through_plane,
    THROUGH_PLANE_MOVES,
)
from CohfTSuperResLib.inference.through_plane import network_factor
from CohfTSuperResLib.options import THROUGH_PLANE_SCALE
from CohfTSuperResLib.weights.registry import find_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FACTOR = 4
MIN_GAIN_OVER_BSPLINE_DB = 2.0
MIN_T1_BENEFIT_DB = 0.5
BAD_GUIDE_TOLERANCE_DB = 0.1
MIN_FOREIGN_COST_DB = 0.1
BAD_GUIDES = ("moved 1 mm in x and y", "moved 2 mm in z", "another subject's T1")

BRATS = "brats_gli/BraTS-GLI-00000-000"
SHORTFALLS: dict[tuple, str] = {
    ("gain", BRATS): "+1.75 dB over the B-spline on the other site's case (margin -0.25)",
    ("T1", BRATS): "the T1 adds 0.02 dB on the other site's case (margin -0.48)",
    ("bad guide", BRATS, "moved 1 mm in x and y"): "-0.17 dB against the no-T1 model (margin -0.07)",
    ("bad guide", BRATS, "moved 2 mm in z"): "-0.19 dB against the no-T1 model (margin -0.09)",
    ("bad guide", BRATS, "another subject's T1"): "-0.15 dB against the no-T1 model (margin -0.05)",
}

SUBJECTS = reporting_subjects(DATA)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(len(SUBJECTS) < 2, reason=f"held-out subjects not found under {DATA}")]
NAMES = [subject.name for subject in SUBJECTS]


@pytest.fixture(scope="module")
def psnr():
    """psnr(subject name) -> {case: PSNR dB} at 4 mm, computed once per subject."""
    torch.set_num_threads(2)
    cache: dict[str, dict[str, float]] = {}

    def get(name: str) -> dict[str, float]:
        if name not in cache:
            subject = next(s for s in SUBJECTS if s.name == name)
            foreign = FOREIGN_SOURCE[name]
            guides = guide_cases(subject.read("t1"), subject.read("t2"), Subject(foreign, DATA / foreign).read("t1"),
                                 THROUGH_PLANE_MOVES)
            guided, unguided = (find_model("S", THROUGH_PLANE_SCALE, use_t1, network_factor(FACTOR)).path
                                for use_t1 in (True, False))  # the networks a 4 mm run uses
            metrics = evaluate_through_plane(subject, FACTOR, guides, guided, unguided)
            cache[name] = {case: value["psnr"] for case, value in metrics.items()}
        return cache[name]

    return get


def guarded(guard: str, *axes: list) -> list:
    """Every combination of the axes, the known shortfalls of `guard` marked as strict expected failures."""
    return [pytest.param(*combo, marks=pytest.mark.xfail(strict=True, reason=SHORTFALLS[(guard, *combo)]))
            if (guard, *combo) in SHORTFALLS else pytest.param(*combo) for combo in itertools.product(*axes)]


@pytest.mark.parametrize("name", guarded("gain", NAMES))
def test_gain_over_the_cubic_b_spline(psnr, name):
    result = psnr(name)
    gain = result[REGISTERED] - result[BSPLINE]
    print(f"{name} {FACTOR} mm: {gain:+.3f} dB over the B-spline (margin {gain - MIN_GAIN_OVER_BSPLINE_DB:+.3f})")
    assert gain >= MIN_GAIN_OVER_BSPLINE_DB


@pytest.mark.parametrize("name", guarded("T1", NAMES))
def test_the_t1_adds_detail(psnr, name):
    result = psnr(name)
    benefit = result[REGISTERED] - result[NO_T1]
    print(f"{name} {FACTOR} mm: the T1 adds {benefit:+.3f} dB (margin {benefit - MIN_T1_BENEFIT_DB:+.3f})")
    assert benefit >= MIN_T1_BENEFIT_DB


@pytest.mark.parametrize(("name", "case"), guarded("bad guide", NAMES, BAD_GUIDES))
def test_a_bad_t1_is_not_worse_than_none(psnr, name, case):
    result = psnr(name)
    difference = result[case] - result[NO_T1]
    print(f"{name} {FACTOR} mm, {case}: {difference:+.3f} dB against the no-T1 model "
          f"(margin {difference + BAD_GUIDE_TOLERANCE_DB:+.3f})")
    assert difference >= -BAD_GUIDE_TOLERANCE_DB


@pytest.mark.parametrize("name", NAMES)
def test_a_foreign_t1_costs_something(psnr, name):
    result = psnr(name)
    cost = result[REGISTERED] - result["another subject's T1"]
    print(f"{name} {FACTOR} mm: a foreign T1 costs {cost:.3f} dB (margin {cost - MIN_FOREIGN_COST_DB:+.3f})")
    assert cost >= MIN_FOREIGN_COST_DB
