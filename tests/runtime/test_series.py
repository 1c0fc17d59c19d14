from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from litseg.runtime import series_files, series_pixels
from litseg.runtime.errors import InputError
from litseg.runtime.series import read_series
from tests.factories import (
    SeriesGeometry,
    SeriesOptions,
    evict_from_page_cache,
    make_series,
    phantom_hu,
    write_series,
)

GEO = SeriesGeometry(rows=32, columns=40, slices=8, pixel_spacing_mm=(6.0, 5.0), slice_spacing_mm=7.0)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_shuffled_files_are_sorted_by_position_and_hu_is_exact(tmp_path: Path) -> None:
    datasets = make_series(GEO, SeriesOptions(slope=1.0, intercept=-1024.0))
    write_series(datasets, tmp_path, shuffle_seed=7)
    (tmp_path / "notes.txt").write_text("not dicom")
    before = _digest(tmp_path)
    series = read_series(tmp_path)
    assert _digest(tmp_path) == before  # input untouched
    vol = series.volume
    assert vol.shape_zyx == (8, 32, 40)
    assert vol.spacing_mm == pytest.approx((5.0, 6.0, 7.0))
    np.testing.assert_allclose(vol.affine_lps, GEO.affine_lps(), atol=1e-5)
    np.testing.assert_allclose(vol.array, phantom_hu(GEO.world_grid()), atol=1e-3)
    assert vol.source_sop_uids == tuple(str(d.SOPInstanceUID) for d in datasets)
    assert "PixelData" not in series.headers[0]


@pytest.mark.parametrize(
    ("slope", "intercept", "signed"), [(2.0, -1024.0, False), (0.5, -1000.0, True), (1.0, 0.0, True)]
)
def test_rescale_and_signedness(slope: float, intercept: float, signed: bool) -> None:
    datasets = make_series(GEO, SeriesOptions(slope=slope, intercept=intercept, signed=signed))
    vol = read_series(datasets).volume
    expected = np.round((phantom_hu(GEO.world_grid()) - intercept) / slope) * slope + intercept
    np.testing.assert_allclose(vol.array, np.maximum(expected, -1024.0), atol=1e-3)


def test_padding_value_is_read_as_air() -> None:
    datasets = make_series(GEO, SeriesOptions(signed=True, intercept=0.0, padding_value=-3024))
    vol = read_series(datasets).volume
    assert vol.array.min() == -1024.0
    assert (vol.array == -1024.0).sum() > 0


def test_descending_slices_and_flipped_cosines(tmp_path: Path) -> None:
    geo = SeriesGeometry(rows=16, columns=16, slices=5, row_direction=(-1, 0, 0), column_direction=(0, -1, 0))
    write_series(make_series(geo), tmp_path)
    vol = read_series(tmp_path).volume
    np.testing.assert_allclose(vol.affine_lps, geo.affine_lps(), atol=1e-5)  # normal = +z here


def test_missing_slice_is_refused(tmp_path: Path) -> None:
    datasets = make_series(GEO)
    del datasets[3]
    with pytest.raises(InputError, match=r"uneven slice spacing: 14\.000 mm .* missing slice"):
        read_series(datasets)


def test_duplicate_position_is_refused() -> None:
    datasets = make_series(GEO)
    dup = pydicom.Dataset(datasets[2])
    dup.SOPInstanceUID = generate_uid()
    with pytest.raises(InputError, match="duplicate slice position"):
        read_series([*datasets, dup])


def test_gantry_tilt_is_refused() -> None:
    datasets = make_series(GEO)
    for k, ds in enumerate(datasets):
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.5 * k, z]
    with pytest.raises(InputError, match="gantry tilt"):
        read_series(datasets)


def test_mixed_sizes_and_orientations_are_refused() -> None:
    datasets = make_series(GEO)
    other = make_series(
        SeriesGeometry(
            rows=16,
            columns=40,
            slices=8,
            pixel_spacing_mm=(6.0, 5.0),
            slice_spacing_mm=7.0,
            center_lps=(0, 0, 100),
        )
    )
    for ds in other:
        ds.SeriesInstanceUID = datasets[0].SeriesInstanceUID
    with pytest.raises(InputError, match="mixes Rows values"):
        read_series(datasets + other)
    datasets[1].ImageOrientationPatient = [0, 1, 0, 1, 0, 0]
    with pytest.raises(InputError, match="mixes slice orientations"):
        read_series(datasets)


def test_several_series_need_a_choice(tmp_path: Path) -> None:
    a = make_series(GEO, SeriesOptions(description="Arterial"))
    b = make_series(SeriesGeometry(slices=3), SeriesOptions(description="Venous"))
    write_series(a, tmp_path / "a")
    write_series(b, tmp_path / "b")
    with pytest.raises(InputError, match=r"2 CT image series.*'Arterial', 8 slices.*'Venous', 3 slices.*--series-uid"):
        read_series(tmp_path)
    chosen = read_series(tmp_path, series_uid=str(b[0].SeriesInstanceUID))
    assert chosen.volume.shape_zyx[0] == 3
    with pytest.raises(InputError, match="not among the CT image series"):
        read_series(tmp_path, series_uid="1.2.3")


