"""The tumour post-processing calibrated on the real selection volumes through the shipped path."""

from __future__ import annotations

import math

from litseg.runtime.model import default_model_path
from litseg.train.evaluate.calibrate_real import MIN_PRECISION, calibrate, choose
from tests.conftest import shared_data


def _row(min_ml: float, margin: float, dice: float, precision: float, healthy: int = 0) -> dict[str, float]:
    return {
        "healthy_tumors": healthy,
        "min_tumor_ml": min_ml,
        "tumor_margin_mm": margin,
        "tumor_dice_per_volume": dice,
        "tumor_dice_global": dice,
        "lesion_precision": precision,
    }


def test_the_choice_wants_precise_lesions_first_then_dice() -> None:
    rows = [_row(0, 0, 0.80, 0.5), _row(0.5, 0, 0.70, MIN_PRECISION), _row(1, 2, 0.75, 0.9)]
    assert choose(rows)["min_tumor_ml"] == 1  # the best Dice among the precise settings, not the best Dice
    loose = [_row(0, 0, 0.8, 0.2), _row(1, 0, 0.6, 0.4), _row(2, 0, 0.5, math.nan)]
    assert choose(loose)["min_tumor_ml"] == 1  # none precise enough: the most precise
    specks = [_row(0.1, 1, 0.9, 0.9, healthy=9), _row(1, 1, 0.7, 0.8, healthy=0), _row(2, 1, 0.8, 0.5, healthy=0)]
    assert choose(specks)["min_tumor_ml"] == 1  # tumours in a healthy liver weigh first, then precision


def test_real_selection_volume_settings_change_what_is_kept() -> None:
    folder = shared_data("lits-tumor-slices")
    result = calibrate(default_model_path(), folder, (0.0, 1.0), (0.0, 2.0), ["lits-50"])
    rows = {(r["min_tumor_ml"], r["tumor_margin_mm"]): r for r in result["settings"]}
    assert set(rows) == {(0.0, 0.0), (0.0, 2.0), (1.0, 0.0), (1.0, 2.0)}
    assert rows[(1.0, 0.0)]["lesions_predicted"] <= rows[(0.0, 0.0)]["lesions_predicted"]  # the filter drops
    assert rows[(0.0, 2.0)]["tumor_dice_global"] != rows[(0.0, 0.0)]["tumor_dice_global"]  # the margin grows
    assert result["chosen"] in result["settings"]
    assert all(set(r["per_volume"]) == {"lits-50"} for r in result["settings"])
