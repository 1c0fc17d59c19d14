"""The pixels of a series' slices as one HU volume: decoded in parallel, int16 where exact, each slice's
encoded bytes released as soon as it is decoded.

CT stores integers with a rescale (HU = stored x slope + intercept). With an integer slope and intercept,
as nearly every scanner writes them, the HU are integers and fit int16 after clamping at air: the volume
is then int16, half the memory of float32 and exactly the same values. Any other rescale gives float32.
Slices decode on a few threads: uncompressed and RLE data, and the compressed syntaxes for which the reader asks
imagecodecs first (JPEG-LS, JPEG Lossless, JPEG 2000, HTJ2K: :mod:`.pixel_decoders`), decode outside the GIL;
plain uncompressed little-endian 16-bit slices are read straight from their files (:func:`_native_stored`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from . import kernels, pixel_decoders
from .errors import InputError
from .hu import AIR_HU
from .kernels import worker_threads
from .series_files import PIXEL_DATA_TAG, Candidate, prefetch

log = logging.getLogger(__name__)

INT16_MAX = 32767


def _rescale(ds: Dataset) -> tuple[float, float]:
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return slope, intercept


def hu_dtype(datasets: Sequence[Dataset]) -> type[np.int16] | type[np.float32]:
    """int16 when every slice's rescale maps integers to integers, else float32."""
    for ds in datasets:
        slope, intercept = _rescale(ds)
        if not (slope.is_integer() and intercept.is_integer()):
            return np.float32
    return np.int16


def _stored(ds: Dataset) -> npt.NDArray[np.generic]:
    # The decoder directly, not ds.pixel_array: that would cache the array on the dataset, and a caller's
    # in-memory dataset must not be modified.
    decoder = get_decoder(ds.file_meta.TransferSyntaxUID)
    plugin = pixel_decoders.preferred_plugin(ds)  # faster, and outside the GIL, where it applies
    if plugin:
        try:
            array, _ = decoder.as_array(ds, decoding_plugin=plugin)
            return array
        except Exception as exc:  # e.g. a codestream imagecodecs rejects: pydicom's own plugins may not
            log.debug("%s could not decode a frame (%s); trying pydicom's plugins", plugin, exc)
    array, _ = decoder.as_array(ds)
    return array


#: Uncompressed syntaxes whose 16-bit stored values are numpy's little-endian integers as they lie in the file.
_NATIVE_LITTLE_ENDIAN = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
#: The Pixel Data tag as it lies in a little-endian file: group 7FE0, element 0010.
_PIXEL_DATA_TAG_BYTES = b"\xe0\x7f\x10\x00"


def _native_stored(cand: Candidate) -> npt.NDArray[np.generic] | None:
    """The stored values of an uncompressed little-endian 16-bit slice, read straight from its file; ``None``
    where anything differs from that plain case (pydicom's decoder then reads it).

    The same array as pydicom's decoder gives (which spends milliseconds of Python per slice, holding the GIL;
    this read is one ``readinto``, outside it), including pydicom's default for bits above BitsStored: shifted out, so
    that unsigned values are masked and signed ones sign-extended. The element's tag is checked where the
    header said its value starts, so a file changed since its header was read is left to pydicom (which then
    reports it).
    """
    ds = cand.dataset
    if cand.in_memory or getattr(ds.get("file_meta"), "TransferSyntaxUID", None) not in _NATIVE_LITTLE_ENDIAN:
        return None
    elem = ds.get_item(PIXEL_DATA_TAG, keep_deferred=True)
    if not isinstance(elem, RawDataElement) or elem.value is not None or elem.value_tell is None:
        return None  # not deferred (small enough to be read with the header): pydicom has it in memory
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        simple = (
            int(ds.BitsAllocated) == 16
            and int(ds.get("SamplesPerPixel", 1) or 1) == 1
            and int(ds.get("NumberOfFrames", 1) or 1) == 1
            and str(ds.get("PhotometricInterpretation", "")).strip() in ("MONOCHROME1", "MONOCHROME2")
            and int(ds.PixelRepresentation) in (0, 1)
        )
        unused_bits = 16 - int(ds.get("BitsStored", 16) or 16)
    except (AttributeError, TypeError, ValueError):
        return None
    header = 8 if ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian else 12  # tag, (VR, 0,) length
    length_ok = 2 * rows * columns <= elem.length != 0xFFFFFFFF  # undefined length: not native data
    if not simple or not 0 <= unused_bits < 16 or not length_ok or elem.value_tell < header:
        return None
    stored = np.empty((rows, columns), dtype="<i2" if int(ds.PixelRepresentation) else "<u2")
    try:
        with open(cand.origin, "rb") as f:
            f.seek(elem.value_tell - header)
            if f.read(4) != _PIXEL_DATA_TAG_BYTES:
                return None
            f.seek(elem.value_tell)
            if f.readinto(memoryview(stored).cast("B")) != stored.nbytes:
                return None
    except OSError:
        return None
    if unused_bits:  # as pydicom: the bits above BitsStored are not the value's (masked, or the sign extended)
        np.left_shift(stored, unused_bits, out=stored)
        np.right_shift(stored, unused_bits, out=stored)
    return stored


