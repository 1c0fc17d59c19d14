"""litseg-batch on a real local Ray (2 CPUs, started and torn down here), driven through the real CLI in
subprocesses attached with --ray-address: a worker SIGKILLed mid-series, a bad series, an output that
cannot be written, re-runs, --retry-failed, and Ctrl-C (SIGINT) on the driver."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from litseg.runtime import read_series
from litseg.runtime.cli import main as litseg_run
from litseg.runtime.volume import lps_to_ras
from tests.factories import SeriesGeometry, make_series, write_series

try:
    import ray
except ImportError:  # a failure, not a skip: `make install` puts Ray in, so its absence is a broken install
    ray = None
NO_RAY = "Ray is not installed: litseg-batch's tests need the 'batch' extra (make install puts it in)"

GEOMETRY = SeriesGeometry(rows=48, columns=52, slices=8, pixel_spacing_mm=(4.4, 4.0), slice_spacing_mm=6.0)
#: The series whose worker the test kills: larger, so that it is still running when the kill lands.
BIG = SeriesGeometry(rows=256, columns=256, slices=160, pixel_spacing_mm=(0.9, 0.8), slice_spacing_mm=0.8)
BAD_FOLDER = "p6-missing-slice"
BLOCKED_ID = "volume-3"  # its output path is taken by a file: an output failure, retried later


@pytest.fixture(scope="module")
def cluster() -> str:
    """A local Ray with 2 CPUs, and one GPU as Ray counts them (declared: this machine has no CUDA device, so a
    worker asking for a share of it finds none); the batch subprocesses attach to it as drivers."""
    if ray is None:
        pytest.fail(NO_RAY)
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, object_store_memory=100 << 20, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _nifti(volume, path: Path) -> Path:  # type: ignore[no-untyped-def]
    nib.save(nib.Nifti1Image(np.asarray(volume.array).transpose(2, 1, 0), lps_to_ras(volume.affine_lps)), str(path))
    return path


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 entries: 7 DICOM series (one missing a slice) and 5 NIfTI volumes (one large), in nested folders."""
    root = tmp_path_factory.mktemp("archive")
    for n in range(6):
        write_series(make_series(GEOMETRY), root / f"p{n}" / "study" / "ct")
    bad = make_series(GEOMETRY)
    write_series(bad[:3] + bad[4:], root / BAD_FOLDER)
    volume = read_series(root / "p0" / "study" / "ct").volume
    (root / "nifti").mkdir()
    for n in range(4):
        _nifti(volume, root / "nifti" / f"volume-{n}.nii.gz")
    big = tmp_path_factory.mktemp("big")
    write_series(make_series(BIG), big)
    _nifti(read_series(big).volume, root / "nifti" / "volume-big.nii.gz")
    return root


