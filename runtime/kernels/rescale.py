"""Stored pixel values to HU in one pass: the decoder's integers, the rescale, the clamp to int16 and the
padding value, without the int32 temporaries numpy would make for each step."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .threads import jit

#: Integer dtypes pixel decoders return for CT (BitsAllocated 8, 16 or 32, signed or not).
STORED_DTYPES: tuple[type, ...] = (np.uint16, np.int16, np.uint8, np.int8, np.uint32, np.int32)
INT16_MAX = 32767


@jit
def _rescale_kernel(raw, out, slope, intercept, air, padding, has_padding):  # type: ignore[no-untyped-def]
    # 1-D views of the slice (the caller ravels them): a reshape here would cost its overload's compilation
    for i in range(raw.size):
        stored = np.int64(raw[i])
        if has_padding and stored == padding:
            out[i] = air
        else:
            out[i] = min(max(stored * slope + intercept, air), INT16_MAX)


def rescale_to_hu(
    raw: npt.NDArray[np.integer], out: npt.NDArray[np.int16], slope: int, intercept: int, air: int, padding: int | None
) -> None:
    """``out = clip(raw * slope + intercept, air, 32767)``, and ``air`` where ``raw == padding``.

    Parameters
    ----------
    raw
        Stored values of one slice as the decoder returns them (an integer dtype of
        :data:`STORED_DTYPES` in native byte order, C-contiguous).
    out
        int16 array of the same shape, C-contiguous (e.g. a slice of the volume).
    slope, intercept, air
        Integer rescale (HU = stored x slope + intercept) and the lowest HU kept.
    padding
        PixelPaddingValue (a stored value, PS3.3 C.7.5.1.1.2) read as air, or None.
    """
    if raw.dtype.type not in STORED_DTYPES or not raw.dtype.isnative or out.dtype != np.int16:
        raise TypeError(
            f"raw must have a native-endian dtype of {STORED_DTYPES} and out int16; got {raw.dtype.str}, {out.dtype}"
        )
    if raw.shape != out.shape or not (raw.flags.c_contiguous and out.flags.c_contiguous):
        raise ValueError(f"raw {raw.shape} and out {out.shape} must have one shape and be C-contiguous")
    stored_padding = 0 if padding is None else int(padding)
    flat_raw, flat_out = raw.reshape(-1), out.reshape(-1)  # views: both are C-contiguous
    _rescale_kernel(flat_raw, flat_out, int(slope), int(intercept), int(air), stored_padding, padding is not None)