def hu_slice(ds: Dataset, out: npt.NDArray[np.generic], stored: npt.NDArray[np.generic] | None = None) -> None:
    """Decode one slice into ``out`` (int16 or float32 HU, clamped at air; padding read as air); ``stored``:
    its stored values when already read (:func:`_native_stored`)."""
    raw = _stored(ds) if stored is None else stored  # PixelRepresentation (signed/unsigned) and BitsStored applied
    slope, intercept = _rescale(ds)
    padding = ds.get("PixelPaddingValue")
    if out.dtype == np.int16 and raw.dtype.type in kernels.STORED_DTYPES and raw.shape == out.shape:
        stored_padding = None if padding is None else int(padding)
        native = np.ascontiguousarray(raw, dtype=raw.dtype.newbyteorder("="))  # Explicit VR Big Endian: swapped
        kernels.rescale_to_hu(native, out.view(np.int16), int(slope), int(intercept), int(AIR_HU), stored_padding)
        return
    hu: npt.NDArray[np.generic]  # a float rescale, or a dtype no CT decoder returns: numpy
    if out.dtype == np.int16:
        hu = np.clip(raw.astype(np.int32) * int(slope) + int(intercept), int(AIR_HU), INT16_MAX)
    else:
        hu = np.maximum(raw.astype(np.float32) * np.float32(slope) + np.float32(intercept), np.float32(AIR_HU))
    if padding is not None:
        # PixelPaddingValue is a stored value, not HU (PS3.3 C.7.5.1.1.2).
        hu[raw == int(padding)] = AIR_HU
    out[...] = hu


def _decode_into(cand: Candidate, out: npt.NDArray[np.generic]) -> None:
    try:
        hu_slice(cand.dataset, out, _native_stored(cand))
    except Exception as exc:  # pydicom and its decoder plugins raise many types for undecodable pixel data
        syntax = getattr(cand.dataset.get("file_meta"), "TransferSyntaxUID", None)
        name = f"{syntax.name} ({syntax})" if syntax is not None else "unknown"
        message = " ".join(str(exc).split())
        raise InputError(
            f"cannot decode the pixels of {cand.origin} (transfer syntax {name}): {message}; the file is corrupt "
            "or its encoding unsupported: re-export the series uncompressed or with a standard compression"
        ) from exc
    if not cand.in_memory:  # a dataset litseg read itself: its encoded bytes are no longer needed
        del cand.dataset[PIXEL_DATA_TAG]


def decode_volume(cands: Sequence[Candidate], rows: int, columns: int) -> npt.NDArray[np.generic]:
    """The HU volume ``(len(cands), rows, columns)`` of sorted slices, int16 where exact (:func:`hu_dtype`)."""
    dtype = hu_dtype([c.dataset for c in cands])
    volume = np.empty((len(cands), rows, columns), dtype=dtype)
    prefetch(c.origin for c in cands if not c.in_memory)  # the pixel data, all at once
    threads = min(worker_threads(), len(cands))
    if threads <= 1:
        for k, cand in enumerate(cands):
            _decode_into(cand, volume[k])
        return volume
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="litseg-decode") as pool:
        for future in [pool.submit(_decode_into, cand, volume[k]) for k, cand in enumerate(cands)]:
            future.result()  # the first undecodable slice's error, in slice order
    return volume