def _batch(archive: Path, out: Path, model: Path, address: str, *extra: str) -> subprocess.Popen[str]:
    args = [str(archive), "--out", str(out), "--model", str(model), "--device", "cpu", "--ray-address", address]
    return subprocess.Popen(
        [sys.executable, "-m", "litseg.runtime.batch.cli", *args, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 240) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def _ledger(out: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in (out / "ledger.jsonl").read_text().splitlines()]


def _digest(root: Path) -> dict[str, str]:
    files = (p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _result_folders(out: Path) -> set[str]:
    return {p.name for p in out.iterdir() if p.is_dir()}


def _kill_when_running(out: Path, target: str, killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the worker process that .running.json says is segmenting ``target``, once."""
    running = out / ".running.json"
    while not stop.is_set():
        try:
            pid = json.loads(running.read_text()).get(target, {}).get("pid")
        except (OSError, json.JSONDecodeError):
            pid = None
        if pid:
            time.sleep(0.05)  # handed out: the worker is reading it (a few seconds of work in all)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.01)


def test_batch_survives_a_killed_worker_records_every_series_once_and_resumes(
    cluster: str, archive: Path, tumor_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "ledger.jsonl").touch()  # an (empty) batch folder: a file may then take a series' output name
    (out / BLOCKED_ID).write_text("not a folder")
    killed: list[int] = []
    stop = threading.Event()
    inputs_before = _digest(archive)
    proc = _batch(archive, out, tumor_model, cluster)
    killer = threading.Thread(target=_kill_when_running, args=(out, "volume-big", killed, stop))
    killer.start()
    try:
        code, err = _finish(proc)
    finally:
        stop.set()
        killer.join()
    assert killed, f"the big series was never seen running: {err}"
    assert code == 8, err  # a failed series (the blocked output) makes the run non-zero
    records = _ledger(out)
    assert len(records) == 12 and len({r["key"] for r in records}) == 12  # exactly once each
    by_id = {r["id"]: r for r in records}
    status = Counter(r["status"] for r in records)
    assert status == {"done": 10, "refused": 1, "failed": 1}
    bad = next(r for r in records if r["input"].endswith(BAD_FOLDER))
    assert bad["status"] == "refused" and bad["error"]["class"] == "InputError" and bad["exit_class"] == "bad_input"
    assert "spacing" in bad["error"]["message"]
    assert by_id[BLOCKED_ID]["status"] == "failed" and by_id[BLOCKED_ID]["error"]["class"] == "OutputError"
    # the killed series was retried on a restarted worker and finished there
    assert by_id["volume-big"]["status"] == "done" and by_id["volume-big"]["worker"]["pid"] not in killed
    assert all(r["model"]["sha256"] and r["model"]["name"] == "test-intensity" for r in records)
    # one result folder per done series and nothing else: no partial or temporary folder
    done = {r["id"] for r in records if r["status"] == "done"}
    assert _result_folders(out) == done
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != ".litseg-batch.lock"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == 10 and summary["refused"] == {"InputError": 1} and summary["failed"] == {"OutputError": 1}

    # every result is litseg-run's on the same input: labels and affine identical (DICOM and NIfTI alike)
    for rid in sorted(done):
        source = by_id[rid]["input"]
        assert litseg_run([source, "--model", str(tumor_model), "--out", str(tmp_path / rid), "--quiet"]) == 0
        mine, theirs = nib.load(str(out / rid / "labels.nii.gz")), nib.load(str(tmp_path / rid / "labels.nii.gz"))
        assert np.array_equal(np.asarray(mine.dataobj), np.asarray(theirs.dataobj))
        assert np.array_equal(mine.affine, theirs.affine)

    # a second run does nothing: the same ledger, byte for byte; still non-zero (a series stays failed)
    before = (out / "ledger.jsonl").read_bytes()
    code, err = _finish(_batch(archive, out, tumor_model, cluster))
    assert code == 8, err
    assert (out / "ledger.jsonl").read_bytes() == before
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ran"] == 0 and summary["skipped"] == {"done": 10, "refused": 1, "failed": 1}

    # --retry-failed runs the failed series only (not the refused one), once its output path is free
    (out / BLOCKED_ID).unlink()
    code, err = _finish(_batch(archive, out, tumor_model, cluster, "--retry-failed"))
    assert code == 0, err
    new = _ledger(out)[12:]
    assert [(r["id"], r["status"]) for r in new] == [(BLOCKED_ID, "done")]
    assert _result_folders(out) == done | {BLOCKED_ID}
    assert _digest(archive) == inputs_before  # the inputs, byte for byte


def _stop_after(proc: subprocess.Popen[str], out: Path, lines: int, stop: signal.Signals) -> tuple[int, str]:
    """Send ``stop`` to the driver once the ledger has ``lines`` lines; its exit code and stderr."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "ledger.jsonl").exists() and (out / "ledger.jsonl").read_text().count("\n") >= lines:
            break
        time.sleep(0.05)
    proc.send_signal(stop)
    return _finish(proc)


def test_ctrl_c_and_sigterm_stop_the_driver_cleanly_and_a_rerun_finishes_the_rest(
    cluster: str, archive: Path, tumor_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    seen = 0
    for stop in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, then a scheduler stopping the job
        code, err = _stop_after(_batch(archive, out, tumor_model, cluster, "--workers", "1"), out, seen + 2, stop)
        assert code == 130, err
        assert "interrupted" in err and "Traceback" not in err
        records = _ledger(out)
        assert seen + 2 <= len(records) < 12 and len({r["key"] for r in records}) == len(records)
        seen = len(records)
        assert json.loads((out / "summary.json").read_text())["interrupted"] is True
        assert not [p for p in out.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
        assert {r["id"] for r in records if r["status"] == "done"} <= _result_folders(out)

    code, err = _finish(_batch(archive, out, tumor_model, cluster))
    assert code == 0, err
    records = _ledger(out)
    assert len(records) == 12 and len({r["key"] for r in records}) == 12
    assert _result_folders(out) == {r["id"] for r in records if r["status"] == "done"}


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


def _segmenting_workers() -> list[int]:
    """This test's Ray worker processes busy in SeriesWorker.run (Ray titles a busy actor process so)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if title.startswith(b"ray::SeriesWorker.run") and _descends_from(int(entry.name), os.getpid()):
            found.append(int(entry.name))
    return found


def test_a_series_that_kills_its_worker_every_time_fails_and_the_pool_goes_on(
    cluster: str, archive: Path, tumor_model: Path, tmp_path: Path
) -> None:
    manifest = tmp_path / "m.csv"
    small = archive / "p1" / "study" / "ct"
    manifest.write_text(f"path,id\n{archive / 'nifti' / 'volume-big.nii.gz'},big\n{small},small\n")
    out = tmp_path / "out"
    proc = _batch(manifest, out, tumor_model, cluster, "--workers", "1")
    killed: set[int] = set()
    deadline = time.monotonic() + 180
    while len(killed) < 3 and proc.poll() is None and time.monotonic() < deadline:  # every attempt of "big"
        for pid in set(_segmenting_workers()) - killed:
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        time.sleep(0.01)
    code, err = _finish(proc)
    assert len(killed) == 3, err
    assert code == 8, err
    records = {r["id"]: r for r in _ledger(out)}
    assert len(_ledger(out)) == 2
    assert records["big"]["status"] == "failed" and records["big"]["error"]["class"] == "WorkerDied"
    assert records["small"]["status"] == "done" and records["small"]["worker"]["pid"] not in killed
    assert _result_folders(out) == {"small"}
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


def test_a_series_over_the_timeout_is_stopped_and_recorded(
    cluster: str, archive: Path, tumor_model: Path, tmp_path: Path
) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,id\n{archive / 'nifti' / 'volume-big.nii.gz'},big\n")
    out = tmp_path / "out"
    code, err = _finish(_batch(manifest, out, tumor_model, cluster, "--workers", "1", "--series-timeout", "0.05"))
    assert code == 8, err
    [record] = _ledger(out)
    assert record["status"] == "failed" and record["error"]["class"] == "SeriesTimeout"
    assert _result_folders(out) == set()
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


def test_workers_that_find_no_usable_gpu_stop_the_batch_with_the_device_exit_code(
    cluster: str, archive: Path, tumor_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ("--device", "gpu", "--gpu-share", "0.5")
    code, err = _finish(_batch(archive / "nifti" / "volume-0.nii.gz", out, tumor_model, cluster, *args))
    assert code == 5, err
    assert "could not load the model" in err and "device 'gpu'" in err and "Traceback" not in err
    assert not (out / "ledger.jsonl").exists() or not _ledger(out)  # nothing ran
