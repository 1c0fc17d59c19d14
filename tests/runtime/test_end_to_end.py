"""CT DICOM series in, SEG + NIfTI + JSON out: geometry checked in world coordinates."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from litseg.runtime import Model, PreprocessSpec, RunConfig, read_series, release_pixels, segment, write_results
from litseg.runtime.cli import main
from litseg.runtime.errors import EXIT_BAD_INPUT, EXIT_MODEL, EXIT_OUTPUT, EXIT_USAGE
from litseg.runtime.nifti import read_nifti
from tests.factories import (
    LIVER_CENTER_LPS,
    TUMOR_CENTER_LPS,
    SeriesGeometry,
    make_intensity_model,
    make_series,
    phantom_labels,
    write_series,
)

ORIENTATIONS = {
    "standard": ((1, 0, 0), (0, 1, 0), 1.0),
    "mirrored-x": ((-1, 0, 0), (0, 1, 0), 1.0),
    "flipped-y": ((1, 0, 0), (0, -1, 0), 1.0),
    "rotated-180": ((-1, 0, 0), (0, -1, 0), 1.0),
    "transposed": ((0, 1, 0), (1, 0, 0), 1.0),
    "transposed-neg": ((0, -1, 0), (1, 0, 0), 1.0),
}


def _geometry(row_dir, col_dir, sign) -> SeriesGeometry:  # type: ignore[no-untyped-def]
    return SeriesGeometry(
        rows=72,
        columns=80,
        slices=10,
        pixel_spacing_mm=(3.2, 3.5),
        slice_spacing_mm=5.0 * sign,
        row_direction=row_dir,
        column_direction=col_dir,
        center_lps=(-20.0, -5.0, 10.0),
    )


def _world_centroid_from_seg(seg_path: Path, segment_number: int) -> np.ndarray:
    seg = hd.seg.segread(seg_path)
    frames = seg.pixel_array
    points = []
    row_dir = np.array(
        seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient[:3], float
    )
    col_dir = np.array(
        seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient[3:], float
    )
    spacing = [float(v) for v in seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing]
    for n, fg in enumerate(seg.PerFrameFunctionalGroupsSequence):
        if int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber) != segment_number:
            continue
        ipp = np.array(fg.PlanePositionSequence[0].ImagePositionPatient, float)
        j, i = np.nonzero(frames[n])
        points.append(ipp + np.outer(i * spacing[1], row_dir) + np.outer(j * spacing[0], col_dir))
    return np.concatenate(points).mean(0)


def _world_centroid_from_nifti(path: Path, label: int) -> np.ndarray:
    image = nib.load(str(path))
    ijk = np.argwhere(np.asarray(image.dataobj) == label)
    ras = ijk @ image.affine[:3, :3].T + image.affine[:3, 3]
    return ras.mean(0) * np.array([-1.0, -1.0, 1.0])  # RAS -> LPS


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_geometry_round_trip_in_seg_and_nifti(name: str, tmp_path: Path, tumor_model: Path) -> None:
    geo = _geometry(*ORIENTATIONS[name])
    datasets = make_series(geo)
    write_series(datasets, tmp_path / "in")
    result = segment(tmp_path / "in", RunConfig(model=tumor_model, device="cpu"))
    truth = phantom_labels(geo.world_grid())
    assert (result.labels.array == truth).mean() > 0.99  # boundary voxels blur through 64x64
    paths = write_results(result, tmp_path / "out")
    grid = geo.world_grid()
    # the SEG's segment 1 is the whole liver (tumours included), segment 2 the tumour; the NIfTI's label 1 is
    # the parenchyma, 2 the tumour (liver = 1 and 2)
    for segment_number, in_seg, name_ in ((1, truth > 0, "liver"), (2, truth == 2, "tumor")):
        seg_centroid = _world_centroid_from_seg(paths["seg"], segment_number)
        np.testing.assert_allclose(seg_centroid, grid[in_seg].mean(0), atol=1.0, err_msg=f"{name_} in SEG")
    for label, name_ in ((1, "parenchyma"), (2, "tumor")):
        nifti_centroid = _world_centroid_from_nifti(paths["nifti"], label)
        np.testing.assert_allclose(nifti_centroid, grid[truth == label].mean(0), atol=1.0, err_msg=f"{name_} in NIfTI")
    # the phantom itself is asymmetric: liver on the patient's right (LPS x < 0), anterior, upper
    liver = grid[truth == 1].mean(0)
    assert liver[0] < -40
    assert liver[1] < -10
    assert np.linalg.norm(grid[truth == 2].mean(0) - TUMOR_CENTER_LPS) < 3
    assert np.linalg.norm(grid[truth > 0].mean(0) - LIVER_CENTER_LPS) < 8


def test_seg_references_every_source_instance_and_frames_sit_on_source_positions(
    tmp_path: Path, tumor_model: Path
) -> None:
    geo = _geometry(*ORIENTATIONS["mirrored-x"])
    datasets = make_series(geo)
    result = segment(datasets, RunConfig(model=tumor_model))
    paths = write_results(result, tmp_path / "out", formats=("seg",))
    seg = pydicom.dcmread(paths["seg"])
    referenced = {
        str(item.ReferencedSOPInstanceUID)
        for series in seg.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    }
    assert referenced == {str(ds.SOPInstanceUID) for ds in datasets}
    assert seg.FrameOfReferenceUID == datasets[0].FrameOfReferenceUID
    assert seg.PatientID == datasets[0].PatientID and seg.StudyInstanceUID == datasets[0].StudyInstanceUID
    source_at = {tuple(round(float(v), 3) for v in ds.ImagePositionPatient): str(ds.SOPInstanceUID) for ds in datasets}
    for fg in seg.PerFrameFunctionalGroupsSequence:
        ipp = tuple(round(float(v), 3) for v in fg.PlanePositionSequence[0].ImagePositionPatient)
        # each frame names the source slice it was derived from, at its own position
        (source,) = fg.DerivationImageSequence[0].SourceImageSequence
        assert source_at[ipp] == source.ReferencedSOPInstanceUID
    labels = {
        int(s.SegmentNumber): (
            s.SegmentLabel,
            s.SegmentedPropertyTypeCodeSequence[0].CodeValue,
            s.SegmentedPropertyCategoryCodeSequence[0].CodeValue,
            s.SegmentAlgorithmType,
        )
        for s in seg.SegmentSequence
    }
    assert labels == {
        1: ("Liver", "10200004", "123037004", "AUTOMATIC"),
        2: ("Liver tumor", "108369006", "49755003", "AUTOMATIC"),
    }


def test_seg_liver_segment_is_the_whole_liver_and_every_volume_agrees(tmp_path: Path, tumor_model: Path) -> None:
    """One definition of the liver everywhere: the SEG's "Liver" segment holds the tumour voxels too (segments
    overlap), and its volume is the report's liver_volume_ml, the plausibility check's, parenchyma + tumour."""
    geo = _geometry(*ORIENTATIONS["standard"])
    result = segment(make_series(geo), RunConfig(model=tumor_model))
    paths = write_results(result, tmp_path / "out", formats=("seg", "json", "nifti"))
    seg = hd.seg.segread(paths["seg"])
    assert seg.SegmentsOverlap == "YES" and seg.SegmentationType == "BINARY"
    liver = seg.get_volume(segment_numbers=[1], combine_segments=False).array[..., 0] > 0
    tumor = seg.get_volume(segment_numbers=[2], combine_segments=False).array[..., 0] > 0
    assert tumor.any() and np.all(liver[tumor])  # every tumour voxel lies in the liver segment
    labels = np.asarray(result.labels.array)
    assert int(liver.sum()) == int(np.count_nonzero(labels)) and int(tumor.sum()) == int((labels == 2).sum())
    report = json.loads(paths["json"].read_text())
    voxel_ml = result.labels.voxel_volume_ml
    assert report["liver_volume_ml"] == pytest.approx(liver.sum() * voxel_ml, abs=0.01)
    assert report["liver_volume_ml"] == pytest.approx(
        report["parenchyma_volume_ml"] + report["tumor_volume_ml"], abs=0.02
    )
    assert report["plausibility"]["checks"]["liver_volume_ml"] == pytest.approx(report["liver_volume_ml"], abs=0.1)
    nifti = np.asarray(nib.load(paths["nifti"]).dataobj)
    assert set(np.unique(nifti)) == {0, 1, 2}  # the label map stays 0/1/2


def test_memoized_iod_lookup_answers_as_highdicom_scan() -> None:
    """litseg.runtime.write caches highdicom's IOD attribute scan (0.8 s of a 432-slice SEG): same answers."""
    import highdicom._standard_utils as hd_standard

    import litseg.runtime.write  # noqa: F401  (installs the cache)

    memoized = hd_standard.is_attribute_in_iod
    scan = memoized.__wrapped__
    ct, seg_class = pydicom.uid.CTImageStorage, pydicom.uid.SegmentationStorage
    for attribute in ("NumberOfFrames", "ImagePositionPatient", "TotalPixelMatrixOriginSequence", "PatientName"):
        for sop_class in (ct, seg_class, pydicom.uid.EnhancedCTImageStorage):
            for exclude in (None, ["SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"]):
                assert memoized(attribute, sop_class, exclude) == scan(attribute, sop_class, exclude), (
                    attribute,
                    sop_class,
                    exclude,
                )
    assert memoized("NumberOfFrames", ct) is False and memoized("NumberOfFrames", seg_class) is True
    with pytest.raises(KeyError, match="No IOD found"):
        memoized("NumberOfFrames", "1.2.3.4")


