"""The real CT in ../shared/data/dcmqi-ct-3slice (GE LightSpeed, dcmqi project, BSD-3-Clause)."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from litseg.runtime.series import read_series
from litseg.train.data.nrrd import read_nrrd


def test_real_series_positions_hu_and_padding(real_ct: Path) -> None:
    series = read_series(real_ct / "dicom")
    vol = series.volume
    assert vol.shape_zyx == (3, 512, 512)
    # spacing from positions (1 mm), not SliceThickness (1.25 mm)
    assert vol.spacing_mm == pytest.approx((0.810547, 0.810547, 1.0), abs=1e-5)
    files = sorted((real_ct / "dicom").glob("*.dcm"))
    positions = sorted(float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files)
    assert [vol.index_to_lps([0, 0, k])[2] for k in range(3)] == pytest.approx(positions)
    # padding outside the scan field (stored -2000 -> -3024 HU) reads as air
    assert vol.array.min() == -1024.0
    assert vol.array[1, 0, 0] == -1024.0
    # unenhanced liver around 48 HU, on the patient's right (LPS x < 0)
    centre = vol.array[1, 300:340, 130:170]
    assert 30 < float(np.median(centre)) < 70


def test_real_series_matches_the_reference_label_map_geometry(real_ct: Path) -> None:
    series = read_series(real_ct / "dicom")
    labels = read_nrrd(real_ct / "liver_seg.nrrd")
    np.testing.assert_allclose(labels.affine_lps, series.volume.affine_lps, atol=1e-3)
    liver = np.argwhere(labels.array > 0)
    centroid = series.volume.index_to_lps(liver[:, ::-1].mean(0))
    assert centroid[0] < -50  # the liver is on the patient's right
    assert 30 < float(np.median(series.volume.array[labels.array > 0])) < 70


def test_reference_seg_frames_sit_on_our_slice_positions(real_ct: Path) -> None:
    series = read_series(real_ct / "dicom")
    seg = hd.seg.segread(real_ct / "liver_seg.dcm")
    ours = {round(float(series.volume.index_to_lps([0, 0, k])[2]), 3) for k in range(3)}
    theirs = {
        round(float(f.PlanePositionSequence[0].ImagePositionPatient[2]), 3)
        for f in seg.PerFrameFunctionalGroupsSequence
    }
    assert theirs <= ours