def test_localizer_and_secondary_capture_are_left_out() -> None:
    datasets = make_series(GEO)
    scout = make_series(SeriesGeometry(slices=1), SeriesOptions(series_uid=str(datasets[0].SeriesInstanceUID)))[0]
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    capture = make_series(SeriesGeometry(slices=1))[0]
    capture.SOPClassUID = SecondaryCaptureImageStorage
    series = read_series([*datasets, scout, capture])
    assert series.volume.shape_zyx[0] == 8


def test_no_ct_series_names_what_was_seen(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(InputError, match=r"no CT image series found.*no DICOM files"):
        read_series(tmp_path)
    with pytest.raises(InputError, match="input not found"):
        read_series(tmp_path / "missing")


def test_in_memory_datasets_are_not_modified() -> None:
    datasets = make_series(GEO)
    read_series(datasets)
    assert all("PixelData" in ds for ds in datasets)


def _resident_bytes(path: Path) -> int:
    out = subprocess.run(
        ["fincore", "--noheadings", "--bytes", "--output", "RES", str(path)], capture_output=True, text=True
    )
    return int(out.stdout.strip() or 0)


def test_prefetch_reads_files_into_the_page_cache_ahead_and_never_blocks(tmp_path: Path) -> None:
    if shutil.which("fincore") is None:
        pytest.skip("needs util-linux fincore to see the page cache")
    data = tmp_path / "slice.dcm"
    data.write_bytes(np.random.default_rng(0).bytes(1 << 21))
    evict_from_page_cache([data])
    if _resident_bytes(data) > 0:
        pytest.skip(f"{tmp_path}'s file system keeps its pages in memory (tmpfs?): nothing to prefetch")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # opened for reading it would wait for a writer: advice must not
    started = time.monotonic()
    series_files.prefetch([tmp_path / "missing", tmp_path, fifo, data], series_files.HEADER_BYTES)
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 10
    while _resident_bytes(data) < series_files.HEADER_BYTES and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _resident_bytes(data) >= series_files.HEADER_BYTES  # at least the header, read without a read


def _assert_read_directly_as_pydicom_decodes(path: Path) -> None:
    """The file's slice takes the direct read, and it gives pydicom's decoder's array (dtype, shape, values)."""
    cand = series_files.read_file(path)
    assert cand is not None
    fast = series_pixels._native_stored(cand)
    assert fast is not None, "the plain case takes the direct read"
    ds = pydicom.dcmread(path)
    expected, _ = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds)
    assert fast.dtype == expected.dtype and fast.shape == expected.shape
    assert np.array_equal(fast, expected)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize(("signed", "bits_stored"), [(False, 16), (True, 16), (False, 12), (True, 12)])
def test_plain_slices_are_read_from_the_file_exactly_as_pydicom_decodes_them(
    tmp_path: Path, syntax: str, signed: bool, bits_stored: int
) -> None:
    geo = SeriesGeometry(rows=256, columns=200, slices=3)  # pixel data past the header size: read later
    datasets = make_series(geo, SeriesOptions(signed=signed, intercept=0.0 if signed else -1024.0))
    for k, ds in enumerate(datasets):
        ds.file_meta.TransferSyntaxUID = syntax
        ds.BitsStored, ds.HighBit = bits_stored, bits_stored - 1
        if bits_stored < 16:  # something in the unused high bits of some words: both readers keep the words
            words = np.frombuffer(ds.PixelData, dtype=np.uint16).copy()
            words[k::7] |= 0xA000
            ds.PixelData = words.tobytes()
    for path in write_series(datasets, tmp_path):
        _assert_read_directly_as_pydicom_decodes(path)
    series = read_series(tmp_path)
    assert series.volume.shape_zyx == (3, 256, 200)


def test_direct_read_leaves_every_other_case_to_pydicom(tmp_path: Path) -> None:
    geo = SeriesGeometry(rows=256, columns=200, slices=3)
    datasets = make_series(geo)
    (path, *_) = write_series(datasets, tmp_path, shuffle_seed=None)
    cand = series_files.read_file(path)
    assert cand is not None and series_pixels._native_stored(cand) is not None
    # in-memory datasets and small slices read with the header: pydicom's decoder
    assert series_pixels._native_stored(series_files.classify(datasets[0], "<dataset 0>")) is None
    small = write_series(make_series(GEO), tmp_path / "small")[0]
    assert series_pixels._native_stored(series_files.read_file(small)) is None  # type: ignore[arg-type]
    # the file changed after its header was read (pixel data now elsewhere, or cut short): not trusted
    changed = pydicom.dcmread(path)
    changed.SeriesDescription = "a longer description that moves the pixel data"
    changed.save_as(path, enforce_file_format=True)
    assert series_pixels._native_stored(cand) is None
    path.write_bytes(path.read_bytes()[:4096])
    assert series_pixels._native_stored(cand) is None


def test_real_ct_reads_the_same_through_the_direct_read(real_ct: Path) -> None:
    for path in sorted((real_ct / "dicom").iterdir()):  # GE, Implicit VR Little Endian, 16 bits
        _assert_read_directly_as_pydicom_decodes(path)
