"""A quick-look PNG: CT slices in a soft-tissue window with the segmentation blended in colour.

Written with the standard library's zlib (no imaging dependency in the runtime). Slices are shown in
the canonical radiological orientation (patient's right on the image's left, anterior at the top),
whatever the orientation of the source series.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .banner import with_banner
from .geometry import canonical_reorientation
from .volume import Volume

COLORS = {1: (220, 80, 60), 2: (255, 230, 0)}  # liver, tumor
ALPHA = 0.45


def encode_png(rgb: npt.NDArray[np.uint8]) -> bytes:
    """Encode an ``(h, w, 3)`` uint8 image as PNG bytes."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"encode_png needs (h, w, 3) uint8; got {rgb.dtype} {rgb.shape}")
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def overlay_rgb(
    hu: Volume, labels: Volume, slices: int = 3, window_hu: tuple[float, float] = (-160, 240)
) -> npt.NDArray[np.uint8]:
    """Up to ``slices`` axial slices side by side (through the liver when there is one), labels blended."""
    reo = canonical_reorientation(hu.affine_lps)
    nz = hu.shape_zyx[0]
    area = np.count_nonzero(np.asarray(labels.array), axis=(1, 2))
    if reo.flip_z:
        area = area[::-1]  # slices in canonical (inferior to superior) order
    if area.any():
        order = np.nonzero(area)[0]
        picks = [int(order[int(f * (len(order) - 1))]) for f in np.linspace(0.2, 0.8, slices)]
    else:
        picks = [int(f * (nz - 1)) for f in np.linspace(0.2, 0.8, slices)]
    # Reorient only the shown slices, not the whole volume.
    native = [nz - 1 - k for k in picks] if reo.flip_z else picks
    in_plane = replace(reo, flip_z=False)
    ct = np.asarray(in_plane.apply_array(np.ascontiguousarray(np.asarray(hu.array)[native], dtype=np.float32)))
    lab = np.asarray(in_plane.apply_array(np.ascontiguousarray(np.asarray(labels.array)[native], dtype=np.uint8)))
    lo, hi = window_hu
    tiles = []
    for k in range(len(picks)):
        grey = (np.clip((ct[k] - lo) / (hi - lo), 0, 1) * 255).astype(np.float32)
        rgb = np.repeat(grey[..., None], 3, axis=2)
        for value, color in COLORS.items():
            mask = lab[k] == value
            rgb[mask] = (1 - ALPHA) * rgb[mask] + ALPHA * np.array(color, np.float32)
        tiles.append(rgb.astype(np.uint8))
    return np.concatenate(tiles, axis=1)


def write_overlay(hu: Volume, labels: Volume, path: Path, warnings: Sequence[str] = ()) -> None:
    """Write the quick look; with plausibility ``warnings`` (sentences) a red ``CHECK:`` banner tops it, so
    an implausible liver (a head CT's "liver" inside the skull) is never shown without its warning."""
    rgb = overlay_rgb(hu, labels)
    if warnings:
        rgb = with_banner(rgb, [f"CHECK: {w}" for w in warnings])
    path.write_bytes(encode_png(rgb))
