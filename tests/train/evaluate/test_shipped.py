"""Shipped-path scoring: real slices as DICOM series, segmented by ``segment()``, scored per slice and volume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from litseg.runtime import Model, default_model_path
from litseg.runtime.geometry import Reorientation
from litseg.runtime.model import POSTPROCESS_METADATA_KEY
from litseg.runtime.series import read_series
from litseg.train.data import orientation as so
from litseg.train.data.lits_tumor import LITS_TUMOR
from litseg.train.data.patients import msd_role
from litseg.train.data.real_slices import IRCAD, MSD, RealSlice
from litseg.train.evaluate import shipped, shipped_scores, shipped_series
from litseg.train.phantom.case import PhantomOptions, generate_case
from tests.conftest import shared_data


def real_slice(
    source: str,
    patient: str,
    index: int,
    hu: np.ndarray,
    liver: np.ndarray,
    tumor: np.ndarray | None = None,
) -> RealSlice:
    """A canonical slice as the loaders give it (identity transform)."""
    identity = Reorientation()
    return RealSlice(
        source,
        patient,
        index,
        f"{patient}_{index}",
        hu.astype(np.float32),
        liver.astype(bool),
        identity,
        so.Orientation(identity, (), 0.0),
        None,
        None if tumor is None else tumor.astype(bool),
    )


# ----- geometry of the written series ----------------------------------------------------------------------
def test_runs_of_neighbours_become_series_at_their_true_positions() -> None:
    liver = np.zeros((512, 512), bool)
    liver[200:300, 100:200] = True
    slices = [real_slice(LITS_TUMOR, "lits-7", i, np.zeros((512, 512)), liver) for i in (100, 102, 104, 110, 112, 258)]
    # liver from slice 100 to 258: 160 slices of a 160 mm liver -> 1.0 mm
    assert shipped_series.lits_slice_spacing_mm(slices) == 1.0
    runs = shipped_series.plan_series(slices, "runs")
    assert [[s.slice_index for s in r.slices] for r in runs] == [[100, 102, 104], [110, 112], [258]]
    for run in runs:
        assert run.spacing_mm == pytest.approx((0.75, 0.75, 2.0))  # 384 mm / 512 px; every 2nd of 1 mm slices
        assert run.affine_lps[2, 3] == pytest.approx(run.slices[0].slice_index * 1.0)  # z = S * t
    (whole,) = shipped_series.plan_series(slices, "volume", lits_slice_mm=2.5)
    assert len(whole.slices) == 6 and whole.spacing_mm[2] == pytest.approx(5.0) and whole.affine_lps[2, 3] == 0.0
    lone = shipped_series.plan_series([real_slice(MSD, "msd-10001", 5, np.zeros((256, 256)), liver[::2, ::2])])
    assert lone[0].spacing_mm == pytest.approx((1.5, 1.5, shipped_series.SINGLE_SLICE_MM))


def test_slice_spacing_is_snapped_to_a_reconstruction_increment() -> None:
    assert shipped_series.snap_reconstruction_mm(2.29) == 2.5
    assert shipped_series.snap_reconstruction_mm(5.9) == 5.0
    assert shipped_series.snap_reconstruction_mm(0.91) == 1.0
    no_liver = [real_slice(LITS_TUMOR, "lits-25", i, np.zeros((8, 8)), np.zeros((8, 8))) for i in (0, 2)]
    assert shipped_series.lits_slice_spacing_mm(no_liver) == shipped_series.NO_LIVER_SLICE_MM


def test_written_series_reads_back_on_the_planned_grid_with_the_scanners_rescale() -> None:
    rng = np.random.default_rng(3)
    hu = [rng.uniform(-1100, 1500, (64, 64)) for _ in range(3)]
    liver = np.zeros((64, 64), bool)
    liver[20:40, 5:25] = True  # image left = patient right
    slices = [real_slice(LITS_TUMOR, "lits-3", 40 + 2 * k, hu[k], liver) for k in range(3)]
    (series,) = shipped_series.plan_series(slices, lits_slice_mm=1.25)
    datasets = shipped_series.series_datasets(series)
    first = datasets[0]
    assert [float(v) for v in first.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert float(first.RescaleIntercept) == -1024 and first.PixelRepresentation == 0
    assert [float(v) for v in first.PixelSpacing] == pytest.approx([6.0, 6.0])  # 384 mm over 64 px
    read = read_series(list(reversed(datasets)))  # sorted by position, not by list order
    np.testing.assert_allclose(read.volume.affine_lps, series.affine_lps, atol=1e-4)
    expected = np.clip(np.round(np.stack(hu)), -1024, None)
    np.testing.assert_array_equal(np.asarray(read.volume.array), expected)
    # the patient's right (image left) lies at negative LPS x
    assert read.volume.index_to_lps([10, 30, 0])[0] < 0 < read.volume.index_to_lps([50, 30, 0])[0]


# ----- scores on known pairs -------------------------------------------------------------------------------
def _known_pair() -> tuple[list[RealSlice], list[np.ndarray], list[shipped_series.ShippedSeries]]:
    """Three lits-tumor slices: liver with two lesions (one found, one missed, one false), and a liver-free
    slice on which a tumour is predicted."""
    z = np.zeros((32, 32), bool)
    liver = z.copy()
    liver[4:24, 4:24] = True  # 400 px
    tumor = z.copy()
    tumor[6:10, 6:10] = True  # lesion A, 16 px
    tumor[16:20, 16:20] = True  # lesion B, 16 px
    slices = [
        real_slice(LITS_TUMOR, "lits-1", 10, np.zeros((32, 32)), liver, tumor),
        real_slice(LITS_TUMOR, "lits-1", 12, np.zeros((32, 32)), liver, z),
        real_slice(LITS_TUMOR, "lits-1", 14, np.zeros((32, 32)), z, z),
    ]
    pred0 = np.zeros((32, 32), np.uint8)
    pred0[4:24, 4:20] = 1  # 320 px of liver, all inside the reference
    pred0[6:10, 6:10] = 2  # lesion A found exactly; lesion B missed (its pixels at columns 16-19: background)
    pred1 = np.zeros((32, 32), np.uint8)
    pred1[4:24, 4:24] = 1
    pred1[12:14, 12:14] = 2  # a false lesion, 4 px
    pred2 = np.zeros((32, 32), np.uint8)
    pred2[0:3, 0:3] = 2  # tumour on the liver-free slice, 9 px
    series = shipped_series.plan_series(slices, lits_slice_mm=1.25)
    return slices, [pred0, pred1, pred2], [series[0]] * 3


def test_slice_and_volume_scores_of_a_known_pair() -> None:
    slices, preds, series = _known_pair()
    rows = [shipped_scores.slice_row(s, p, r) for s, p, r in zip(slices, preds, series, strict=True)]
    # slice 10: reference liver-or-tumour 400 px; predicted 320 px inside it
    assert rows[0]["liver_dice"] == pytest.approx(2 * 320 / (320 + 400))
    assert rows[0]["tumor_dice"] == pytest.approx(2 * 16 / (16 + 32))
    assert rows[1]["liver_dice"] == 1.0 and rows[1]["tumor_dice"] == 0.0  # a false tumour, none in the reference
    assert rows[2]["liver_dice"] is None and rows[2]["tumor_dice"] == 0.0
    voxel_ml = 12.0 * 12.0 * 2.5 / 1000  # 384 mm over 32 px; every second of 1.25 mm slices
    assert rows[2]["pred_liver_ml"] == pytest.approx(9 * voxel_ml)
    summary = shipped_scores.summarize_rows(rows)
    assert summary["liver_free"] == {
        "slices": 1,
        "with_predicted_tumor": 1,
        "with_predicted_liver": 1,
        "predicted_liver_ml_total": pytest.approx(9 * voxel_ml, abs=1e-3),
        "predicted_liver_ml_max": pytest.approx(9 * voxel_ml, abs=1e-3),
    }
    assert summary["liver_dice_per_slice"]["n"] == 2
    case, row = shipped_scores.volume_metrics("lits-1", list(zip(slices, preds, series, strict=True)))
    # stacked: lesion A (16 voxels) found, B missed; predicted: A (true), the false one and the liver-free one
    assert (case.lesions_ref, case.lesions_detected) == (2, 1)
    assert (case.lesions_pred, case.lesions_true_pred) == (3, 1)
    assert row["tumor_dice"] == pytest.approx(2 * 16 / (32 + 16 + 4 + 9))
    assert row["liver_dice"] == pytest.approx(2 * (320 + 400) / (720 + 800 + 9))
    volumes = shipped_scores.summarize_volumes([case])
    assert volumes["lesion_recall"] == 0.5 and volumes["lesion_precision"] == pytest.approx(1 / 3)


# ----- the shipped path with the bundled model ---------------------------------------------------------------
@pytest.fixture(scope="module")
def phantom_slices() -> list[RealSlice]:
    """28 canonical phantom slices as one lits-tumor volume (every second slice index): liver with a 68 mm
    tumour, then 7 slices without liver."""
    case = generate_case(11, PhantomOptions(slices=28, slice_thickness_mm=6.0, contrast=True, tumors=3, rows=512))
    hu, labels = np.asarray(case.hu.array), np.asarray(case.labels.array)
    return [real_slice(LITS_TUMOR, "lits-900", 2 * k, hu[k], labels[k] > 0, labels[k] == 2) for k in range(hu.shape[0])]


@pytest.fixture(scope="module")
def bundled() -> Model:
    return Model(default_model_path(), device="cpu")


@pytest.fixture(scope="module")
def shipped_result(phantom_slices: list[RealSlice], bundled: Model) -> dict[str, Any]:
    return shipped.score_slices(bundled, phantom_slices)


def test_the_bundled_model_through_the_shipped_path_finds_the_phantoms_liver_on_its_right(
    phantom_slices: list[RealSlice], shipped_result: dict[str, Any], bundled: Model
) -> None:
    (volume,) = shipped_result["volumes"]
    # 0.6.0 scored 0.975 and 0.36 here, as on the phantom's own geometry (0.975, 0.35): loose floors
    assert volume["liver_dice"] > 0.9 and volume["tumor_dice"] > 0.2, volume
    assert shipped_result["summary"]["liver_free"]["slices"] == 7
    # the slices' liver is on the image left (patient's right); so is every predicted liver
    for s, row in zip(phantom_slices, shipped_result["slices"], strict=True):
        if s.liver.sum() > 2000:
            assert row["liver_dice"] > 0.8, row
    (record,) = shipped_result["series"]
    assert record["slices"] == 28 and not record["allow_thin"]
    assert record["focus"]["coarse_slices"] > 0  # the coarse focus pass ran, as in litseg-run
    settings = shipped_result["summary"]["shipped_settings"]
    # the model's calibrated post-processing is what ran (and it is not the runtime's default of none)
    assert (settings["min_tumor_ml"], settings["tumor_margin_mm"]) == (
        bundled.info.min_tumor_ml,
        bundled.info.tumor_margin_mm,
    )
    assert settings["min_tumor_ml"] > 0 and settings["tumor_margin_mm"] > 0


def test_the_declared_geometry_is_what_the_runtime_sees(
    bundled: Model, phantom_slices: list[RealSlice], tmp_path: Path
) -> None:
    """The canonical geometry puts the liver on the patient's right, where the model finds it; the same pixels
    declared with columns running to the patient's right are mirrored by the runtime and the liver is lost:
    the series' geometry, not only its pixels, reaches the model (as a scanner's would)."""
    s = max(phantom_slices, key=lambda s: int(s.liver.sum()))
    (series,) = shipped_series.plan_series([s])
    labels, _ = shipped.segment_series(series, bundled, tmp_path)
    assert shipped_scores.dice(labels[0] > 0, s.liver) > 0.9
    columns = np.nonzero(labels[0] > 0)[1]
    assert columns.mean() < s.liver.shape[1] / 2  # image left = patient's right
    affine = series.affine_lps.copy()
    affine[:3, 3] += affine[:3, 0] * (s.hu.shape[1] - 1)
    affine[:3, 0] *= -1.0  # columns now run to the patient's right
    mirrored, _ = shipped.segment_series(shipped_series.ShippedSeries("m", series.slices, affine), bundled, tmp_path)
    assert shipped_scores.dice(mirrored[0] > 0, s.liver) < 0.5


def _with_postprocess(tmp_path: Path, settings: dict[str, float]) -> Path:
    path = tmp_path / "liver-tumor.onnx"
    shutil.copyfile(default_model_path(), path)
    proto = onnx.load(str(path))
    for entry in proto.metadata_props:
        if entry.key == POSTPROCESS_METADATA_KEY:
            entry.value = json.dumps(settings)
    onnx.save(proto, str(path))
    return path


def test_the_models_post_processing_settings_change_the_scores(
    tmp_path: Path, phantom_slices: list[RealSlice], shipped_result: dict[str, Any]
) -> None:
    """The model's calibrated post-processing is applied (the preprocess/restore_labels path ignores it)."""
    wide = Model(_with_postprocess(tmp_path, {"tumor_margin_mm": 20.0, "min_tumor_ml": 1.0}), device="cpu")
    result = shipped.score_slices(wide, phantom_slices)
    assert result["summary"]["shipped_settings"]["tumor_margin_mm"] == 20.0
    default_tumor = shipped_result["volumes"][0]["pred_tumor_voxels"]
    assert result["volumes"][0]["pred_tumor_voxels"] > 1.2 * default_tumor > 0


