"""Estimate the Hounsfield scale of a CT slice whose grey values were min-max normalised.

Some public slice collections store each CT slice as an 8-bit picture stretched from its own minimum
to its own maximum (3D-IRCADb's ``ircad-liver-slices``): the map back to HU is linear, ``HU = a * grey + b``,
but ``a`` and ``b`` differ per slice and are not stored. Two tissues whose HU is known without any
label fix it:

- **air** outside the body, -1000 HU: the most common grey of the pixels outside the body, ignoring the
  slice's minimum when that minimum is the padding outside a circular field of view (those pixels are not
  air, and with padding -2048 or -3024 they sit far below it);
- **fat**, -100 HU: the lower of the two main peaks of the body's histogram, fat and soft tissue, accepted
  as a pair only if the soft-tissue peak then falls between 0 and 200 HU (lean slices with one peak fall
  back to testing both readings of it).

Fat varies about +-15 HU between people and soft tissue sits 1.2 x as far from air as fat does, so the
map's error near the liver is about 20 HU at worst: comparable to the contrast-phase spread the training
augmentation covers. Nothing here reads a mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage, signal

#: The two reference tissues of the estimate: air outside the body (the textbook -1000 HU, not the reader's
#: -1024 floor: the grey of air is measured, so its nominal HU is what is assumed) and subcutaneous fat.
AIR_REFERENCE_HU = -1000.0
FAT_HU = -100.0
#: A soft-tissue peak (muscle, liver, spleen; any contrast phase) lies in this HU range.
SOFT_TISSUE_HU = (0.0, 200.0)
SOFT_ANCHOR_HU = 50.0  # a single body peak read as soft tissue (lean slice) is put here
#: The air peak must hold this fraction of the outside-body pixels to be trusted over the minimum.
MIN_AIR_FRACTION = 0.05
_PEAK_PROMINENCE = 0.05  # of the highest smoothed body-histogram count


@dataclass(frozen=True)
class LinearMap:
    """``HU = scale_hu * grey + offset_hu`` and the anchors it was fixed by (greys)."""

    scale_hu: float
    offset_hu: float
    air_grey: float
    fat_grey: float
    soft_grey: float | None
    method: str  # "fat+soft" (two body peaks) or "single-peak"

    def __post_init__(self) -> None:
        if not self.scale_hu > 0 or not np.isfinite(self.offset_hu):
            raise ValueError(f"a HU map needs a positive scale; got {self.scale_hu} HU per grey")

    def __call__(self, grey: npt.NDArray[np.generic]) -> npt.NDArray[np.float32]:
        return (np.asarray(grey, dtype=np.float32) * np.float32(self.scale_hu) + np.float32(self.offset_hu)).astype(
            np.float32
        )

    def to_json(self) -> dict[str, object]:
        return {
            "scale_hu": round(self.scale_hu, 4),
            "offset_hu": round(self.offset_hu, 2),
            "air_grey": round(self.air_grey, 2),
            "fat_grey": round(self.fat_grey, 2),
            "soft_grey": None if self.soft_grey is None else round(self.soft_grey, 2),
            "method": self.method,
        }


def _refined_peak(hist: npt.NDArray[np.float64], i: int) -> float:
    """Sub-bin peak position by a parabola through the peak bin and its neighbours."""
    if 0 < i < hist.size - 1:
        left, mid, right = hist[i - 1], hist[i], hist[i + 1]
        denom = left - 2 * mid + right
        if denom < 0:
            return float(i + 0.5 * (left - right) / denom)
    return float(i)


def _body(grey: npt.NDArray[np.float64], minimum: float) -> npt.NDArray[np.bool_]:
    """The body: pixels above an Otsu threshold (computed without the minimum, which may be padding),
    closed, holes filled (lungs and bowel gas join it), largest blob."""
    values = grey[grey > minimum]
    if values.size == 0:
        raise ValueError("the slice is constant: no intensity map can be estimated")
    hist, edges = np.histogram(values, bins=256)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    threshold = centres[int(np.argmax(w0 * w1 * (mu0 - mu1) ** 2))]
    tissue = ndimage.binary_closing(grey > threshold, structure=np.ones((3, 3), bool), iterations=2)
    labels, n = ndimage.label(ndimage.binary_fill_holes(tissue))
    if n == 0:
        raise ValueError("no body found in the slice: no intensity map can be estimated")
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return np.asarray(labels == int(sizes.argmax()))


def _air_grey(grey: npt.NDArray[np.float64], body: npt.NDArray[np.bool_], minimum: float) -> float:
    outside = grey[~ndimage.binary_dilation(body, iterations=3)]
    if outside.size == 0:
        return minimum
    above = outside[outside > minimum]
    if above.size:
        values, counts = np.unique(np.round(above), return_counts=True)
        k = int(np.argmax(counts))
        if counts[k] >= MIN_AIR_FRACTION * outside.size:
            return float(values[k])
    return minimum


def _peaks(grey: npt.NDArray[np.float64], body: npt.NDArray[np.bool_], air: float) -> list[tuple[float, float]]:
    """Peaks ``(grey, smoothed count)`` of the body's histogram above air, highest first."""
    values = grey[body & (grey > air + 1)]
    hist = np.bincount(np.round(values).astype(np.int64), minlength=256).astype(np.float64)
    smooth = ndimage.gaussian_filter1d(hist, 1.0)
    found, _ = signal.find_peaks(smooth, prominence=_PEAK_PROMINENCE * smooth.max())
    peaks = [(_refined_peak(smooth, int(i)), float(smooth[i])) for i in found]
    return sorted(peaks, key=lambda p: -p[1])


