"""The README's Python example runs exactly as written (in a folder holding the series it names); its shell
commands take the flags they are given; it stays short."""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
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


def _shell_commands() -> list[list[str]]:
    """Every command of the README's bash blocks, continuation lines joined, comments and ``&`` dropped."""
    text = README.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words and words[-1] == "&":
                words.pop()
            # `a && b` holds two commands
            while "&&" in words:
                cut = words.index("&&")
                commands.append(words[:cut])
                words = words[cut + 1 :]
            if words:
                commands.append(words)
    return commands


def test_readme_is_short() -> None:
    assert README.stat().st_size <= 8 * 1024, "the README grew past 8 KB: move detail into docs/"
    for picture in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README.read_text(encoding="utf-8")):
        assert (README.parent / picture).is_file(), picture


@pytest.mark.parametrize(
    ("command", "parser"),
    [
        ("litseg-run", "litseg.runtime.cli"),
        ("litseg-serve", "litseg.runtime.node.cli"),
        ("litseg-batch", "litseg.runtime.batch.cli"),
    ],
)
def test_readme_commands_take_the_flags_they_are_given(command: str, parser: str) -> None:
    """Each README line of ``command`` parses with the command's own parser (no flag renamed under it)."""
    build_parser = importlib.import_module(parser).build_parser
    lines = [words[1:] for words in _shell_commands() if words[0] == command]
    assert lines, f"the README shows no {command} command"
    refused = []
    for args in lines:
        try:
            build_parser().parse_args(args)
        except SystemExit as exc:  # argparse's way to refuse; --help and --version exit 0
            if exc.code != 0:
                refused.append(" ".join([command, *args]))
    assert not refused, f"the README shows commands their parser refuses: {refused}"


def test_readme_calls_dcmtk_peers_by_their_debian_path() -> None:
    """pynetdicom installs ``storescp``/``storescu``/``echoscu`` into the venv; activated, they shadow dcmtk's
    (whose files arrive as ``SG.<uid>``, pynetdicom's as ``UN.<uid>``)."""
    peers = [words[0] for words in _shell_commands() if Path(words[0]).name in ("storescp", "storescu", "echoscu")]
    assert peers, "the README's node example has no dcmtk peer"
    assert all(peer.startswith("/usr/bin/") for peer in peers), peers
