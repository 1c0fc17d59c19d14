"""A pydicom pixel-decoder plugin backed by imagecodecs (BSD-3-Clause), for two reasons.

**12-bit JPEG Extended.** pydicom's GDCM and Pillow plugins refuse 12-bit samples of JPEG Extended (Process 2
and 4), which CT archives do hold (lossy 12-bit CT); the only pydicom plugin for them, pylibjpeg-libjpeg, is
GPL-3.0 and cannot be a dependency of an Apache-2.0 library that others embed. imagecodecs decodes them with
libjpeg-turbo's 12-bit support; pydicom tries this plugin after its own.

**Speed on the lossless syntaxes archives hold most**: JPEG-LS, JPEG Lossless (Process 14, SV1), JPEG 2000
and HTJ2K. pydicom's default plugins for them (GDCM first) hold the GIL, so the reader's threads decode one
slice at a time; imagecodecs' codecs (CharLS, libjpeg-turbo, OpenJPEG) release it, and are faster a slice
for JPEG-LS and JPEG Lossless (docs/performance.md has the figures). For these syntaxes the reader
asks for this plugin first (:func:`preferred_plugin`) and falls back to pydicom's own plugins if it fails.

The plugin follows pydicom's contract (``is_available``, ``DECODER_DEPENDENCIES``, a frame decoder that
returns the samples as stored); pydicom itself then applies PixelRepresentation, BitsStored and the sign
corrections of JPEG-LS and JPEG 2000, as it does for its own plugins. :func:`register` adds it once per
process.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.pixels.decoders.base import get_decoder

log = logging.getLogger(__name__)

PLUGIN_LABEL = "litseg-imagecodecs"
_JPEG = (uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLossless, uid.JPEGLosslessSV1)
_JPEG_LS = (uid.JPEGLSLossless, uid.JPEGLSNearLossless)
_JPEG_2000 = (uid.JPEG2000Lossless, uid.JPEG2000, uid.HTJ2KLossless, uid.HTJ2KLosslessRPCL, uid.HTJ2K)
#: Syntax -> the imagecodecs codec that decodes it (libjpeg-turbo, CharLS, OpenJPEG).
_CODEC: dict[str, str] = {
    **dict.fromkeys(_JPEG, "JPEG8"),
    **dict.fromkeys(_JPEG_LS, "JPEGLS"),
    **dict.fromkeys(_JPEG_2000, "JPEG2K"),
}
DECODER_DEPENDENCIES = {syntax: ("imagecodecs>=2024.1",) for syntax in _CODEC}
#: Syntaxes for which the reader asks for this plugin before pydicom's own (see the module docstring).
PREFERRED = frozenset({uid.JPEGLossless, uid.JPEGLosslessSV1, *_JPEG_LS, *_JPEG_2000})
_lock = threading.Lock()


def is_available(transfer_syntax: str) -> bool:
    """pydicom's plugin contract: can this plugin decode ``transfer_syntax`` here?"""
    codec = _CODEC.get(transfer_syntax)
    if codec is None:
        return False
    try:
        import imagecodecs
    except ImportError:
        return False
    return bool(getattr(imagecodecs, codec, None) and getattr(imagecodecs, codec).available)


def decode_frame(src: bytes, runner: Any) -> bytes:
    """pydicom's plugin contract: one encoded frame -> its samples as stored (8, 16 or 32 bits a sample)."""
    import imagecodecs

    syntax = runner.transfer_syntax
    if syntax in _JPEG_LS:
        array = imagecodecs.jpegls_decode(src)
    elif syntax in _JPEG_2000:
        array = imagecodecs.jpeg2k_decode(src)
    else:
        # libjpeg-turbo decodes a stream that stops early without an error (it fills the rest of the image, a
        # warning at most); GDCM and CharLS refuse one. A complete JPEG stream ends with its EOI marker (then
        # at most the zero byte that pads a fragment to even length): refuse anything else, as they do.
        if not bytes(src).rstrip(b"\x00").endswith(b"\xff\xd9"):
            raise ValueError("the JPEG stream ends before its EOI marker (truncated or corrupt)")
        array = imagecodecs.jpeg8_decode(src)
    if syntax in PREFERRED:
        if array.ndim != 2 or runner.samples_per_pixel != 1:
            # colour frames: pydicom's own plugins know each codec's colour-space and planar conventions
            raise ValueError(f"{PLUGIN_LABEL} decodes single-sample frames only; got shape {array.shape}")
        # as pydicom's own JPEG-LS and JPEG 2000 plugins: the sample container follows the codestream's
        # precision (8-bit CT in a 16-bit BitsAllocated dataset comes back as 8-bit samples)
        runner.set_option("bits_allocated", 8 * array.dtype.itemsize)
    return bytes(array.tobytes())


def preferred_plugin(ds: Dataset) -> str:
    """The plugin the reader should ask for first for ``ds`` (``decoding_plugin`` of pydicom's decoders):
    this one for a single-sample frame in a :data:`PREFERRED` syntax where it is available, else ``""``
    (pydicom's own choice)."""
    syntax = getattr(ds.get("file_meta"), "TransferSyntaxUID", None)
    if syntax not in PREFERRED or ds.get("SamplesPerPixel", 1) != 1:
        return ""
    return PLUGIN_LABEL if PLUGIN_LABEL in get_decoder(syntax).available_plugins else ""


def register() -> None:
    """Offer the plugin to pydicom's decoders of every syntax it handles (once; safe from any thread)."""
    with _lock:
        for syntax in _CODEC:
            decoder = get_decoder(syntax)
            if PLUGIN_LABEL in decoder.available_plugins or PLUGIN_LABEL in getattr(decoder, "_unavailable", {}):
                continue
            try:
                decoder.add_plugin(PLUGIN_LABEL, (__name__, "decode_frame"))
            except (ImportError, AttributeError, ValueError) as exc:
                log.debug("imagecodecs plugin not added to %s: %s", syntax, exc)