def test_seg_on_the_real_ct_references_its_three_instances(real_ct: Path, tmp_path: Path, tumor_model: Path) -> None:
    result = segment(real_ct / "dicom", RunConfig(model=tumor_model))
    paths = write_results(result, tmp_path / "out", formats=("seg", "json"))
    seg = pydicom.dcmread(paths["seg"])
    referenced = [
        str(i.ReferencedSOPInstanceUID) for s in seg.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence
    ]
    sources = {
        str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in (real_ct / "dicom").glob("*.dcm")
    }
    assert sorted(referenced) == sorted(sources)
    report = json.loads(paths["json"].read_text())
    assert report["slices"] == 3 and report["provider"] == "CPUExecutionProvider"


def test_cli_writes_all_outputs_and_leaves_the_input_untouched(
    tmp_path: Path, tumor_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_series(make_series(_geometry(*ORIENTATIONS["standard"])), tmp_path / "in")
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "in").iterdir()}
    code = main(
        [str(tmp_path / "in"), "--model", str(tumor_model), "--out", str(tmp_path / "out"), "--device", "cpu", "--json"]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["tumor_count"] == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        ".litseg",  # the marker: litseg's own results, which --overwrite may replace
        "labels.nii.gz",
        "report.json",
        "segmentation.dcm",
    ]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert set(report["timings_s"]) >= {
        "read",
        "model",
        "model_preprocess",
        "model_inference",
        "postprocess",
        "write_seg",
    }
    assert report["liver_volume_ml"] > 0 and report["tumor_volume_ml"] > 0
    assert "Phantom" not in json.dumps(report) and "PHANTOM-001" not in json.dumps(report)  # no patient data
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "in").iterdir()}
    assert after == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_cli_exit_codes(tmp_path: Path, tumor_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_series(make_series(_geometry(*ORIENTATIONS["standard"])), tmp_path / "in")
    assert main([str(tmp_path / "missing"), "--model", str(tumor_model)]) == EXIT_BAD_INPUT
    assert "input not found" in capsys.readouterr().err
    assert main([str(tmp_path / "in"), "--model", str(tmp_path / "none.onnx")]) == EXIT_MODEL
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    code = main([str(tmp_path / "in"), "--model", str(tumor_model), "--out", str(tmp_path / "busy")])
    assert code == EXIT_OUTPUT
    assert "already holds files" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["keep.txt"]
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path / "in"), "--formats", "seg,png"])
    assert info.value.code == EXIT_USAGE
    code = main(
        [
            str(tmp_path / "in"),
            "--model",
            str(tumor_model),
            "--out",
            str(tmp_path / "busy"),
            "--overwrite",
            "--formats",
            "json",
            "--quiet",
        ]
    )
    assert code == EXIT_OUTPUT  # --overwrite never replaces a folder holding a file litseg did not write
    assert "litseg did not write (keep.txt)" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["keep.txt"]
    (tmp_path / "busy" / "keep.txt").unlink()
    args = [str(tmp_path / "in"), "--model", str(tumor_model), "--out", str(tmp_path / "busy"), "--quiet"]
    assert main(args) == 0  # an empty folder is used
    assert main(args) == EXIT_OUTPUT and "holds litseg results; pass --overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--formats", "json"]) == 0  # litseg's own results are replaced
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == [".litseg", "report.json"]


