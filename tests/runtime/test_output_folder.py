"""Results appear at once and durably, replace old ones without a gap, and never land near the input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from litseg.runtime import RunConfig, segment, write_results
from litseg.runtime.cli import main as cli_main
from litseg.runtime.errors import DeviceError, ModelError, OutputError, UsageError
from litseg.runtime.model import run_error
from litseg.runtime.output_folder import MARKER, check_output_location, commit_folder, foreign_entry
from tests.factories import SeriesGeometry, make_series, write_series


def _writer(text: str):  # type: ignore[no-untyped-def]
    def write(tmp: Path) -> None:
        (tmp / "report.json").write_text(text)
        (tmp / "labels.bin").write_bytes(os.urandom(200_000))

    return write


def test_overwrite_never_leaves_a_moment_without_results(tmp_path: Path) -> None:
    out = tmp_path / "out"
    commit_folder(out, _writer("0"))
    gaps: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if not (out / "report.json").is_file():
                gaps.append(1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for n in range(1, 40):
            commit_folder(out, _writer(str(n)), overwrite=True)
    finally:
        stop.set()
        watcher.join()
    assert gaps == []
    assert (out / "report.json").read_text() == "39"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary or old folders left


def test_a_failing_writer_leaves_old_results_and_no_trace(tmp_path: Path) -> None:
    out = tmp_path / "out"
    commit_folder(out, _writer("old"))

    def fail(tmp: Path) -> None:
        (tmp / "report.json").write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="the disk is full"):
        commit_folder(out, fail, overwrite=True)
    assert (out / "report.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_the_results_folder_follows_the_umask(tmp_path: Path) -> None:
    script = (
        "import os, sys; from pathlib import Path; os.umask(0o027); "
        "from litseg.runtime.output_folder import commit_folder; "
        "commit_folder(Path(sys.argv[1]), lambda t: (t / 'r.json').write_text('{}'))"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "out")], check=True, timeout=60)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "out" / "r.json").stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize(("out", "relation"), [("in", "is the input"), ("in/sub", "lies inside"), (".", "contains")])
def test_outputs_overlapping_the_input_are_usage_errors(tmp_path: Path, out: str, relation: str) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "IM1").write_bytes(b"x")
    for overwrite in (False, True):
        with pytest.raises(UsageError, match=relation):
            check_output_location(tmp_path / out, [tmp_path / "in"], overwrite)
    # a file given as input occupies its folder (its series is read from there)
    with pytest.raises(UsageError):
        check_output_location(tmp_path / "in" / "res", [tmp_path / "in" / "IM1"])


def test_a_symlinked_output_into_the_input_is_seen_through(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "in")
    with pytest.raises(UsageError):
        check_output_location(tmp_path / "link" / "out", [tmp_path / "in"])


def test_inference_errors_map_to_device_or_model() -> None:
    oom = RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : CUDA failure 2: out of memory")
    assert isinstance(run_error(oom, Path("m.onnx"), "CUDAExecutionProvider"), DeviceError)
    shape = RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions for input")
    error = run_error(shape, Path("m.onnx"), "CPUExecutionProvider")
    assert isinstance(error, ModelError) and "invalid dimensions" in str(error)


def test_a_results_folder_carries_the_marker_naming_what_litseg_wrote(tmp_path: Path) -> None:
    out = tmp_path / "out"
    commit_folder(out, _writer("0"), marked=True)
    marker = json.loads((out / MARKER).read_text())
    assert marker == {"format": "litseg-results/1", "files": ["labels.bin", "report.json"]}
    assert foreign_entry(out) is None
    commit_folder(out, _writer("1"), overwrite=True, marked=True)  # litseg's own results: replaced
    assert (out / "report.json").read_text() == "1"


def test_overwrite_never_replaces_a_folder_holding_a_file_litseg_did_not_write(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "important.txt").write_text("keep")
    with pytest.raises(OutputError, match=r"litseg did not write \(important\.txt\)") as refused:
        commit_folder(foreign, _writer("0"), overwrite=True, marked=True)
    assert [p.name for p in foreign.iterdir()] == ["important.txt"]
    assert (foreign / "important.txt").read_text() == "keep"
    assert "overwrite=True" not in str(refused.value) and "--overwrite" not in refused.value.cli_message
    # a user's file put beside litseg's results makes the folder no longer litseg's alone
    mixed = tmp_path / "mixed"
    commit_folder(mixed, _writer("0"), marked=True)
    (mixed / "notes.txt").write_text("a reader's notes")
    with pytest.raises(OutputError, match=r"\(notes\.txt\)"):
        check_output_location(mixed, [tmp_path / "in"], overwrite=True)
    assert (mixed / "notes.txt").is_file() and (mixed / "report.json").read_text() == "0"
    # so is a subfolder that is not listed in the marker
    (mixed / "notes.txt").unlink()
    (mixed / "mask").mkdir()
    with pytest.raises(OutputError, match=r"\(mask\)"):
        commit_folder(mixed, _writer("1"), overwrite=True, marked=True)


def test_a_folder_a_tool_owns_whole_is_replaced_without_a_marker(tmp_path: Path) -> None:
    """Unmarked (a prepared data set's case folder): ``overwrite`` replaces it, no marker is written."""
    case = tmp_path / "case"
    commit_folder(case, _writer("0"))
    assert not (case / MARKER).exists()
    with pytest.raises(OutputError, match="already holds files"):
        commit_folder(case, _writer("1"))
    commit_folder(case, _writer("1"), overwrite=True)
    assert (case / "report.json").read_text() == "1"


def test_results_of_a_litseg_without_markers_are_still_replaced(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    (old / "report.json").write_text('{"litseg_version": "0.5.0"}')
    (old / "segmentation.dcm").write_bytes(b"DICM")
    check_output_location(old, [tmp_path / "in"], overwrite=True)
    (old / "report.json").write_text('{"someone": "else"}')  # a report.json of another tool is not ours
    with pytest.raises(OutputError, match=r"\(report\.json\)|\(segmentation\.dcm\)"):
        check_output_location(old, [tmp_path / "in"], overwrite=True)


def test_a_root_folder_is_checked_for_place_and_writability_only(tmp_path: Path) -> None:
    root = tmp_path / "litseg-out"
    (root / "1.2.3").mkdir(parents=True)
    (root / "README").write_text("results of every series")
    check_output_location(root, [tmp_path / "in"], root=True)
    with pytest.raises(OutputError):
        check_output_location(root, [tmp_path / "in"], overwrite=True)


def test_api_errors_name_the_keyword_and_the_cli_names_the_flag(
    tmp_path: Path, tumor_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    series = tmp_path / "series"
    write_series(make_series(SeriesGeometry(rows=64, columns=64, slices=6)), series)
    result = segment(series, RunConfig(model=tumor_model, device="cpu"))
    out = tmp_path / "out"
    write_results(result, out)
    with pytest.raises(OutputError) as again:
        write_results(result, out)
    assert "pass overwrite=True" in str(again.value) and "--overwrite" not in str(again.value)
    assert "out_dir" in str(again.value) and "--out" not in str(again.value)
    write_results(result, out, overwrite=True)
    (out / "important.txt").write_text("keep")
    with pytest.raises(OutputError, match=r"\(important\.txt\)"):
        write_results(result, out, overwrite=True)
    assert (out / "important.txt").read_text() == "keep"
    # the CLI says the same in its own words
    assert cli_main([str(series), "--model", str(tumor_model), "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    assert cli_main([str(series), "--model", str(tumor_model), "--out", str(tmp_path / "cli"), "--quiet"]) == 6
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "pass --overwrite" in line and "overwrite=True" not in line
