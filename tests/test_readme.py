"""The README's Python example runs exactly as written (in a folder holding the series it names)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.factories import SeriesGeometry, make_series, write_series

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_readme_python_api_example_runs_as_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = [b for b in _python_blocks() if "segment(" in b]
    assert blocks, "the README has no Python API example"
    code = blocks[0]
    folder = re.search(r'segment\("([^"]+)"', code)
    assert folder is not None, "the example must name its series folder"
    write_series(
        make_series(SeriesGeometry(rows=96, columns=96, slices=8, pixel_spacing_mm=(3.0, 3.0))),
        tmp_path / folder.group(1),
    )
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
    finally:
        os.chdir(cwd)
    printed = capsys.readouterr().out.split()
    assert float(printed[0]) > 0  # liver volume in mL: the bundled model found the phantom's liver
    results = [p for p in tmp_path.iterdir() if p.is_dir() and (p / "report.json").is_file()]
    assert results and json.loads((results[0] / "report.json").read_text())["slices"] == 8