@pytest.mark.parametrize("name", ["standard", "mirrored-x", "transposed-neg"])
def test_overlay_png_shows_the_liver_on_the_patients_right(name: str, tmp_path: Path, tumor_model: Path) -> None:
    from PIL import Image

    result = segment(make_series(_geometry(*ORIENTATIONS[name])), RunConfig(model=tumor_model))
    paths = write_results(result, tmp_path / "out", formats=("overlay",))
    rgb = np.asarray(Image.open(paths["overlay"]).convert("RGB")).astype(int)
    tile = rgb[:, : rgb.shape[1] // 3]
    reddish = np.argwhere((tile[..., 0] - tile[..., 2]) > 40)
    assert reddish.size > 0
    assert reddish[:, 1].mean() < tile.shape[1] / 2  # radiological display: patient's right on the left
    assert reddish[:, 0].mean() < tile.shape[0] / 2  # the phantom liver is anterior: upper half


def test_mask_dicom_output_uses_the_seed_grey_levels_on_the_source_geometry(tmp_path: Path, tumor_model: Path) -> None:
    datasets = make_series(_geometry(*ORIENTATIONS["flipped-y"]))
    result = segment(datasets, RunConfig(model=tumor_model))
    paths = write_results(result, tmp_path / "out", formats=("mask-dicom",))
    files = sorted(paths["mask-dicom"].iterdir())
    assert len(files) == len(datasets)
    by_ref = {}
    for f in files:
        ds = pydicom.dcmread(f)
        by_ref[str(ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID)] = ds
        assert ds.FrameOfReferenceUID == datasets[0].FrameOfReferenceUID
        assert ds.StudyInstanceUID == datasets[0].StudyInstanceUID
    grey = set()
    for src, label_slice in zip(result.series.headers, result.labels.array, strict=True):
        mask = by_ref[str(src.SOPInstanceUID)]
        assert [round(float(v), 3) for v in mask.ImagePositionPatient] == [
            round(float(v), 3) for v in src.ImagePositionPatient
        ]
        expected = np.select([label_slice == 1, label_slice == 2], [63, 127], 0)
        np.testing.assert_array_equal(mask.pixel_array, expected)
        grey |= set(np.unique(mask.pixel_array).tolist())
    assert grey == {0, 63, 127}
    # the reader never mistakes the masks for a CT series
    assert read_series([*datasets, *(pydicom.dcmread(f) for f in files)]).volume.shape_zyx[0] == len(datasets)


def test_release_pixels_keeps_everything_the_writers_need(tmp_path: Path) -> None:
    # SEG, NIfTI, JSON and grey masks from a result without its HU equal those from the full result
    series = make_series(SeriesGeometry(rows=48, columns=40, slices=6))
    model = Model(make_intensity_model(tmp_path / "m.onnx", PreprocessSpec()), device="cpu")
    result = segment(series, model=model)
    light = release_pixels(result)
    assert light.series.volume.array.strides == (0, 0, 0)  # no memory behind it
    assert light.series.volume.shape_zyx == result.series.volume.shape_zyx
    formats = ("seg", "nifti", "json", "mask-dicom")
    full = write_results(result, tmp_path / "full", formats)
    lean = write_results(light, tmp_path / "lean", formats)
    a, b = pydicom.dcmread(full["seg"]), pydicom.dcmread(lean["seg"])
    assert a.PixelData == b.PixelData and len(a.ReferencedSeriesSequence[0].ReferencedInstanceSequence) == 6
    assert np.array_equal(read_nifti(full["nifti"]).array, read_nifti(lean["nifti"]).array)
