"""The pixels of a series' slices as one HU volume: decoded in parallel, int16 where exact, each slice's
encoded bytes released as soon as it is decoded.

CT stores integers with a rescale (HU = stored x slope + intercept). With an integer slope and intercept,
as nearly every scanner writes them, the HU are integers and fit int16 after clamping at air: the volume
is then int16, half the memory of float32 and exactly the same values. Any other rescale gives float32.
Slices decode on a few threads: uncompressed and RLE data, and the compressed syntaxes for which the reader asks
imagecodecs first (JPEG-LS, JPEG Lossless, JPEG 2000, HTJ2K: :mod:`.pixel_decoders`), decode outside the GIL.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.pixels.decoders.base import get_decoder

from . import kernels, pixel_decoders
from .errors import InputError
from .kernels import worker_threads
from .series_files import PIXEL_DATA_TAG, Candidate, prefetch

log = logging.getLogger(__name__)

#: Lowest physical CT value; stored values below it are padding outside the scan field of view
#: (-2048 and -3024 are common vendor choices) and are read as air.
AIR_HU = -1024.0
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


def hu_slice(ds: Dataset, out: npt.NDArray[np.generic]) -> None:
    """Decode one slice into ``out`` (int16 or float32 HU, clamped at air; padding read as air)."""
    raw = _stored(ds)  # PixelRepresentation (signed/unsigned) and BitsStored applied
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
        hu_slice(cand.dataset, out)
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