def _single_peak(grey: npt.NDArray[np.float64], body: npt.NDArray[np.bool_], air: float, peak: float) -> float:
    """The fat grey for a body histogram with one peak: is it fat or soft tissue? Each reading predicts
    where the other tissue lies; the reading whose prediction holds more pixels per HU wins."""
    values = grey[body]
    as_fat = (FAT_HU - AIR_REFERENCE_HU) / (peak - air)  # HU per grey if the peak is fat
    as_soft = (SOFT_ANCHOR_HU - AIR_REFERENCE_HU) / (peak - air)  # ... if it is soft tissue
    lo, hi = SOFT_TISSUE_HU
    soft_if_fat = np.count_nonzero((values >= peak + lo / as_fat + 2) & (values <= peak + (hi - FAT_HU) / as_fat))
    fat_if_soft = np.count_nonzero(np.abs(values - (peak + (FAT_HU - SOFT_ANCHOR_HU) / as_soft)) <= 50 / as_soft)
    if soft_if_fat / (hi - lo) >= fat_if_soft / 100.0:
        return peak
    return peak + (FAT_HU - SOFT_ANCHOR_HU) / as_soft


def estimate_hu_map(grey: npt.NDArray[np.generic]) -> LinearMap:
    """Estimate ``HU = a * grey + b`` for one min-max normalised CT slice.

    Parameters
    ----------
    grey
        ``(h, w)`` grey values (uint8 or float, any range) of one axial CT slice.

    Returns
    -------
    LinearMap
        The map and its anchors. Raises ``ValueError`` when the slice has no body or no usable peaks.
    """
    g = np.asarray(grey, dtype=np.float64)
    if g.ndim != 2:
        raise ValueError(f"need one 2-D slice; got shape {g.shape}")
    minimum = float(g.min())
    body = _body(g, minimum)
    air = _air_grey(g, body, minimum)
    peaks = [p for p in _peaks(g, body, air) if p[0] > air + 2]
    if not peaks:
        raise ValueError("the body's histogram has no peak above air: no intensity map can be estimated")
    best: tuple[float, float, float] | None = None  # (height sum, fat, soft)
    for fat, h_fat in peaks:
        scale = (FAT_HU - AIR_REFERENCE_HU) / (fat - air)
        for soft, h_soft in peaks:
            plausible = soft > fat and SOFT_TISSUE_HU[0] <= FAT_HU + scale * (soft - fat) <= SOFT_TISSUE_HU[1]
            if plausible and (best is None or h_fat + h_soft > best[0]):
                best = (h_fat + h_soft, fat, soft)
    if best is not None:
        fat_grey, soft_grey, method = best[1], best[2], "fat+soft"
    else:
        fat_grey, soft_grey, method = _single_peak(g, body, air, peaks[0][0]), None, "single-peak"
    scale = (FAT_HU - AIR_REFERENCE_HU) / (fat_grey - air)
    return LinearMap(scale, AIR_REFERENCE_HU - scale * air, air, fat_grey, soft_grey, method)
