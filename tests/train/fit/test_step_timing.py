"""The recipe's training-time estimate: real trainer steps, scaled to the samples of a run."""

from __future__ import annotations

import json

import pytest

from litseg.train.fit.step_timing import main, seconds_per_sample


def test_estimate_scales_timed_steps_to_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    per_sample, precision = seconds_per_sample(base=4, patch=32, batch=2, steps=1)
    assert per_sample > 0 and precision in ("float32", "bfloat16")
    assert main(["--base", "4", "--batch", "2", "--samples", "32:1000", "--samples", "64:10"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["seconds_per_sample"]) == {"32", "64"}
    expected = (1000 * out["seconds_per_sample"]["32"] + 10 * out["seconds_per_sample"]["64"]) / 60
    assert out["estimated_training_minutes"] == pytest.approx(expected, abs=0.2)
    with pytest.raises(SystemExit):
        main(["--samples", "160"])
