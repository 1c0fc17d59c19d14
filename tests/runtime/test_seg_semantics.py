"""What a viewer shows of litseg's results: the SEG's descriptions (an automatic research result; ``CHECK:`` and
the warning codes when the liver is implausible), that the SEG stays valid DICOM (dciodvfy), and the overlay's
``CHECK:`` banner."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from litseg.runtime import RunConfig, segment, write_results
from litseg.runtime.api import result_seg
from litseg.runtime.banner import BANNER_RGB, TEXT_RGB, text_mask
from litseg.runtime.overlay import overlay_rgb
from litseg.runtime.write import AlgorithmInfo, build_seg, seg_descriptions
from tests.factories import SeriesGeometry, make_series
from tests.runtime.node.peers import dcmtk

CODES = ("no_liver", "liver_volume_out_of_range", "liver_not_right", "liver_not_upper_abdomen", "not_abdominal")
ALGORITHM = AlgorithmInfo("litseg-liver-tumor", "0.6.0")


def test_every_description_says_research_and_fits_dicom_lo() -> None:
    series, content = seg_descriptions(ALGORITHM)
    assert series == "litseg litseg-liver-tumor: automatic research result"
    assert content == "automatic research result of litseg-liver-tumor 0.6.0"
    assert "research" in series and "research" in content and not series.startswith("CHECK:")
    for n in range(1, len(CODES) + 1):
        for codes in itertools.combinations(CODES, n):
            series, content = seg_descriptions(ALGORITHM, codes)
            assert len(series) <= 64 and len(content) <= 64, (series, content)
            assert series.startswith("CHECK: ") and content.startswith("CHECK: automatic research result:")
            named = [c.removeprefix("liver_") for c in codes if c.removeprefix("liver_") in series]
            hidden = len(codes) - len(named)
            assert named and (hidden == 0 or series.endswith(f"+{hidden}")), series


def test_a_head_ct_s_three_warnings_are_all_named() -> None:
    codes = ("liver_volume_out_of_range", "liver_not_upper_abdomen", "not_abdominal")
    series, _ = seg_descriptions(ALGORITHM, codes)
    assert series == "CHECK: volume_out_of_range not_upper_abdomen not_abdominal"


def _dciodvfy_errors(path: Path) -> list[str]:
    proc = subprocess.run([dcmtk("dciodvfy"), str(path)], capture_output=True, text=True, timeout=120, check=False)
    report = proc.stdout + proc.stderr
    assert "Segmentation" in report, report
    return [line for line in report.splitlines() if line.startswith("Error")]


@pytest.mark.parametrize("flagged", [True, False])
def test_flagged_and_plain_segs_pass_dciodvfy_with_overlapping_segments(
    flagged: bool, tmp_path: Path, tumor_model: Path
) -> None:
    """The 64x64x6 test series holds a few mL of liver: implausible (liver_volume_out_of_range)."""
    result = segment(make_series(SeriesGeometry(rows=64, columns=64, slices=6)), RunConfig(model=tumor_model))
    assert result.plausibility is not None and not result.plausibility.liver_plausible
    if flagged:
        path = write_results(result, tmp_path / "out", formats=("seg",))["seg"]
    else:
        path = tmp_path / "plain.dcm"
        algorithm = AlgorithmInfo(result.model.name, result.model.version)
        build_seg(result.labels, result.series, result.model.spec.class_names, algorithm).save_as(path)
    assert _dciodvfy_errors(path) == []
    seg = pydicom.dcmread(path)
    assert seg.SegmentsOverlap == "YES"
    assert seg.SeriesDescription.startswith("CHECK:") is flagged
    assert seg.ContentDescription.startswith("CHECK:") is flagged
    assert ("volume_out_of_range" in seg.SeriesDescription) is flagged
    assert "research result" in seg.ContentDescription
    assert result_seg(result).SeriesDescription.startswith("CHECK:")


def test_the_overlay_of_an_implausible_result_carries_a_check_banner(tmp_path: Path, tumor_model: Path) -> None:
    from PIL import Image

    result = segment(make_series(SeriesGeometry(rows=64, columns=64, slices=6)), RunConfig(model=tumor_model))
    path = write_results(result, tmp_path / "out", formats=("overlay",))["overlay"]
    shown = np.asarray(Image.open(path).convert("RGB"))
    plain = overlay_rgb(result.series.volume, result.labels)
    height = shown.shape[0] - plain.shape[0]
    assert height > 0 and np.array_equal(shown[height:], plain)  # the slices as before, below the banner
    band = shown[:height]
    assert (band == BANNER_RGB).all(axis=-1).mean() > 0.5 and (band == TEXT_RGB).all(axis=-1).sum() > 100
    # the banner's text is what text_mask draws for "CHECK: LIVER VOLUME ..." on its first line
    ink = text_mask("CHECK: LIVER", scale=2)
    first = (band[4 : 4 + ink.shape[0], 4 : 4 + ink.shape[1]] == TEXT_RGB).all(axis=-1)
    assert np.array_equal(first, ink)
