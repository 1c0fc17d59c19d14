from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from litseg.runtime.preprocess import preprocess
from litseg.runtime.series import read_series
from litseg.train.data.prepare import PrepareConfig, load_case, main, prepare
from litseg.train.phantom.case import PhantomOptions, generate_case, write_case

QUIRK_INDEX = {"none": 0, "ras-array": 1, "flipped-z": 2, "mask-affine-mismatch": 3, "fake-spacing": 4}


@pytest.fixture(scope="module")
def lits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same phantom patient stored with each LiTS quirk, plus a second patient."""
    folder = tmp_path_factory.mktemp("lits")
    for quirk, n in QUIRK_INDEX.items():
        write_case(generate_case(11, PhantomOptions(slices=20, rows=128, tumors=2, quirk=quirk)), folder, n)
    write_case(generate_case(12, PhantomOptions(slices=20, rows=128, tumors=1)), folder, 7)
    return folder


def test_every_quirk_is_detected_and_fixed(lits: Path) -> None:
    ref = load_case(0, lits / "volume-0.nii.gz", lits / "segmentation-0.nii.gz")
    for quirk, n in QUIRK_INDEX.items():
        case = load_case(n, lits / f"volume-{n}.nii.gz", lits / f"segmentation-{n}.nii.gz")
        np.testing.assert_array_equal(case.hu.array, ref.hu.array, err_msg=quirk)
        np.testing.assert_array_equal(case.labels.array, ref.labels.array, err_msg=quirk)
        if quirk == "mask-affine-mismatch":
            assert case.notes["mask_affine_mismatch"] is True
        if quirk == "fake-spacing":
            assert case.notes["suspicious_spacing"] is True
            assert case.notes["anatomy_flip"] == {"x": True, "y": True}
        else:
            assert "anatomy_flip" not in case.notes, quirk


@pytest.fixture(scope="module")
def prepared(lits: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("h5")
    config = PrepareConfig(
        lits, out / "tumor.h5", "liver-tumor", empty_fraction=0.5, dicom_out=out / "dicom", cases=(0, 7)
    )
    return prepare(config), out / "dicom"


def test_hdf5_contents_and_attributes(prepared: tuple[Path, Path]) -> None:
    path, _ = prepared
    with h5py.File(path) as f:
        assert f["images"].shape[1:] == (256, 256) and f["images"].dtype == np.float32
        assert f["images"].compression == "gzip" and f["images"].chunks == (1, 256, 256)
        assert f["masks"].dtype == np.uint8 and set(np.unique(f["masks"][:])) <= {0, 1, 2}
        names = [n.decode() for n in f["case_names"][:]]
        assert names == ["volume-0", "volume-7"]
        assert set(np.unique(f["case_index"][:])) == {0, 1}
        assert f.attrs["task"] == "liver-tumor"
        assert '"target_shape_yx": [256, 256]' in f.attrs["preprocess_spec"]
        counts = f.attrs["class_voxels"]
        assert counts.sum() == f["masks"].size and counts[2] > 0
        images = f["images"][:]
        assert images.min() >= 0.0 and images.max() <= 1.0
        # every slice with liver is kept, empty ones only in part
        assert (f["masks"][:].reshape(len(images), -1).max(1) > 0).sum() >= 1


def test_hdf5_equals_what_the_runtime_feeds_the_model(prepared: tuple[Path, Path]) -> None:
    """One code path: the DICOM series prepare wrote, read and preprocessed by the runtime, gives the
    HDF5 arrays bit for bit."""
    path, dicom = prepared
    series = read_series(dicom / "volume-7" / "ct")
    with h5py.File(path) as f:
        spec_json = f.attrs["preprocess_spec"]
        rows = np.nonzero(f["case_index"][:] == 1)[0]
        slices = f["slice_index"][rows]
        stored = f["images"][rows]
    from litseg.runtime.spec import PreprocessSpec

    runtime_input = preprocess(series.volume, PreprocessSpec.from_json(spec_json)).image.array
    np.testing.assert_array_equal(runtime_input[slices], stored)


def test_dicom_series_are_read_by_dcmtk_and_masks_use_the_seed_grey_levels(
    prepared: tuple[Path, Path],
) -> None:
    _, dicom = prepared
    dcmdump = shutil.which("dcmdump")
    if dcmdump is None:
        pytest.fail("dcmdump (Debian package dcmtk) is not installed; .ci/run installs it")
    first_ct = sorted((dicom / "volume-0" / "ct").iterdir())[0]
    out = subprocess.run([dcmdump, str(first_ct)], capture_output=True, text=True, check=True).stdout
    assert "CTImageStorage" in out and "ImagePositionPatient" in out
    import pydicom

    grey = set()
    for p in (dicom / "volume-0" / "mask-liver-tumor").iterdir():
        grey |= set(np.unique(pydicom.dcmread(p).pixel_array).tolist())
    assert grey == {0, 63, 127}


def test_liver_task_and_idempotent_rerun(lits: Path, tmp_path: Path) -> None:
    args = [
        str(lits),
        "--out",
        str(tmp_path / "liver.h5"),
        "--task",
        "liver",
        "--cases",
        "0,7",
        "--size",
        "64",
    ]
    assert main(args) == 0
    first = hashlib.sha256((tmp_path / "liver.h5").read_bytes()).hexdigest()
    assert main(args) == 0
    assert hashlib.sha256((tmp_path / "liver.h5").read_bytes()).hexdigest() == first
    with h5py.File(tmp_path / "liver.h5") as f:
        assert set(np.unique(f["masks"][:])) == {0, 1}
        assert f.attrs["task"] == "liver"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_bad_input_is_refused_with_exit_code(tmp_path: Path, lits: Path) -> None:
    assert main([str(tmp_path / "nothing"), "--out", str(tmp_path / "x.h5")]) == 3
    (tmp_path / "lone").mkdir()
    shutil.copy(lits / "volume-0.nii.gz", tmp_path / "lone" / "volume-0.nii.gz")
    assert main([str(tmp_path / "lone"), "--out", str(tmp_path / "x.h5")]) == 3
    assert not (tmp_path / "x.h5").exists()
