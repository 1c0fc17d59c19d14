"""What real archives send, checked for what matters beyond the exit code: the SEG of a de-identified series
is valid and references the real instances, the generated UIDs are stable, a single file stands for its
series, and variant encodings give the very same HU."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from litseg.runtime import RunConfig, read_series, segment, write_results
from tests.runtime import bad_inputs


def _dciodvfy_errors(path: Path) -> list[str]:
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.fail("dciodvfy (Debian dicom3tools) is not installed; .ci/run installs it")
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120, check=False)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


@pytest.mark.parametrize("case", ["deidentified-blank-uids", "deidentified-dropped-attributes"])
def test_deidentified_series_give_a_valid_seg_referencing_every_instance(
    case: str, tmp_path: Path, tumor_model: Path
) -> None:
    bad_inputs.CASES[case].build(tmp_path / "in")
    result = segment(tmp_path / "in", RunConfig(model=tumor_model))
    paths = write_results(result, tmp_path / "out", formats=("seg", "json", "mask-dicom"))
    assert _dciodvfy_errors(paths["seg"]) == []
    assert _dciodvfy_errors(sorted(paths["mask-dicom"].iterdir())[0]) == []
    seg = hd.seg.segread(paths["seg"])
    referenced = {
        str(item.ReferencedSOPInstanceUID)
        for series in seg.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    }
    # the SOP Instance UIDs the files' meta carries (the datasets' own were blanked or kept)
    expected = {str(pydicom.dcmread(p).file_meta.MediaStorageSOPInstanceUID) for p in (tmp_path / "in").iterdir()}
    assert referenced == expected
    report = json.loads(paths["json"].read_text())
    if case == "deidentified-dropped-attributes":
        assert set(report["generated_uids"]) == {"FrameOfReferenceUID"}
        assert str(seg.FrameOfReferenceUID) == report["generated_uids"]["FrameOfReferenceUID"]
    else:
        assert set(report["generated_uids"]) == {"StudyInstanceUID", "SeriesInstanceUID"}
    again = segment(tmp_path / "in", RunConfig(model=tumor_model))
    assert dict(again.series.generated_uids) == report["generated_uids"]  # the same files, the same UIDs


def test_a_single_file_stands_for_its_whole_series(tmp_path: Path) -> None:
    bad_inputs.two_series(tmp_path / "in")
    one = sorted((tmp_path / "in" / "b").iterdir())[2]
    series = read_series(one)
    assert series.volume.shape_zyx[0] == bad_inputs.GEO.slices
    assert {Path(f).parent.name for f in series.source_files} == {"b"}
    assert "single file" in series.notes[0]


@pytest.mark.parametrize(
    "case",
    [
        "monochrome1",
        "per-slice-rescale",
        "no-part10-meta",
        "nested-folders-no-extensions",
        "blank-series-uid-everywhere",
    ],
)
def test_variant_encodings_give_the_same_hu(case: str, tmp_path: Path) -> None:
    bad_inputs.CASES[case].build(tmp_path / "variant")  # the same anatomy as the plain series below
    bad_inputs._write(tmp_path / "plain", bad_inputs.make_series(bad_inputs.GEO))
    variant, plain = read_series(tmp_path / "variant").volume, read_series(tmp_path / "plain").volume
    np.testing.assert_array_equal(variant.array, plain.array)
    np.testing.assert_allclose(variant.affine_lps, plain.affine_lps, atol=1e-6)


def test_quiet_run_on_a_real_series_prints_only_what_a_reader_must_see(
    real_ct: Path, tmp_path: Path, tumor_model: Path
) -> None:
    # The GE series' PatientName makes highdicom warn: detail for the debug log, not for the user. The
    # plausibility warnings (3 slices cannot hold a whole liver) are what a reader must see, even with --quiet.
    args = [str(real_ct / "dicom"), "--model", str(tumor_model), "--out", str(tmp_path / "o"), "--quiet"]
    proc = subprocess.run(
        [sys.executable, "-m", "litseg.runtime.cli", *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    lines = proc.stderr.splitlines()
    assert lines and all("plausibility:" in line for line in lines), proc.stderr
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["liver_plausible"] is False
    assert "liver_volume_out_of_range" in [w["code"] for w in report["plausibility"]["warnings"]]


def test_in_memory_deidentified_datasets_are_not_modified(tumor_model: Path) -> None:
    import copy

    datasets = bad_inputs.make_series(bad_inputs.GEO)
    for ds in datasets:
        ds.SeriesInstanceUID, ds.SOPInstanceUID = "", ""
        del ds.FrameOfReferenceUID, ds.PatientName
    before = [copy.deepcopy(ds) for ds in datasets]
    result = segment(datasets, RunConfig(model=tumor_model))
    assert set(result.series.generated_uids) == {"SeriesInstanceUID", "FrameOfReferenceUID"}
    assert datasets == before  # completing the headers and decoding left the caller's datasets alone
    assert all("PixelData" in ds for ds in datasets)


@pytest.mark.parametrize(("slope", "intercept", "dtype"), [(1.0, -1024.0, np.int16), (0.5, -1000.0, np.float32)])
def test_hu_volume_is_int16_where_exact(slope: float, intercept: float, dtype: type) -> None:
    options = bad_inputs.SeriesOptions(slope=slope, intercept=intercept)
    assert read_series(bad_inputs.make_series(bad_inputs.GEO, options)).volume.array.dtype == dtype
