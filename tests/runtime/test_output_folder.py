"""Results appear at once and durably, replace old ones without a gap, and never land near the input."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from litseg.runtime.errors import DeviceError, ModelError, OutputError, UsageError
from litseg.runtime.model import run_error
from litseg.runtime.output_folder import check_output_location, commit_folder


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
