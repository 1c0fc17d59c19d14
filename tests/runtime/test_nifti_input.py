"""NIfTI CT volumes in: the same labels at the same world positions as the DICOM series they were made from,
written back on the input's own grid and affine; refusals name their reason."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from litseg.runtime import InputError, RunConfig, read_nifti_series, read_series, segment, write_results
from litseg.runtime.cli import main
from litseg.runtime.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_USAGE, UsageError
from litseg.runtime.volume import lps_to_ras
from tests.factories import SeriesGeometry, make_series, phantom_labels, write_series

GEOMETRY = SeriesGeometry(rows=60, columns=68, slices=10, pixel_spacing_mm=(3.4, 3.1), slice_spacing_mm=5.0)


def _file_layout(
    array_zyx: np.ndarray, affine_lps: np.ndarray, flips: tuple[bool, bool, bool], order: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """NIfTI data and RAS affine for a volume: its (i, j, k) axes flipped as asked, then stored in ``order``."""
    data = np.asarray(array_zyx).transpose(2, 1, 0)  # (i, j, k)
    affine = np.array(affine_lps, dtype=np.float64)
    for axis, flip in enumerate(flips):
        if flip:
            data = np.flip(data, axis)
            affine[:3, 3] += affine[:3, axis] * (data.shape[axis] - 1)
            affine[:3, axis] *= -1.0
    data = data.transpose(order)
    affine[:3, :3] = affine[:3, list(order)]
    return np.ascontiguousarray(data), lps_to_ras(affine)


def _save(path: Path, data: np.ndarray, affine_ras: np.ndarray, raw_offset: int = 0) -> Path:
    """Save as NIfTI; with ``raw_offset`` the stored values are HU + offset and scl_inter takes it off again."""
    image = nib.Nifti1Image(data, affine_ras)
    image.header.set_xyzt_units("mm")
    if not raw_offset:
        nib.save(image, str(path))
        return path
    # nibabel's writer chooses its own scaling; a scanner's converter stores raw values and scl_inter, so the
    # header and the data are written here by hand (uncompressed: header, then the data in Fortran order).
    path = path.with_name(path.name.removesuffix(".gz"))
    header = image.header
    header.set_data_dtype(np.uint16)
    header["scl_slope"], header["scl_inter"] = 1.0, -float(raw_offset)
    with open(path, "wb") as f:
        header.write_to(f)
        f.seek(int(header.get_data_offset()))
        f.write((data.astype(np.int32) + raw_offset).astype(np.uint16).tobytes(order="F"))
    return path


@pytest.fixture(scope="module")
def dicom_case(tmp_path_factory: pytest.TempPathFactory, tumor_model: Path) -> tuple[Path, np.ndarray]:
    """The DICOM series on disk and its labels from litseg (checked against the phantom's truth)."""
    folder = tmp_path_factory.mktemp("dicom") / "series"
    write_series(make_series(GEOMETRY), folder)
    result = segment(folder, RunConfig(model=tumor_model, device="cpu"))
    truth = phantom_labels(GEOMETRY.world_grid())
    assert (result.labels.array == truth).mean() > 0.99
    assert (result.labels.array == 2).sum() > 20  # a tumor to place, not only liver
    return folder, np.asarray(result.labels.array)


VARIANTS = [(flips, (0, 1, 2)) for flips in itertools.product((False, True), repeat=3)] + [
    ((False, False, False), (1, 0, 2)),  # rows and columns swapped
    ((True, False, True), (2, 0, 1)),  # the slice axis stored first, as some converters write
]


@pytest.mark.parametrize(("flips", "order"), VARIANTS, ids=[f"flip{f}-order{o}" for f, o in VARIANTS])
def test_nifti_gives_the_dicom_labels_at_the_same_world_positions(  # type: ignore[no-untyped-def]
    flips, order, dicom_case, tumor_model: Path, tmp_path: Path
) -> None:
    folder, dicom_labels = dicom_case
    volume = read_series(folder).volume
    data, affine_ras = _file_layout(volume.array, volume.affine_lps, flips, order)
    (tmp_path / "in").mkdir()
    path = _save(tmp_path / "in" / "volume-7.nii.gz", data, affine_ras, raw_offset=1024 if flips[0] else 0)
    result = segment(path, RunConfig(model=tumor_model, device="cpu"))
    assert result.series.volume.array.dtype == np.int16  # HU exact through scl_inter
    paths = write_results(result, tmp_path / "out")
    assert sorted(paths) == ["json", "nifti", "overlay"]
    written = nib.load(str(paths["nifti"]))
    # the input's own grid and affine, exactly
    assert written.shape == data.shape
    original = nib.load(str(path))
    assert np.array_equal(written.affine, original.affine)
    for form in ("qform_code", "sform_code"):
        assert written.header[form] == original.header[form]
    # every DICOM voxel's world position finds the same label in the NIfTI output
    ijk_dicom = np.stack(np.meshgrid(*(np.arange(n) for n in volume.shape_zyx[::-1]), indexing="ij"), -1)
    world_ras = (
        lps_to_ras(volume.affine_lps)[:3] @ np.concatenate([ijk_dicom, np.ones_like(ijk_dicom[..., :1])], -1)[..., None]
    )
    file_index = np.linalg.inv(written.affine)[:3, :3] @ world_ras[..., 0].reshape(-1, 3).T
    file_index = np.rint(file_index.T + np.linalg.inv(written.affine)[:3, 3]).astype(int)
    out = np.asarray(written.dataobj)
    labels_at_world = out[file_index[:, 0], file_index[:, 1], file_index[:, 2]].reshape(ijk_dicom.shape[:3])
    assert np.array_equal(labels_at_world, dicom_labels.transpose(2, 1, 0))
    report = json.loads(paths["json"].read_text())
    assert report["input_format"] == "nifti" and report["tumor_count"] == 1


def test_litseg_run_takes_a_nifti_volume_and_refuses_seg_for_it(  # type: ignore[no-untyped-def]
    dicom_case, tumor_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _ = dicom_case
    volume = read_series(folder).volume
    (tmp_path / "in").mkdir()
    path = _save(tmp_path / "in" / "volume-3.nii", *_file_layout(volume.array, volume.affine_lps, (0, 0, 0), (0, 1, 2)))
    args = [str(path), "--model", str(tumor_model), "--device", "cpu", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "res"), "--formats", "seg,nifti"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "seg" in err and "NIfTI" in err
    assert not (tmp_path / "res").exists()
    assert main([*args, "--out", str(tmp_path / "res")]) == EXIT_OK
    assert sorted(p.name for p in (tmp_path / "res").iterdir()) == [
        ".litseg",
        "labels.nii.gz",
        "overlay.png",
        "report.json",
    ]
    monkeypatch.chdir(tmp_path)  # without --out: ./litseg-out/<the file's name>
    assert main([*args, "--formats", "nifti"]) == EXIT_OK
    assert (tmp_path / "litseg-out" / "volume-3" / "labels.nii.gz").is_file()
    with pytest.raises(UsageError, match="mask-dicom"):
        write_results(segment(path, RunConfig(model=tumor_model)), tmp_path / "api", formats=("mask-dicom",))


def _affine_ras(spacing: float = 2.0) -> np.ndarray:
    return np.diag([-spacing, -spacing, spacing, 1.0])


def _ct(shape: tuple[int, ...] = (16, 16, 6)) -> np.ndarray:
    data = np.full(shape, -1000, dtype=np.int16)
    data[4:12, 4:12] = 60
    return data


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: nib.Nifti1Image(np.stack([_ct(), _ct()], -1), _affine_ras()), "4-D"),
        (lambda: nib.Nifti1Image((_ct() > 0).astype(np.uint8), _affine_ras()), "does not look like CT"),
        (lambda: nib.Nifti1Image(_ct() + 1024, _affine_ras()), "scl_inter"),
        (lambda: nib.Nifti1Image(_ct(), _affine_ras() @ _shear()), "drift in-plane"),
        (lambda: nib.Nifti1Image(_ct().transpose(2, 0, 1), _slice_first_sheared()), "drift in-plane by 0.60 mm"),
        (lambda: nib.Nifti1Image(_ct((16, 16, 2)), _affine_ras()), "2 slice"),
        (lambda: nib.Nifti1Image(_ct().astype(np.float32) * np.nan, _affine_ras()), "NaN"),
        (lambda: _with_codes(nib.Nifti1Image(_ct(), _affine_ras()), 0, 0), "no orientation"),
        (lambda: _disagreeing_forms(), "qform and an sform that place its voxels up to 60 mm apart"),
    ],
    ids=["4-D", "label-map", "no-rescale", "sheared", "sheared-slice-first", "thin", "nan", "no-orientation", "qforms"],
)
def test_refused_volumes_name_their_reason(make, message: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / "volume.nii.gz"
    nib.save(make(), str(path))
    with pytest.raises(InputError, match=message):
        read_nifti_series(path)
    assert main([str(path), "--out", str(tmp_path / "out"), "--quiet"]) == EXIT_BAD_INPUT


def _shear() -> np.ndarray:
    shear = np.eye(4)
    shear[0, 2] = 0.3  # the slice axis leans 0.3 column per slice: 0.6 mm a slice
    return shear


def _slice_first_sheared() -> np.ndarray:
    """Slices stored along the file's first axis, each 0.6 mm further right than the one before."""
    return np.array([[0.6, -2.0, 0.0, 0.0], [0.0, 0.0, -2.0, 0.0], [2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


def _with_codes(image: nib.Nifti1Image, qcode: int, scode: int) -> nib.Nifti1Image:
    image.set_qform(None if qcode == 0 else image.affine, code=qcode)
    image.set_sform(None if scode == 0 else image.affine, code=scode)
    return image


def _disagreeing_forms() -> nib.Nifti1Image:
    image = nib.Nifti1Image(_ct(), _affine_ras())
    image.set_qform(np.diag([2.0, -2.0, 2.0, 1.0]), code=1)  # left and right swapped against the sform
    image.set_sform(_affine_ras(), code=1)
    return image


def test_a_real_ct_as_nifti_gets_the_labels_of_its_dicom_series(real_ct: Path, tmp_path: Path) -> None:
    """The real GE series (padding -3024, intercept -1024) through the bundled model, read from DICOM and from
    a NIfTI file holding the same voxels with the rows flipped: the same labels at the same world positions."""
    dicom = segment(real_ct / "dicom", RunConfig(device="cpu"))
    volume = read_series(real_ct / "dicom").volume
    (tmp_path / "in").mkdir()
    path = _save(tmp_path / "in" / "real.nii.gz", *_file_layout(volume.array, volume.affine_lps, (0, 1, 0), (1, 0, 2)))
    nifti = segment(path, RunConfig(device="cpu"))
    assert (dicom.labels.array == 1).sum() > 1000  # the manual liver is there: the model finds liver
    # the NIfTI volume's (i, j) are the DICOM's (flipped row, column): transpose back, then unflip the rows
    back = np.asarray(nifti.labels.array).transpose(0, 2, 1)[:, ::-1, :]
    assert np.array_equal(back, dicom.labels.array)
    assert np.allclose(nifti.labels.index_to_lps([0, 0, 0]), volume.index_to_lps([0, volume.shape_zyx[1] - 1, 0]))


def test_a_qform_only_volume_keeps_its_qform_only(dicom_case, tumor_model: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder, dicom_labels = dicom_case
    volume = read_series(folder).volume
    data, affine_ras = _file_layout(volume.array, volume.affine_lps, (True, True, False), (0, 1, 2))
    image = nib.Nifti1Image(data, affine_ras)
    image.set_qform(affine_ras, code=1)
    image.set_sform(None, code=0)
    (tmp_path / "in").mkdir()
    nib.save(image, str(tmp_path / "in" / "q.nii.gz"))
    result = segment(tmp_path / "in" / "q.nii.gz", RunConfig(model=tumor_model))
    assert np.array_equal(np.asarray(result.labels.array)[:, ::-1, ::-1], dicom_labels)
    written = nib.load(str(write_results(result, tmp_path / "out", formats=("nifti",))["nifti"]))
    assert (int(written.header["qform_code"]), int(written.header["sform_code"])) == (1, 0)
    assert np.allclose(written.affine, nib.load(str(tmp_path / "in" / "q.nii.gz")).affine, atol=1e-5)


def test_qform_and_sform_that_differ_by_rounding_only_are_accepted(tmp_path: Path) -> None:
    image = nib.Nifti1Image(_ct(), _affine_ras())
    nudged = _affine_ras()
    nudged[:3, 3] += 0.01  # a hundredth of a mm: a converter's rounding, not another geometry
    image.set_qform(nudged, code=1)
    image.set_sform(_affine_ras(), code=1)
    nib.save(image, str(tmp_path / "v.nii.gz"))
    assert np.array_equal(read_nifti_series(tmp_path / "v.nii.gz").volume.affine_lps[:3, 3], [0.0, 0.0, 0.0])
