"""The few lines ``litseg-run`` prints for a person: what was read, what was found, whether to trust it, where
the files are and how long it took.

It formats the JSON report (:meth:`SegmentationResult.report`), nothing else, so the summary can never say
what the report does not: a key missing from the report (an older model without plausibility checks, a
report of another version) leaves its line out instead of failing. No patient data: the report holds none.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["format_summary"]

#: Width of the label column, so that the values line up.
_LABEL_WIDTH = 11


def _line(label: str, value: str) -> str:
    return f"  {label:<{_LABEL_WIDTH}}{value}"


def _series_line(report: Mapping[str, Any]) -> str:
    shape = report.get("shape_zyx")
    spacing = report.get("spacing_mm")
    text = f"{report.get('slices', '?')} slices"
    if shape and len(shape) == 3:
        text += f" of {shape[2]}x{shape[1]}"
    if spacing and len(spacing) == 3:
        # the report's spacing is (x, y, z), the slice thickness last
        text += f", {spacing[0]:.2f} x {spacing[1]:.2f} x {spacing[2]:.2f} mm"
    return text


def _volume_lines(report: Mapping[str, Any]) -> list[str]:
    lines = []
    liver = report.get("liver_volume_ml")
    if liver is not None:
        parenchyma = report.get("parenchyma_volume_ml")
        detail = f"  (parenchyma {parenchyma:.1f} mL, tumours included in the total)" if parenchyma is not None else ""
        lines.append(_line("liver", f"{liver:.1f} mL{detail}"))
    count = report.get("tumor_count")
    if count == 0:
        lines.append(_line("tumours", "none"))
    elif count is not None:
        text = f"{count} ({report.get('tumor_volume_ml', 0.0):.1f} mL"
        burden = report.get("tumor_burden_percent")
        text += f", {burden:.1f} % of the liver)" if burden is not None else ")"
        lines.append(_line("tumours", text))
    return lines


def _plausibility_lines(report: Mapping[str, Any]) -> list[str]:
    section = report.get("plausibility")
    if not isinstance(section, Mapping):
        return []
    warnings = section.get("warnings") or []
    if not warnings:
        return [_line("plausible", "yes")]
    lines = [_line("plausible", f"NO: {len(warnings)} warning{'s' if len(warnings) > 1 else ''} (check before use)")]
    lines += [_line("", f"{w.get('code', '?')}: {w.get('message', '')}") for w in warnings]
    return lines


def _output_lines(outputs: Mapping[str, Path | str]) -> list[str]:
    if not outputs:
        return []
    paths = {fmt: Path(p) for fmt, p in outputs.items()}
    folders = {p.parent for p in paths.values()}
    if len(folders) == 1:  # the usual case: one folder, then the names in it
        (folder,) = folders
        names = ", ".join(p.name + ("/" if fmt == "mask-dicom" else "") for fmt, p in paths.items())
        return [_line("outputs", f"{folder}/"), _line("", names)]
    return [_line("outputs" if i == 0 else "", str(p)) for i, p in enumerate(paths.values())]


def format_summary(report: Mapping[str, Any], outputs: Mapping[str, Path | str], wall_s: float) -> str:
    """A short human summary of one run.

    Parameters
    ----------
    report
        The run's JSON report (:meth:`~litseg.runtime.api.SegmentationResult.report`).
    outputs
        Output format -> path, as :func:`~litseg.runtime.api.write_results` returns them.
    wall_s
        Seconds the run took, as the caller measured them.

    Returns
    -------
    str
        Lines without a trailing newline; a line per fact, warnings one a line under ``plausible``.
    """
    lines = [f"series {report.get('series_instance_uid', '?')}", _line("read", _series_line(report))]
    lines += _volume_lines(report)
    lines += _plausibility_lines(report)
    model = report.get("model")
    if isinstance(model, Mapping):
        lines.append(
            _line("model", f"{model.get('name', '?')} {model.get('version', '?')} on {report.get('provider')}")
        )
    lines += _output_lines(outputs)
    lines.append(_line("time", f"{wall_s:.1f} s"))
    return "\n".join(lines)
