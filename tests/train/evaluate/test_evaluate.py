"""LiTS metrics on hand-computed cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from litseg.runtime.nifti import write_nifti
from litseg.runtime.volume import Volume
from litseg.train.evaluate.metrics import case_metrics, class_metrics, main, size_bin, summarize

SPACING = np.diag([2.0, 2.0, 3.0, 1.0])  # x, y 2 mm; z 3 mm


def _vol(array: np.ndarray) -> Volume:
    return Volume(array.astype(np.uint8), SPACING)


def test_dice_voe_rvd_by_hand() -> None:
    ref = np.zeros((1, 1, 10), bool)
    pred = np.zeros((1, 1, 10), bool)
    ref[0, 0, :4] = True  # 4 voxels
    pred[0, 0, 2:8] = True  # 6 voxels, 2 shared
    m = class_metrics(pred, ref, (3.0, 2.0, 2.0))
    assert m.dice == pytest.approx(2 * 2 / 10)
    assert m.voe == pytest.approx(1 - 2 / 8)
    assert m.rvd == pytest.approx((6 - 4) / 4)


def test_surface_distances_in_millimetres() -> None:
    ref = np.zeros((1, 1, 12), bool)
    ref[0, 0, 2:4] = True
    pred = np.zeros((1, 1, 12), bool)
    pred[0, 0, 5:7] = True  # shifted by 3 voxels of 2 mm along x
    m = class_metrics(pred, ref, (3.0, 2.0, 2.0))
    # surfaces: ref {2,3}, pred {5,6}
    # pred->ref: 5->3 = 2 voxels, 6->3 = 3; ref->pred: 2->5 = 3, 3->5 = 2
    assert m.assd_mm == pytest.approx((4 + 6 + 6 + 4) / 4)
    assert m.mssd_mm == pytest.approx(6.0)
    same = class_metrics(ref, ref, (3.0, 2.0, 2.0))
    assert same.assd_mm == 0.0 and same.dice == 1.0


def test_lesion_detection_and_burden() -> None:
    ref = np.zeros((3, 20, 20), np.uint8)
    ref[:, 2:18, 2:18] = 1
    ref[1, 4:8, 4:8] = 2  # lesion A: 16 voxels
    ref[1, 12:14, 12:14] = 2  # lesion B: 4 voxels
    pred = ref.copy()
    pred[1, 12:14, 12:14] = 1  # B missed
    pred[1, 4:8, 4:7] = 2  # A: 12 of 16 -> IoU 0.75, detected
    pred[1, 4:8, 7] = 1
    pred[2, 15:17, 3:5] = 2  # a false lesion
    m = case_metrics("c", _vol(pred), _vol(ref))
    assert (m.lesions_ref, m.lesions_pred, m.lesions_detected, m.lesions_true_pred) == (2, 2, 1, 1)
    assert m.tumor_burden_error == pytest.approx(abs(16 / (3 * 256) - 20 / (3 * 256)))
    # A: 16 voxels of 12 mm3 = a 7.2 mm sphere; B: 4.5 mm; both in the smallest size bin
    assert m.lesions_by_size == {"<10": [2, 1], "10-20": [0, 0], ">=20": [0, 0]}
    assert (size_bin(9.99), size_bin(10.0), size_bin(20.0)) == ("<10", "10-20", ">=20")
    s = summarize([m])
    assert s["lesion_recall"] == 0.5 and s["lesion_precision"] == 0.5
    assert s["lesions_by_diameter_mm"]["<10"] == [2, 1]
    by_size = s["lesion_recall_by_diameter_mm"]
    assert by_size["<10"] == 0.5 and np.isnan(by_size["10-20"])  # type: ignore[index]


def test_cli_on_folders_and_mismatched_grids(tmp_path: Path) -> None:
    ref = np.zeros((2, 8, 8), np.uint8)
    ref[:, 2:6, 2:6] = 1
    (tmp_path / "ref").mkdir()
    (tmp_path / "pred").mkdir()
    write_nifti(_vol(ref), tmp_path / "ref" / "segmentation-1.nii.gz")
    write_nifti(_vol(ref), tmp_path / "pred" / "segmentation-1.nii.gz")
    assert main([str(tmp_path / "pred"), str(tmp_path / "ref"), "--json", str(tmp_path / "m.json")]) == 0
    assert '"dice_global": 1.0' in (tmp_path / "m.json").read_text()
    write_nifti(Volume(ref, np.diag([1.0, 2.0, 3.0, 1.0])), tmp_path / "pred" / "segmentation-1.nii.gz")
    assert main([str(tmp_path / "pred"), str(tmp_path / "ref")]) == 3


def test_cli_reads_litseg_run_output_folders_and_writes_strict_json(
    tmp_path: Path, tumor_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from litseg.runtime.cli import main as run_main
    from tests.factories import SeriesGeometry, make_series, phantom_labels, write_series

    geo = SeriesGeometry()
    write_series(make_series(geo), tmp_path / "dicom")
    (tmp_path / "ref").mkdir()
    truth = Volume(phantom_labels(geo.world_grid()), geo.affine_lps())
    write_nifti(truth, tmp_path / "ref" / "segmentation-7.nii.gz")
    out = tmp_path / "pred" / "segmentation-7"  # a litseg-run output folder named after its reference
    assert run_main([str(tmp_path / "dicom"), "--model", str(tumor_model), "--out", str(out), "--quiet"]) == 0
    assert main([str(tmp_path / "pred"), str(tmp_path / "ref"), "--json", str(tmp_path / "m.json")]) == 0
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text
    # json.loads accepts NaN and Infinity; refuse them as a strict parser would
    result = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert result["summary"]["liver"]["dice_per_case_mean"] > 0.8
    assert None in result["summary"]["lesion_recall_by_diameter_mm"].values()  # a bin without lesions: null
    # one run folder against one reference file
    assert main([str(out), str(tmp_path / "ref" / "segmentation-7.nii.gz")]) == 0
    assert "NaN" not in capsys.readouterr().out
