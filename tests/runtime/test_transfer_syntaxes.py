"""Every common transfer syntax, encoded by real tools (dcmtk, and imagecodecs/OpenJPEG for JPEG 2000 and
HTJ2K, which dcmtk does not write), read voxel for voxel like the uncompressed series.

Lossless syntaxes must give exactly the uncompressed HU; lossy ones (JPEG baseline/extended, JPEG-LS
near-lossless) must give exactly what dcmtk's own decoder (dcmdjpeg, dcmdjpls) makes of the same files.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import HTJ2KLossless, JPEG2000Lossless

from litseg.runtime.series import read_series
from tests.factories import SeriesGeometry, SeriesOptions, make_series, write_series

pytestmark = pytest.mark.skipif(shutil.which("dcmcjpeg") is None, reason="needs Debian dcmtk (dcmcjpeg, dcmcjpls)")

#: name -> (encoder command, transfer syntax UID, decoder command for lossy syntaxes or None)
DCMTK = {
    "jpeg-lossless-sv1": (["dcmcjpeg", "+e1"], "1.2.840.10008.1.2.4.70", None),
    "jpeg-lossless-p14": (["dcmcjpeg", "+el", "+sv", "6"], "1.2.840.10008.1.2.4.57", None),
    "jpeg-baseline": (["dcmcjpeg", "+eb"], "1.2.840.10008.1.2.4.50", ["dcmdjpeg"]),
    "jpeg-extended-12bit": (["dcmcjpeg", "+ee"], "1.2.840.10008.1.2.4.51", ["dcmdjpeg"]),
    "jpeg-ls-lossless": (["dcmcjpls"], "1.2.840.10008.1.2.4.80", None),
    "jpeg-ls-near-lossless": (["dcmcjpls", "+en"], "1.2.840.10008.1.2.4.81", ["dcmdjpls"]),
    "rle": (["dcmcrle"], "1.2.840.10008.1.2.5", None),
    "deflated": (["dcmconv", "+td"], "1.2.840.10008.1.2.1.99", None),
    "explicit-big-endian": (["dcmconv", "+tb"], "1.2.840.10008.1.2.2", None),
    "implicit-little-endian": (["dcmconv", "+ti"], "1.2.840.10008.1.2", None),
}


@pytest.fixture(scope="module")
def uncompressed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-bit CT series (as scanners store it: BitsStored 12, intercept -1024), uncompressed."""
    datasets = make_series(SeriesGeometry(slices=4), SeriesOptions())
    for ds in datasets:
        ds.BitsStored, ds.HighBit = 12, 11
        stored = np.clip(np.frombuffer(ds.PixelData, np.uint16), 0, 4095)
        ds.PixelData = stored.astype(np.uint16).tobytes()
    folder = tmp_path_factory.mktemp("raw")
    write_series(datasets, folder)
    return folder


def _convert(command: list[str], src: Path, dst: Path) -> None:
    dst.mkdir()
    for path in sorted(src.iterdir()):
        subprocess.run([*command, str(path), str(dst / path.name)], check=True, capture_output=True)


@pytest.mark.parametrize("name", sorted(DCMTK))
def test_dcmtk_encoded_series_reads_voxel_for_voxel(name: str, uncompressed: Path, tmp_path: Path) -> None:
    encode, syntax, decode = DCMTK[name]
    _convert(encode, uncompressed, tmp_path / "enc")
    assert {str(pydicom.dcmread(p).file_meta.TransferSyntaxUID) for p in (tmp_path / "enc").iterdir()} == {syntax}
    reference_folder = uncompressed
    if decode is not None:  # lossy: the reference is dcmtk's own decoding of the same files
        _convert(decode, tmp_path / "enc", tmp_path / "dec")
        reference_folder = tmp_path / "dec"
    ours = read_series(tmp_path / "enc").volume
    reference = read_series(reference_folder).volume
    np.testing.assert_array_equal(ours.array, reference.array)
    np.testing.assert_array_equal(ours.affine_lps, reference.affine_lps)
    if decode is not None:  # and lossy really lost something: the test compares what it claims to
        assert not np.array_equal(ours.array, read_series(uncompressed).volume.array)


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, HTJ2KLossless], ids=["jpeg2000-lossless", "htj2k-lossless"])
def test_jpeg2000_and_htj2k_series_read_voxel_for_voxel(
    syntax: pydicom.uid.UID, uncompressed: Path, tmp_path: Path
) -> None:
    imagecodecs = pytest.importorskip("imagecodecs")
    encode = imagecodecs.htj2k_encode if syntax == HTJ2KLossless else imagecodecs.jpeg2k_encode
    (tmp_path / "enc").mkdir()
    for path in sorted(uncompressed.iterdir()):
        ds = pydicom.dcmread(path)
        frame = encode(ds.pixel_array, level=0)  # level 0: lossless
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(tmp_path / "enc" / path.name, enforce_file_format=True)
    ours = read_series(tmp_path / "enc").volume.array
    np.testing.assert_array_equal(ours, read_series(uncompressed).volume.array)
