"""``litseg-run``'s terminal output: a short summary by default, the JSON report with ``--json``, nothing with
``--quiet``; the summary's lines come from the report and say what the report says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from litseg.runtime.cli import main
from litseg.runtime.summary import format_summary
from tests.factories import SeriesGeometry, make_series, write_series

REPORT: dict[str, Any] = {
    "series_instance_uid": "1.2.826.0.1.3680043.8.498.1",
    "slices": 96,
    "shape_zyx": [96, 512, 480],
    "spacing_mm": [0.78, 0.8, 2.5],
    "model": {"name": "liver-tumor", "version": "0.6.0", "task": "liver-tumor", "classes": []},
    "provider": "CPUExecutionProvider",
    "liver_volume_ml": 1523.44,
    "parenchyma_volume_ml": 1490.1,
    "tumor_volume_ml": 33.34,
    "tumor_count": 3,
    "tumor_burden_percent": 2.19,
    "plausibility": {"liver_plausible": True, "warnings": [], "checks": {}},
}


def test_summary_states_the_run_in_a_few_lines() -> None:
    out = Path("/results/1.2.3")
    paths = {"seg": out / "segmentation.dcm", "nifti": out / "labels.nii.gz", "mask-dicom": out / "mask"}
    text = format_summary(REPORT, paths, wall_s=12.34)
    lines = text.splitlines()
    assert lines[0] == "series 1.2.826.0.1.3680043.8.498.1"
    assert "96 slices of 480x512, 0.78 x 0.80 x 2.50 mm" in text  # columns x rows; spacing x, y, then slices
    assert "1523.4 mL" in text and "parenchyma 1490.1 mL" in text
    assert "3 (33.3 mL, 2.2 % of the liver)" in text
    assert "plausible  yes" in text
    assert "liver-tumor 0.6.0 on CPUExecutionProvider" in text
    assert "/results/1.2.3/" in text and "segmentation.dcm, labels.nii.gz, mask/" in text
    assert lines[-1].strip() == "time       12.3 s"
    assert len(lines) <= 12  # one screen, not the 100-line report


def test_summary_lists_every_plausibility_warning() -> None:
    report = dict(REPORT)
    report["plausibility"] = {
        "liver_plausible": False,
        "warnings": [
            {"code": "not_abdominal", "message": "the series does not look abdominal"},
            {"code": "liver_volume_out_of_range", "message": "liver 38 mL, outside 600-3500 mL"},
        ],
        "checks": {},
    }
    report["tumor_count"] = 0
    text = format_summary(report, {}, wall_s=1.0)
    assert "tumours    none" in text
    assert "NO: 2 warnings" in text
    assert "not_abdominal: the series does not look abdominal" in text
    assert "liver_volume_out_of_range: liver 38 mL, outside 600-3500 mL" in text
    assert "outputs" not in text


def test_summary_leaves_out_what_the_report_lacks() -> None:
    """A report without the parenchyma volume or plausibility (older runtimes) still gives a summary."""
    report = {k: v for k, v in REPORT.items() if k not in ("parenchyma_volume_ml", "plausibility")}
    text = format_summary(report, {}, wall_s=1.0)
    assert "parenchyma" not in text and "plausible" not in text
    assert "1523.4 mL" in text


def test_cli_prints_summary_json_or_nothing(
    tmp_path: Path, tumor_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_series(
        make_series(SeriesGeometry(rows=64, columns=64, slices=6, pixel_spacing_mm=(4.0, 4.0))), tmp_path / "in"
    )
    base = [str(tmp_path / "in"), "--model", str(tumor_model), "--device", "cpu", "--out"]

    assert main([*base, str(tmp_path / "default")]) == 0
    summary = capsys.readouterr().out
    report = json.loads((tmp_path / "default" / "report.json").read_text())
    assert summary.startswith(f"series {report['series_instance_uid']}\n")
    assert f"{report['liver_volume_ml']:.1f} mL" in summary
    assert f"{report['tumor_count']} (" in summary
    assert str(tmp_path / "default") in summary and "segmentation.dcm, labels.nii.gz, report.json" in summary
    assert "{" not in summary  # not the JSON

    assert main([*base, str(tmp_path / "json"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["tumor_count"] == report["tumor_count"]
    assert printed["outputs"]["seg"] == str(tmp_path / "json" / "segmentation.dcm")

    assert main([*base, str(tmp_path / "quiet"), "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")
    assert (tmp_path / "quiet" / "segmentation.dcm").is_file()

    with pytest.raises(SystemExit) as usage:
        main([*base, str(tmp_path / "both"), "--json", "--quiet"])
    assert usage.value.code == 2
