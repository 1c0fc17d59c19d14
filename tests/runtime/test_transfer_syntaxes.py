"""Every common transfer syntax, encoded by real tools (dcmtk, and imagecodecs/OpenJPEG for JPEG 2000 and
HTJ2K, which dcmtk does not write), read voxel for voxel like the uncompressed series.

Lossless syntaxes must give exactly the uncompressed HU; lossy ones (JPEG baseline/extended, JPEG-LS
near-lossless) must give exactly what dcmtk's own decoder (dcmdjpeg, dcmdjpls) makes of the same files.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import HTJ2KLossless, JPEG2000Lossless

from litseg.runtime import pixel_decoders
from litseg.runtime.errors import InputError
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


#: Stored layouts, as scanners write them: 12-bit unsigned with intercept -1024 (GE, Philips), 12-bit signed
#: (sign-extended into 16 bits) or 16-bit signed with intercept 0 and negative values (Siemens, Canon).
LAYOUTS = ("unsigned-12bit", "signed-12bit", "signed-16bit")
#: dcmtk (like most scanners) does not encode signed data near-lossless JPEG-LS.
CASES = [
    (layout, name)
    for layout in LAYOUTS
    for name in sorted(DCMTK)
    if not (layout.startswith("signed") and name == "jpeg-ls-near-lossless")
]


@pytest.fixture(scope="module")
def series_of(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``series_of(layout)``: a 4-slice CT series of that stored layout, uncompressed (written once)."""
    made: dict[str, Path] = {}

    def make(layout: str) -> Path:
        if layout not in made:
            if layout == "signed-16bit":
                datasets = make_series(SeriesGeometry(slices=4), SeriesOptions(intercept=0.0, signed=True))
            elif layout == "signed-12bit":
                datasets = make_series(SeriesGeometry(slices=4), SeriesOptions(intercept=0.0, signed=True))
                for ds in datasets:
                    ds.BitsStored, ds.HighBit = 12, 11
                    stored = np.clip(np.frombuffer(ds.PixelData, np.int16), -2048, 2047)
                    ds.PixelData = stored.astype(np.int16).tobytes()
            else:
                datasets = make_series(SeriesGeometry(slices=4), SeriesOptions())
                for ds in datasets:
                    ds.BitsStored, ds.HighBit = 12, 11
                    stored = np.clip(np.frombuffer(ds.PixelData, np.uint16), 0, 4095)
                    ds.PixelData = stored.astype(np.uint16).tobytes()
            made[layout] = tmp_path_factory.mktemp(layout)
            write_series(datasets, made[layout])
        return made[layout]

    return make


def _convert(command: list[str], src: Path, dst: Path) -> None:
    dst.mkdir()
    for path in sorted(src.iterdir()):
        subprocess.run([*command, str(path), str(dst / path.name)], check=True, capture_output=True)


@pytest.mark.parametrize(("layout", "name"), CASES)
def test_dcmtk_encoded_series_reads_voxel_for_voxel(
    layout: str, name: str, series_of: Callable[[str], Path], tmp_path: Path
) -> None:
    uncompressed = series_of(layout)
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


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("syntax", [JPEG2000Lossless, HTJ2KLossless], ids=["jpeg2000-lossless", "htj2k-lossless"])
def test_jpeg2000_and_htj2k_series_read_voxel_for_voxel(
    syntax: pydicom.uid.UID, layout: str, series_of: Callable[[str], Path], tmp_path: Path
) -> None:
    uncompressed = series_of(layout)
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
    _assert_preferred_plugin_matches_the_others(tmp_path / "enc", syntax)


@pytest.mark.parametrize(
    ("layout", "name"), [case for case in CASES if case[1].startswith(("jpeg-lossless", "jpeg-ls"))]
)
def test_the_preferred_plugin_decodes_as_pydicoms_own_plugins(
    layout: str, name: str, series_of: Callable[[str], Path], tmp_path: Path
) -> None:
    """The reader asks imagecodecs first for these syntaxes (faster, and outside the GIL): its frames are those
    of every other plugin pydicom has for the syntax, sample for sample, signed and unsigned. (The series
    tests above alone could pass through a silent fallback to pydicom's plugins; this one cannot.)"""
    encode, syntax, _ = DCMTK[name]
    _convert(encode, series_of(layout), tmp_path / "enc")
    _assert_preferred_plugin_matches_the_others(tmp_path / "enc", syntax)


def _assert_preferred_plugin_matches_the_others(folder: Path, syntax: str) -> None:
    pixel_decoders.register()
    decoder = get_decoder(syntax)
    others = [p for p in decoder.available_plugins if p != pixel_decoders.PLUGIN_LABEL]
    assert others, f"no other plugin for {syntax} to compare with"
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        assert pixel_decoders.preferred_plugin(ds) == pixel_decoders.PLUGIN_LABEL
        ours, _ = decoder.as_array(ds, decoding_plugin=pixel_decoders.PLUGIN_LABEL)
        for other in others:
            theirs, _ = decoder.as_array(ds, decoding_plugin=other)
            assert ours.dtype == theirs.dtype
            np.testing.assert_array_equal(ours, theirs, err_msg=f"{path.name}: {other}")


def test_colour_frames_are_left_to_pydicoms_plugins() -> None:
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGLSLossless
    ds.SamplesPerPixel = 3
    assert pixel_decoders.preferred_plugin(ds) == ""
    ds.SamplesPerPixel = 1
    pixel_decoders.register()
    assert pixel_decoders.preferred_plugin(ds) == pixel_decoders.PLUGIN_LABEL
    ds.file_meta.TransferSyntaxUID = pydicom.uid.RLELossless  # pydicom's own RLE decoder is fast already
    assert pixel_decoders.preferred_plugin(ds) == ""


@pytest.mark.parametrize(
    ("layout", "name"),
    [
        ("signed-16bit", "jpeg-lossless-sv1"),
        ("signed-16bit", "jpeg-lossless-p14"),
        ("signed-16bit", "jpeg-ls-lossless"),
        ("unsigned-12bit", "jpeg-extended-12bit"),  # only imagecodecs decodes it: no other plugin to refuse it
    ],
)
def test_a_truncated_frame_is_refused_naming_the_file(
    layout: str, name: str, series_of: Callable[[str], Path], tmp_path: Path
) -> None:
    """libjpeg-turbo (imagecodecs) decodes a JPEG stream that stops halfway without an error; the reader must
    refuse it as GDCM and CharLS do, not segment half an image."""
    encode, _, _ = DCMTK[name]
    _convert(encode, series_of(layout), tmp_path / "enc")
    victim = sorted((tmp_path / "enc").iterdir())[1]
    ds = pydicom.dcmread(victim)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: len(frame) * 3 // 4]])
    ds.save_as(victim, enforce_file_format=True)
    with pytest.raises(InputError, match=f"cannot decode the pixels of {victim}"):
        read_series(tmp_path / "enc")
