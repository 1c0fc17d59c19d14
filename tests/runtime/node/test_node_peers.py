"""litseg-serve as a real process against real dcmtk peers (echoscu, storescu, storescp) on 127.0.0.1.

One node (with storescp as its --forward destination) serves the tests that do not stop it; the crash,
back-off, spool-limit and SIGTERM tests start their own. Series are 64x64x6 and the model is the tiny
intensity ONNX model, so the node's time goes into what is tested: DICOM traffic, spooling, recovery.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest

from tests.factories import SeriesGeometry

from .conftest import SeriesFolder
from .peers import (
    NodeProcess,
    StoreSCP,
    dcmtk,
    echo,
    segs_by_series,
    send,
    storescu,
    wait_for,
)

PHI = ("Phantom^Liver", "PHANTOM-001", "ACC001")  # what tests/factories.py puts in every series


def node_args(model: Path, scp: StoreSCP | None, out: Path | None, *extra: str) -> list[str]:
    args = ["--model", str(model), "--device", "cpu", "--idle-seconds", "1", *extra]
    if scp is not None:
        args += ["--forward", scp.destination]
    if out is not None:
        args += ["--out", str(out)]
    return args


def wait_segs(scp: StoreSCP, series: SeriesFolder, node: NodeProcess, count: int = 1, timeout: float = 60) -> list:
    wait_for(
        lambda: len(segs_by_series(scp.folder).get(series.series_uid, [])) >= count,
        timeout,
        f"{count} SEG(s) of series {series.series_uid}",
        node.log,
    )
    return segs_by_series(scp.folder)[series.series_uid]


def spool_state(spool: Path, state: str) -> list[str]:
    return sorted(p.name for p in (spool / state).iterdir()) if (spool / state).is_dir() else []


def status_text(spool: Path) -> str:
    cmd = [sys.executable, "-m", "litseg.runtime.node.cli", "--status", "--spool", str(spool)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# ----- one shared node --------------------------------------------------------------------------------
class Shared:
    def __init__(self, root: Path, node: NodeProcess, scp: StoreSCP, out: Path) -> None:
        self.root, self.node, self.scp, self.out = root, node, scp, out


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, tumor_model: Path) -> Iterator[Shared]:
    root = tmp_path_factory.mktemp("shared-node")
    scp = StoreSCP(root / "received").start()
    out = root / "out"
    args = node_args(tumor_model, scp, out, "--workers", "2", "--allow-ae", "STORESCU", "ECHOSCU")
    node = NodeProcess(root / "spool", args, root / "node.log").start()
    try:
        yield Shared(root, node, scp, out)
    finally:
        node.stop_quietly()
        scp.stop()


def test_echo_answers_and_unknown_calling_ae_is_rejected(shared: Shared, make_ct: Callable[..., SeriesFolder]) -> None:
    assert echo(shared.node.port).returncode == 0
    refused = echo(shared.node.port, calling="WRONG")
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stdout + refused.stderr
    series = make_ct()
    code, output = send(shared.node.port, [series.folder], calling="WRONG")
    assert code != 0, output
    stored = {p.stem for p in (shared.root / "spool").rglob("*.dcm")}
    assert not stored & series.sop_uids
    assert "rejected" in shared.node.log()


def test_series_comes_back_as_a_valid_seg_referencing_every_instance(
    shared: Shared, make_ct: Callable[..., SeriesFolder]
) -> None:
    series = make_ct()
    code, output = send(shared.node.port, [series.folder])
    assert code == 0, output
    ((seg_path, refs),) = wait_segs(shared.scp, series, shared.node)
    assert refs == series.sop_uids
    proc = subprocess.run([dcmtk("dciodvfy"), str(seg_path)], capture_output=True, text=True, timeout=120, check=False)
    report = proc.stdout + proc.stderr
    assert "Segmentation" in report
    assert [line for line in report.splitlines() if line.startswith("Error")] == [], report
    # --out holds the very same SEG (one SOP Instance UID) and the JSON report
    study_uid = str(series.datasets[0].StudyInstanceUID)
    out_dir = shared.out / study_uid / series.series_uid
    wait_for(lambda: (out_dir / "report.json").is_file(), 10, "the --out report")
    assert pydicom.dcmread(out_dir / "segmentation.dcm").SOPInstanceUID == pydicom.dcmread(seg_path).SOPInstanceUID
    assert json.loads((out_dir / "report.json").read_text())["series_instance_uid"] == series.series_uid
    # one log line for the series, with stages, result and destination status, and no patient data
    wait_for(lambda: "status 0x0000" in shared.node.log(), 10, "the series log line", shared.node.log)
    lines = [line for line in shared.node.log().splitlines() if f"series {series.series_uid} (6 instances):" in line]
    assert len(lines) == 1, shared.node.log()
    assert all(word in lines[0] for word in ("read", "inference", "send", "liver", "forward DEST@", "0x0000"))
    assert not any(phi in shared.node.log() for phi in PHI)


def test_compressed_ct_is_decoded(shared: Shared, make_ct: Callable[..., SeriesFolder], tmp_path: Path) -> None:
    """RLE (pydicom's own decoder), JPEG-LS lossless (pyjpegls, a highdicom dependency) and deflate."""
    sent = []
    for tool, propose in (("dcmcrle", "-xr"), ("dcmcjpls", "-xt"), (None, "-xd")):
        series = make_ct()
        folder = series.folder
        if tool is not None:
            folder = tmp_path / tool
            folder.mkdir()
            for path in series.paths:
                subprocess.run([dcmtk(tool), str(path), str(folder / path.name)], check=True, timeout=60)
            assert pydicom.dcmread(folder / series.paths[0].name).file_meta.TransferSyntaxUID.is_compressed
        code, output = send(shared.node.port, [folder], extra=[propose])
        assert code == 0, output
        sent.append(series)
    for series in sent:
        ((_, refs),) = wait_segs(shared.scp, series, shared.node)
        assert refs == series.sop_uids


def test_non_ct_sop_class_is_refused_and_not_stored(
    shared: Shared, make_ct: Callable[..., SeriesFolder], tmp_path: Path
) -> None:
    ds = make_ct(SeriesGeometry(rows=32, columns=32, slices=1)).datasets[0]
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
    ds.Modality = "MR"
    path = tmp_path / "mr.dcm"
    ds.save_as(path, enforce_file_format=True)
    code, output = send(shared.node.port, [path])
    assert "Received Store Response (Refused: SOPClassNotSupported)" in output, output  # status 0x0122
    assert code != 0
    assert not list((shared.root / "spool").rglob(f"{ds.SOPInstanceUID}.dcm"))
    assert "refused C-STORE of SOP class 1.2.840.10008.5.1.4.1.1.4" in shared.node.log()
    assert echo(shared.node.port).returncode == 0


def test_bad_series_goes_to_failed_and_the_node_keeps_serving(
    shared: Shared, make_ct: Callable[..., SeriesFolder]
) -> None:
    series = make_ct(SeriesGeometry(rows=64, columns=64, slices=7))
    missing = sorted(series.datasets, key=lambda d: float(d.ImagePositionPatient[2]))[3]
    gap_folder = series.folder.parent / "gap"
    gap_folder.mkdir()
    for path in series.paths:
        if pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID != missing.SOPInstanceUID:
            shutil.copy(path, gap_folder / path.name)
    code, output = send(shared.node.port, [gap_folder])
    assert code == 0, output
    failed = shared.root / "spool" / "failed"
    wait_for(
        lambda: any(p.name.endswith(series.series_uid) for p in failed.iterdir()), 60, "a failed job", shared.node.log
    )
    (job,) = [p for p in failed.iterdir() if p.name.endswith(series.series_uid)]
    error = json.loads((job / "error.json").read_text())
    assert error["type"] == "InputError" and error["exit_code"] == 3
    assert "uneven slice spacing" in error["message"]
    assert len(list((job / "instances").glob("*.dcm"))) == 6  # kept for inspection
    line = f"series {series.series_uid} (6 instances): FAILED InputError"  # logged just after the move
    wait_for(lambda: line in shared.node.log(), 10, "the series' log line", shared.node.log)
    assert echo(shared.node.port).returncode == 0
    assert "failed: 1" in status_text(shared.root / "spool")


def test_load_20_series_from_4_concurrent_senders(shared: Shared, make_ct: Callable[..., SeriesFolder]) -> None:
    series = [make_ct() for _ in range(20)]
    senders = [storescu(shared.node.port, [s.folder for s in series[k::4]]) for k in range(4)]
    for proc in senders:
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, output
    wanted = {s.series_uid: s for s in series}
    wait_for(
        lambda: wanted.keys() <= segs_by_series(shared.scp.folder).keys(),
        120,
        "20 SEGs",
        shared.node.log,
    )
    time.sleep(1.5)  # room for a duplicate to show up
    received = segs_by_series(shared.scp.folder)
    for uid, one in wanted.items():
        assert len(received[uid]) == 1, f"series {uid}: {len(received[uid])} SEGs"
        assert received[uid][0][1] == one.sop_uids  # its own instances, all of them, none of another series
    text = status_text(shared.root / "spool")
    assert "queue depth: 0 series" in text and "recent series (newest first):" in text
    assert "node running" in text


def test_a_started_node_compiles_its_kernels_before_the_first_series(tmp_path: Path, tumor_model: Path) -> None:
    """On a fresh install (an empty numba cache) the node compiles every kernel a run uses right after it
    starts listening, so that its first series does not wait for them; it still answers meanwhile."""
    cache = tmp_path / "numba-cache"
    node = NodeProcess(
        tmp_path / "spool",
        node_args(tumor_model, None, tmp_path / "out"),
        tmp_path / "node.log",
        env={"NUMBA_CACHE_DIR": str(cache)},
    ).start()
    try:
        assert echo(node.port).returncode == 0
        kernels = (
            "_rescale_kernel",
            "_preprocess_kernel",
            "_resample_argmax_kernel",
            "_component_scan",
            "_grow_label_kernel",
        )

        def compiled() -> bool:
            names = " ".join(p.name for p in cache.rglob("*.nbc"))
            return all(k in names for k in kernels)

        wait_for(compiled, 300, f"the kernels {kernels} in the node's numba cache", node.log)
    finally:
        assert node.terminate() == 0
