"""The model card's real-data parts and the no-liver summary, from the JSON files the recipe writes."""

from __future__ import annotations

import json
from pathlib import Path

from litseg.train.evaluate.model_card_real import data_lines, evaluation_lines, headline
from litseg.train.evaluate.negatives import main as negatives_main


def _slices(model: str, mean: float, window: list[float], exact: bool) -> dict[str, object]:
    return {
        "model": model,
        "model_version": "0.4.0",
        "window_hu": window,
        "slices": 121,
        "patients": 22,
        "liver_dice_per_slice_mean": mean,
        "liver_dice_per_slice_median": mean + 0.01,
        "liver_dice_per_slice_min": 0.5,
        "liver_dice_per_patient_mean": mean,
        "liver_dice_global": mean + 0.02,
        "msd_input_exact": exact,
    }


def test_card_names_the_real_data_and_every_real_result(tmp_path: Path) -> None:
    (tmp_path / "eval-msd-liver.json").write_text(json.dumps(_slices("liver.onnx", 0.951, [0.0, 255.0], True)))
    baseline = _slices("liver.onnx", 0.222, [-200.0, 300.0], False)
    (tmp_path / "eval-msd-liver-baseline.json").write_text(json.dumps(baseline))
    (tmp_path / "eval-ircad-liver.json").write_text(json.dumps(_slices("liver.onnx", 0.93, [0.0, 255.0], True)))
    text = "\n".join(evaluation_lines(tmp_path, "liver"))
    assert "MSD validation patients" in text and "**0.9510**" in text and "**0.9300**" in text
    assert "0.2220" in text and "outside MSD's 0..255 HU" in text  # the baseline and why it is not exact
    assert "3D-IRCADb-01" in text and "once" in text
    data = {
        "sets": [
            {"file": "liver.h5", "epoch_share": 0.6, "cases": 80, "train_cases": 64, "train_slices": 5000,
             "val_cases": 16, "val_slices": 1200},
            {"file": "msd-liver.h5", "epoch_share": 0.4, "cases": 122, "train_cases": 100, "train_slices": 502,
             "val_cases": 22, "val_slices": 121, "provenance": "msd-liver-slices: ... CC-BY-SA 4.0 ..."},
        ]
    }  # fmt: skip
    assert "real CT slices" in " ".join(headline(data))
    lines = data_lines(data, members=False)
    assert "60% of each epoch" in lines[1] and "CC-BY-SA 4.0" in lines[2]
    assert "phantoms only" in " ".join(headline({"file": "liver.h5", "cases": 80}))


def test_no_liver_summary_counts_liver_and_tumors(tmp_path: Path) -> None:
    reports = []
    for n, (liver, tumor_ml, tumors) in enumerate([(0.0, 0.0, 0), (12.5, 0.5, 1), (3.0, 0.0, 0)]):
        path = tmp_path / f"negative-{n}" / "report.json"
        path.parent.mkdir()
        path.write_text(json.dumps({"liver_volume_ml": liver, "tumor_volume_ml": tumor_ml, "tumor_count": tumors}))
        reports.append(str(path))
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps([{"region": "head"}, {"region": "pelvis"}, {"region": "chest"}]))
    out = tmp_path / "neg.json"
    assert negatives_main([*reports, "--manifest", str(manifest), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["liver_ml_max"] == 13.0 and result["cases_over_10_ml"] == 1
    assert result["cases_with_tumor"] == 1 and result["regions"] == ["chest", "head", "pelvis"]
    text = "\n".join(evaluation_lines(tmp_path, "liver-tumor"))
    assert text == ""  # no files under this task's names
    (tmp_path / "eval-negatives-liver.json").write_text(out.read_text())
    assert "max **13.0 mL**" in "\n".join(evaluation_lines(tmp_path, "liver"))
