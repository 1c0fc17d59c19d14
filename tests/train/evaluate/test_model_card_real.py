"""The model card's real-data parts and the no-liver summary, from the JSON files the recipe writes."""

from __future__ import annotations

import json
from pathlib import Path

from litseg.train.evaluate.model_card_real import data_lines, evaluation_lines, headline
from litseg.train.evaluate.negatives import main as negatives_main


def _shipped(version: str, liver: float, tumor: float | None) -> dict[str, object]:
    """A shipped-path result as python -m litseg.train.evaluate.shipped writes it (the keys the card reads)."""
    summary: dict[str, object] = {
        "model_version": version,
        "liver_dice_per_slice": {"n": 20, "mean": liver, "median": liver + 0.01, "min": 0.5},
        "liver_free": {"slices": 7, "with_predicted_tumor": 1, "with_predicted_liver": 2},
    }
    if tumor is not None:
        summary["volumes"] = {
            "liver": {"dice_per_case_mean": liver + 0.02},
            "tumor": {"dice_per_case_mean": tumor, "dice_global": tumor + 0.05},
            "lesion_recall": 0.5,
            "lesion_precision": 0.75,
        }
    return {"summary": summary}


def test_card_names_the_real_data_and_every_real_result(tmp_path: Path) -> None:
    (tmp_path / "shipped-lits-test-liver-tumor.json").write_text(json.dumps(_shipped("0.7.0", 0.951, 0.777)))
    baseline = _shipped("0.6.0", 0.922, 0.555)
    (tmp_path / "shipped-lits-test-liver-tumor-baseline.json").write_text(json.dumps(baseline))
    (tmp_path / "shipped-ircad-liver-tumor.json").write_text(json.dumps(_shipped("0.7.0", 0.93, None)))
    chosen = {"min_tumor_ml": 0.5, "tumor_margin_mm": 1.0, "tumor_dice_per_volume": 0.7, "tumor_dice_global": 0.8,
              "lesion_recall": 0.6, "lesion_precision": 0.75}  # fmt: skip
    (tmp_path / "calibrate-real.json").write_text(json.dumps({"rule": "precision first", "chosen": chosen}))
    healthy = {"cases": 4, "cases_with_tumor": 1, "tumors_total": 2}
    (tmp_path / "eval-healthy-liver-tumor.json").write_text(json.dumps(healthy))
    text = "\n".join(evaluation_lines(tmp_path, "liver-tumor"))
    assert "lits-tumor test volumes" in text and "report only" in text
    assert "| 0.951 (0.961) | 0.971 | 0.777 / 0.827 | 0.50 / 0.75 | 1 of 7 |" in text
    assert "the model replaced (0.6.0)" in text and "0.555 / 0.605" in text  # the baseline on the same set
    assert "3D-IRCADb-01" in text and "| 0.930 (0.940) | n/a | n/a | n/a |" in text
    assert "filter 0.5 mL, margin 1 mm" in text
    assert "4 held-out phantom cases with a healthy liver" in text and "found in **1** cases (2 in all)" in text
    data = {
        "sets": [
            {"file": "liver.h5", "epoch_share": 0.6, "cases": 80, "train_cases": 64, "train_slices": 5000,
             "val_cases": 16, "val_slices": 1200},
            {"file": "msd-liver.h5", "epoch_share": 0.4, "cases": 122, "train_cases": 100, "train_slices": 502,
             "val_cases": 22, "val_slices": 121, "provenance": "msd-liver-slices: ... CC-BY-SA 4.0 ..."},
        ]
    }  # fmt: skip
    assert "real tumour labels" in " ".join(headline(data))
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


def test_the_card_finds_the_real_ct_where_the_tests_do() -> None:
    from litseg.train.evaluate.model_card import REAL_CT
    from tests.conftest import SHARED_DATA

    assert REAL_CT == SHARED_DATA / "dcmqi-ct-3slice"  # a moved module once looked one folder too low
