"""Guards of the shipped guided models on held-out subjects never used for training or selection (open_ms
mni/patient26 and BraTS-GLI-00000-000, another site and scanner): the network itself, its T1 as distributed,
moved, or another subject's, against bicubic and the shipped no-T1 model of the same scale.

Every 8th slice of each volume (evaluation/guide_cases.py: each slice gets exactly a full run's result); the model
card's tables use every 4th (bench/guide_robustness.py). Each test prints its margin. The gain over bicubic is also
guarded for the self-ensemble of 4 copies (inference/self_ensemble.py), the option that trades time for quality.

The guards the shipped weights do not meet yet are strict expected failures (SHORTFALLS, with the margin measured
on the weights of 2026-12-06): they fail the suite as soon as a better model meets them, so that the mark is removed.
Both are x4 gains over bicubic on the BraTS case, where the no-T1 models gain as much as on patient26 and the T1
adds little: it agrees with its T2 in fine structure about as little as patient26's own T1 moved 1 mm, which then adds
as little, and no translation of it helps (bench/guide_agreement.py, bench/guide_shift_landscape.py, bench/thick_t1.py;
docs/benchmarks.md, "Is the BraTS T1 off, or does it hold little the T2 shares?").
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from CohfTSuperResLib.evaluation.guide_cases import (
    BICUBIC,
    FOREIGN_SOURCE,
    MOVED_1MM,
    NO_T1,
    REGISTERED,
    Subject,
    evaluate_subject,
    guide_cases,
    reporting_subjects,
)
from CohfTSuperResLib.options import SCALES
from CohfTSuperResLib.weights.registry import find_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
EVERY = 8
FOREIGN = "another subject's T1"
MIN_GAIN_OVER_BICUBIC_DB = 3.0
NO_T1_TOLERANCE_DB = 0.05  # the guided model may not be worse than the no-T1 model by more
MIN_MEAN_T1_BENEFIT_DB = {3: 0.5, 4: 0.5}
MIN_FOREIGN_COST_DB = 0.3
ENSEMBLE_COPIES = 4

BRATS = "brats_gli/BraTS-GLI-00000-000"
SHORTFALLS = {
    ("gain", BRATS, 4): "+2.45 dB over bicubic on the other site's case (margin -0.55)",
    ("ensemble gain", BRATS, 4): "+2.55 dB over bicubic on the other site's case (margin -0.45)",
}

SUBJECTS = reporting_subjects(DATA)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(len(SUBJECTS) < 2, reason=f"held-out subjects not found under {DATA}")]


@pytest.fixture(scope="module")
def psnr():
    """psnr(subject name, scale) -> {case: PSNR dB}, computed once per subject and scale."""
    torch.set_num_threads(2)
    cache: dict[tuple[str, int], dict[str, float]] = {}

    def get(name: str, scale: int) -> dict[str, float]:
        if (name, scale) not in cache:
            subject = next(s for s in SUBJECTS if s.name == name)
            foreign = FOREIGN_SOURCE[name]
            guides = guide_cases(subject.read("t1"), subject.read("t2"), Subject(foreign, DATA / foreign).read("t1"))
            metrics = evaluate_subject(subject, scale, guides, find_model("S", scale, True).path,
                                       find_model("S", scale, False).path, EVERY)
            cache[(name, scale)] = {case: value["psnr"] for case, value in metrics.items()}
        return cache[(name, scale)]

    return get


NAMES = [subject.name for subject in SUBJECTS]


def guarded(guard: str, *axes: list) -> list:
    """Every combination of the axes, the known shortfalls of `guard` marked as strict expected failures."""
    return [pytest.param(*combo, marks=pytest.mark.xfail(strict=True, reason=SHORTFALLS[(guard, *combo)]))
            if (guard, *combo) in SHORTFALLS else pytest.param(*combo) for combo in itertools.product(*axes)]


@pytest.mark.parametrize(("name", "scale"), guarded("gain", NAMES, SCALES))
def test_gain_over_bicubic(psnr, name, scale):
    result = psnr(name, scale)
    gain = result[REGISTERED] - result[BICUBIC]
    print(f"{name} x{scale}: {gain:+.3f} dB over bicubic (margin {gain - MIN_GAIN_OVER_BICUBIC_DB:+.3f})")
    assert gain >= MIN_GAIN_OVER_BICUBIC_DB


@pytest.mark.parametrize(("name", "scale"), guarded("ensemble gain", NAMES, SCALES))
def test_gain_over_bicubic_with_the_self_ensemble(name, scale):
    torch.set_num_threads(2)
    subject = next(s for s in SUBJECTS if s.name == name)
    result = evaluate_subject(subject, scale, {REGISTERED: subject.read("t1")}, find_model("S", scale, True).path,
                              find_model("S", scale, False).path, EVERY, self_ensemble=ENSEMBLE_COPIES)
    gain = result[REGISTERED]["psnr"] - result[BICUBIC]["psnr"]
    print(f"{name} x{scale}, self-ensemble of {ENSEMBLE_COPIES}: {gain:+.3f} dB over bicubic "
          f"(margin {gain - MIN_GAIN_OVER_BICUBIC_DB:+.3f})")
    assert gain >= MIN_GAIN_OVER_BICUBIC_DB


@pytest.mark.parametrize(("name", "scale", "case"), guarded("no-T1", NAMES, SCALES, [REGISTERED, MOVED_1MM]))
def test_the_guided_model_is_not_worse_than_the_no_t1_model(psnr, name, scale, case):
    result = psnr(name, scale)
    difference = result[case] - result[NO_T1]
    print(f"{name} x{scale}, {case}: {difference:+.3f} dB against the no-T1 model "
          f"(margin {difference + NO_T1_TOLERANCE_DB:+.3f})")
    assert difference >= -NO_T1_TOLERANCE_DB


@pytest.mark.parametrize("scale", sorted(MIN_MEAN_T1_BENEFIT_DB))
def test_the_t1_adds_detail_on_average(psnr, scale):
    benefit = float(np.mean([psnr(name, scale)[REGISTERED] - psnr(name, scale)[NO_T1] for name in NAMES]))
    print(f"x{scale}: mean T1 benefit {benefit:+.3f} dB (margin {benefit - MIN_MEAN_T1_BENEFIT_DB[scale]:+.3f})")
    assert benefit >= MIN_MEAN_T1_BENEFIT_DB[scale]


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", NAMES)
def test_a_foreign_t1_costs_something(psnr, name, scale):
    """The model does use its guide: another subject's T1 gives a worse result than the registered one."""
    result = psnr(name, scale)
    cost = result[REGISTERED] - result[FOREIGN]
    print(f"{name} x{scale}: a foreign T1 costs {cost:.3f} dB (margin {cost - MIN_FOREIGN_COST_DB:+.3f})")
    assert cost >= MIN_FOREIGN_COST_DB