def test_msd_sets_follow_the_clean_split() -> None:
    assert [msd_role(c) for c in (10008, 10002, 10003, 10001)] == ["report", "selection", "excluded", "train"]


# ----- real data ----------------------------------------------------------------------------------------------
def test_real_lits_tumor_volume_through_the_shipped_path(tmp_path: Path) -> None:
    folder = shared_data("lits-tumor-slices")
    out = tmp_path / "out.json"
    code = shipped.main(
        [str(default_model_path()), "lits-tumor", str(folder), "--patients", "lits-48", "--json", str(out)]
    )
    assert code == 0
    result = json.loads(out.read_text())
    (volume,) = result["volumes"]
    assert volume["patient"] == "lits-48" and volume["slice_spacing_mm"] == 5.0  # liver over 70 slices -> 2.5 mm
    assert volume["liver_dice"] > 0.85 and volume["tumor_dice"] > 0.5, volume  # 0.6.0: 0.92 and 0.80
    assert result["summary"]["set"] == "report" and result["summary"]["liver_free"]["slices"] > 0
    assert len(result["slices"]) == 40 and any(r["series_slices"] > 2 for r in result["slices"])


def test_real_ircad_and_msd_slices_through_the_shipped_path(capsys: pytest.CaptureFixture[str]) -> None:
    ircad = shipped.evaluate(
        default_model_path(), IRCAD, shared_data("ircad-liver-slices"), "test", ("ircad-10001", "ircad-10002")
    )
    assert ircad["summary"]["slices"] == 4 and ircad["summary"]["liver_dice_per_slice"]["mean"] > 0.85
    msd = shipped.evaluate(default_model_path(), MSD, shared_data("msd-liver-slices"), "selection", ("msd-10002",))
    assert msd["summary"]["liver_dice_per_slice"]["median"] > 0.85
    assert all(r["series_slices"] == 1 for r in msd["slices"])


def test_bad_sets_and_folders_are_refused_with_their_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(default_model_path())
    assert shipped.main([model, "lits-tumor", str(tmp_path / "missing")]) == 3
    assert "slices.csv" in capsys.readouterr().err
    ircad = shared_data("ircad-liver-slices")
    assert shipped.main([model, "ircad", str(ircad), "--set", "selection"]) == 3
    assert "IRCAD is a test set only" in capsys.readouterr().err
    assert shipped.main([model, "ircad", str(ircad), "--set", "excluded"]) == 3
    assert "MSD patients" in capsys.readouterr().err
    assert shipped.main([model, "ircad", str(ircad), "--patients", "ircad-99"]) == 3
    assert "ircad-10001" in capsys.readouterr().err  # names what the set holds
