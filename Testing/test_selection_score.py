"""bench/selection_score.py: the number checkpoints are chosen by, on the selection source only."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from CohfTSuperResLib.data.pairs import SELECTION_SOURCE
from CohfTSuperResLib.evaluation.guide_cases import MOVED_1MM, NO_T1, REGISTERED, Subject
from CohfTSuperResLib.weights.registry import find_model

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (DATA / SELECTION_SOURCE / "t2.nii.gz").is_file(),
                                 reason=f"the selection source is not under {DATA}")]


@pytest.fixture(scope="module")
def selection_score():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import selection_score
    finally:
        sys.path.remove(str(ROOT / "bench"))
    torch.set_num_threads(2)
    return selection_score


def test_guided_score_is_the_mean_of_the_registered_and_the_moved_t1(selection_score):
    """The shipped x3 model scores what the model card records for it on the selection volume."""
    subject = Subject(SELECTION_SOURCE, DATA / SELECTION_SOURCE)
    result = selection_score.selection_score(subject, find_model("S", 3, True).path, every=4)
    assert set(result) == {REGISTERED, MOVED_1MM, "score"}
    assert result["score"] == pytest.approx((result[REGISTERED] + result[MOVED_1MM]) / 2)
    assert result[REGISTERED] == pytest.approx(35.004, abs=0.01)
    assert result[MOVED_1MM] == pytest.approx(34.458, abs=0.01)


def test_no_t1_score_runs_without_a_guide(selection_score):
    """The shipped x4 no-T1 model on every 16th slice: 31.588 dB (measured 2026-12-06)."""
    subject = Subject(SELECTION_SOURCE, DATA / SELECTION_SOURCE)
    result = selection_score.selection_score(subject, find_model("S", 4, False).path, every=16)
    assert set(result) == {NO_T1, "score"}
    assert result["score"] == result[NO_T1] == pytest.approx(31.588, abs=0.01)
