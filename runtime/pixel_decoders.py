"""A pydicom pixel-decoder plugin for the JPEG syntaxes the default plugins leave out: 12-bit JPEG Extended.

pydicom's GDCM and Pillow plugins refuse 12-bit samples of JPEG Extended (Process 2 and 4), which CT
archives do hold (lossy 12-bit CT); the only pydicom plugin for them, pylibjpeg-libjpeg, is GPL-3.0 and
cannot be a dependency of an Apache-2.0 library that others embed. imagecodecs (BSD-3-Clause) decodes
them with libjpeg-turbo's 12-bit support; this module offers it to pydicom as one more plugin, following
pydicom's plugin contract (``is_available``, ``DECODER_DEPENDENCIES``, a frame decoder). :func:`register`
adds it once per process; pydicom then tries it after its own plugins.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from pydicom import uid
from pydicom.pixels.decoders.base import JPEGBaseline8BitDecoder, JPEGExtended12BitDecoder

log = logging.getLogger(__name__)

PLUGIN_LABEL = "litseg-imagecodecs"
DECODER_DEPENDENCIES = {
    uid.JPEGBaseline8Bit: ("imagecodecs>=2024.1",),
    uid.JPEGExtended12Bit: ("imagecodecs>=2024.1",),
}
_lock = threading.Lock()


def is_available(transfer_syntax: str) -> bool:
    """pydicom's plugin contract: can this plugin decode ``transfer_syntax`` here?"""
    if transfer_syntax not in DECODER_DEPENDENCIES:
        return False
    try:
        import imagecodecs
    except ImportError:
        return False
    return bool(getattr(imagecodecs, "JPEG8", None) and imagecodecs.JPEG8.available)


def decode_frame(src: bytes, runner: Any) -> bytes:
    """pydicom's plugin contract: one JPEG frame -> raw samples (8- or 16-bit, unsigned as stored)."""
    import imagecodecs

    return bytes(imagecodecs.jpeg8_decode(src).tobytes())


def register() -> None:
    """Offer the plugin to pydicom's JPEG Baseline and Extended decoders (once; safe from any thread)."""
    with _lock:
        for decoder in (JPEGExtended12BitDecoder, JPEGBaseline8BitDecoder):
            if PLUGIN_LABEL in decoder.available_plugins or PLUGIN_LABEL in getattr(decoder, "_unavailable", {}):
                continue
            try:
                decoder.add_plugin(PLUGIN_LABEL, (__name__, "decode_frame"))
            except (ImportError, AttributeError, ValueError) as exc:
                log.debug("imagecodecs JPEG plugin not added to %s: %s", decoder.UID.name, exc)
