"""Building the DICOM SEG (highdicom) and writing the JSON report (strict JSON: no NaN).

The SEG's segments overlap, as DICOM allows for BINARY segmentations: segment 1 "Liver" is the whole
liver, tumours included (label 1 or 2), segment 2 "Liver tumor" the tumours (label 2). A viewer that
measures the "Liver" segment gets the report's ``liver_volume_ml``. Its SeriesDescription and
ContentDescription say that it is an automatic research result and, when the plausibility checks raised
warnings, begin with ``CHECK:`` and the warning codes (see :func:`seg_descriptions`).

The folder they go into is made atomic by :mod:`~litseg.runtime.output_folder`.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from .series import DicomSeries
from .volume import Volume

log = logging.getLogger(__name__)

SOFTWARE_NAME = "litseg"
#: The flag that starts the descriptions of a SEG whose liver failed a plausibility check.
CHECK_FLAG = "CHECK:"
#: DICOM LO (SeriesDescription, ContentDescription): at most 64 characters.
LO_MAX = 64
#: Label values each segment covers, by class name: the liver includes its tumours.
SEGMENT_LABELS: dict[str, tuple[int, ...]] = {"liver": (1, 2), "tumor": (2,)}


@dataclass(frozen=True)
class SegmentCode:
    label: str
    category: Code
    type: Code
    anatomic_region: Code | None
    color_rgb: tuple[int, int, int]


#: Segment codes by class name (SNOMED CT), as the issue and DICOM CID 7150/7151 prescribe.
SEGMENT_CODES: dict[str, SegmentCode] = {
    "liver": SegmentCode(
        "Liver",
        Code("123037004", "SCT", "Anatomical Structure"),
        Code("10200004", "SCT", "Liver"),
        None,
        (221, 130, 101),
    ),
    "tumor": SegmentCode(
        "Liver tumor",
        Code("49755003", "SCT", "Morphologically Altered Structure"),
        Code("108369006", "SCT", "Neoplasm"),
        Code("10200004", "SCT", "Liver"),
        (255, 255, 0),
    ),
}


def _memoize_iod_lookup() -> None:
    """Answer highdicom's "is this attribute in that IOD?" from a cache.

    ``highdicom._standard_utils.is_attribute_in_iod`` scans every attribute of every module of the IOD
    and a SEG of single-frame sources asks it once per source image (``is_multiframe_image``): most of a large
    SEG's time (docs/performance.md). The answer depends only on highdicom's
    static tables of the standard, so caching it changes nothing but the time. The module's callers look
    the name up at call time, so replacing it there is enough; where highdicom no longer has the module or
    the function (a later version), nothing is replaced.
    """
    try:
        hd_standard = importlib.import_module("highdicom._standard_utils")
    except ImportError:
        return
    original: Callable[..., bool] | None = getattr(hd_standard, "is_attribute_in_iod", None)
    if original is None or getattr(original, "__litseg_memoized__", False):
        return

    @functools.lru_cache(maxsize=1024)
    def lookup(attribute: str, sop_class_uid: str, exclude: tuple[str, ...] | None) -> bool:
        return bool(original(attribute, sop_class_uid, list(exclude) if exclude is not None else None))

    @functools.wraps(original)
    def is_attribute_in_iod(
        attribute: str, sop_class_uid: str, exclude_path_elements: Sequence[str] | None = None
    ) -> bool:
        exclude = tuple(exclude_path_elements) if exclude_path_elements is not None else None
        return lookup(str(attribute), str(sop_class_uid), exclude)

    is_attribute_in_iod.__litseg_memoized__ = True  # type: ignore[attr-defined]
    setattr(hd_standard, "is_attribute_in_iod", is_attribute_in_iod)  # noqa: B010 (a module attribute)


_memoize_iod_lookup()


@dataclass(frozen=True)
class AlgorithmInfo:
    name: str
    version: str


def _fit(head: str, words: Sequence[str], limit: int = LO_MAX) -> str:
    """``head`` followed by as many of ``words`` as fit in ``limit`` characters, then ``+N`` for the rest."""
    for keep in range(len(words), -1, -1):
        rest = len(words) - keep
        text = " ".join([head, *words[:keep], *([f"+{rest}"] if rest else [])]).strip()
        if len(text) <= limit:
            return text
    return head[:limit]


def seg_descriptions(algorithm: AlgorithmInfo, warning_codes: Sequence[str] = ()) -> tuple[str, str]:
    """(SeriesDescription, ContentDescription) of a SEG, each at most 64 characters (DICOM LO).

    Every SEG says that it is an automatic research result. With plausibility warnings both begin with
    :data:`CHECK_FLAG` and name the warning codes, each without its ``liver_`` prefix so that the three of a
    head CT fit (``volume_out_of_range`` is ``liver_volume_out_of_range``); codes that do not fit become
    ``+N`` (the report lists them all).
    """
    if not warning_codes:
        series = _fit(f"litseg {algorithm.name}: automatic research result", [])
        content = f"automatic research result of {algorithm.name} {algorithm.version}"[:LO_MAX]
        return series, content
    short = [code.removeprefix("liver_") for code in warning_codes]
    return _fit(CHECK_FLAG, short), _fit(f"{CHECK_FLAG} automatic research result:", short)


def segment_masks(labels: npt.NDArray[np.uint8], class_names: Sequence[str]) -> npt.NDArray[np.bool_]:
    """The stacked binary segments ``(z, y, x, segments)`` of a label map: segment ``k`` (1-based) is class
    ``class_names[k]`` and covers the label values of :data:`SEGMENT_LABELS` (the liver includes tumours)."""
    names = class_names[1:]
    # One contiguous volume per segment, the segment axis last only as a view: highdicom sums over it (its
    # overlap check) and slices single segments from it, both 5-6x faster on whole planes than on an
    # interleaved last axis (0.47 s of 0.74 s for 100 slices of 512 x 512 interleaved).
    masks = np.empty((len(names), *labels.shape), dtype=np.bool_)
    for k, name in enumerate(names):
        lookup = np.zeros(256, dtype=np.bool_)  # label value -> in this segment (a table: 5x faster than isin)
        lookup[list(SEGMENT_LABELS.get(name, (k + 1,)))] = True
        np.take(lookup, labels, out=masks[k])
    return np.moveaxis(masks, 0, -1)


def build_seg(
    labels: Volume,
    series: DicomSeries,
    class_names: tuple[str, ...],
    algorithm: AlgorithmInfo,
    warning_codes: Sequence[str] = (),
) -> hd.seg.Segmentation:
    """A DICOM Segmentation (binary, overlapping segments) of ``labels`` referencing every instance of ``series``.

    Segment ``n`` is named after ``class_names[n]`` and covers the labels :func:`segment_masks` gives it
    (segment 1 "Liver": labels 1 and 2; segment 2 "Liver tumor": label 2); frames are aligned one-to-one
    with the source slices (``labels`` must be on the series' own grid). ``warning_codes`` (the plausibility
    warnings) flag its descriptions (:func:`seg_descriptions`).
    """
    if labels.shape_zyx != series.volume.shape_zyx or not np.allclose(
        labels.affine_lps, series.volume.affine_lps, atol=1e-4
    ):
        raise ValueError("labels must be on the source series' grid to be written as DICOM SEG")
    algo_id = hd.AlgorithmIdentificationSequence(
        name=algorithm.name, version=algorithm.version, family=codes.cid7162.ArtificialIntelligence
    )
    descriptions = []
    for number, name in enumerate(class_names[1:], start=1):
        code = SEGMENT_CODES[name]
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=code.label,
                segmented_property_category=code.category,
                segmented_property_type=code.type,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algo_id,
                anatomic_regions=[code.anatomic_region] if code.anatomic_region else None,
                display_color=hd.color.CIELabColor.from_rgb(*code.color_rgb)
                if hasattr(hd.color.CIELabColor, "from_rgb")
                else None,
            )
        )
    source = series.headers
    series_description, content_description = seg_descriptions(algorithm, warning_codes)
    return hd.seg.Segmentation(
        source_images=list(source),
        pixel_array=segment_masks(np.asarray(labels.array, dtype=np.uint8), class_names),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(source[0].get("SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=SOFTWARE_NAME,
        manufacturer_model_name=algorithm.name,
        software_versions=algorithm.version,
        device_serial_number="0",
        content_label="LITSEG",
        content_description=content_description,
        series_description=series_description,
    )


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, so that it serialises as strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def write_json(report: Mapping[str, Any], path: Path) -> None:
    """Write ``report`` as strict JSON (NaN and infinities become null)."""
    path.write_text(json.dumps(strict_json(report), indent=2, allow_nan=False) + "\n", encoding="utf-8")
