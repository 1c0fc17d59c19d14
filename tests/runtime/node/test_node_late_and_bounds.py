"""litseg-serve keeps every instance a sender gets through, and its spool bounded, against real dcmtk peers:
an instance refused while the spool was full and resent later, an instance arriving after its series was
closed (re-segmented once, or dropped on request), ``done/`` over 30 series, an ``--out`` folder that holds a
file litseg did not write, and implausible results (flagged, or held back with ``--hold-implausible``)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pydicom

from .conftest import SeriesFolder
from .peers import NodeProcess, StoreSCP, segs_by_series, send, storescu, wait_for
from .test_node_peers import node_args, spool_state, status_text, wait_segs


def _sop(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _by_z(series: SeriesFolder) -> list[Path]:
    return sorted(series.paths, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))


def _kernels_ready(node: NodeProcess) -> None:
    wait_for(lambda: "kernels ready" in node.log(), 300, "the node's kernels", node.log)


def _spooled(spool: Path) -> set[str]:
    """SOP Instance UIDs in the spool: being received, queued or kept with a finished job.

    os.walk, not rglob: the node renames job folders while the test looks (incoming -> queue), and rglob
    raises on a folder that moved away between listing and entering it; os.walk skips it.
    """
    found: set[str] = set()
    for root, _, files in os.walk(spool):
        if Path(root).relative_to(spool).parts[:1] != ("tmp",):
            found |= {Path(name).stem for name in files if name.endswith(".dcm")}
    return found


def test_instances_refused_while_the_spool_was_full_and_resent_give_one_complete_seg(
    tmp_path: Path, tumor_model: Path, make_ct: Callable[..., SeriesFolder], processes: list
) -> None:
    first, second = make_ct(), make_ct()
    size = max(p.stat().st_size for p in first.paths + second.paths)
    limit_mb = 9.5 * size / 2**20  # the first series and 3 of the second fit; 3 instances are refused
    scp = StoreSCP(tmp_path / "received").start()
    processes.append(scp)
    spool = tmp_path / "spool"
    args = node_args(tumor_model, scp, None, "--idle-seconds", "2", "--max-spool-mb", f"{limit_mb:.6f}")
    node = NodeProcess(spool, args, tmp_path / "node.log").start()
    processes.append(node)
    _kernels_ready(node)
    assert send(node.port, [first.folder])[0] == 0
    code, output = send(node.port, [second.folder])
    assert "Refused: OutOfResources" in output and code != 0, output  # status 0xA700
    # a sender retries what was refused (and its retries keep the series open) until the space is free again
    deadline = time.monotonic() + 60
    while not second.sop_uids <= _spooled(spool) and time.monotonic() < deadline:
        missing = [p for p in second.paths if _sop(p) not in _spooled(spool)]
        send(node.port, missing)
        time.sleep(0.5)
    assert second.sop_uids <= _spooled(spool), node.log()
    for series in (first, second):
        ((_, refs),) = wait_segs(scp, series, node)
        assert refs == series.sop_uids  # one SEG, every instance referenced
    time.sleep(2.5)
    assert len(segs_by_series(scp.folder)[second.series_uid]) == 1
    assert spool_state(spool, "failed") == [], node.log()


def test_a_late_instance_resegments_the_series_once_with_every_instance(
    tmp_path: Path, tumor_model: Path, make_ct: Callable[..., SeriesFolder], processes: list
) -> None:
    scp = StoreSCP(tmp_path / "received").start()
    processes.append(scp)
    spool, out = tmp_path / "spool", tmp_path / "out"
    node = NodeProcess(spool, node_args(tumor_model, scp, out), tmp_path / "node.log").start()
    processes.append(node)
    series = make_ct()
    by_z = _by_z(series)
    late = by_z[-1]  # an end slice: no gap check could notice it missing
    assert send(node.port, by_z[:-1])[0] == 0
    ((first_seg, first_refs),) = wait_segs(scp, series, node)
    assert first_refs == series.sop_uids - {_sop(late)}
    assert send(node.port, [late])[0] == 0  # long after the 1 s idle timeout closed the series
    segs = wait_segs(scp, series, node, count=2)
    (second_seg, second_refs) = next((p, r) for p, r in segs if p != first_seg)
    assert second_refs == series.sop_uids  # every instance, the late one included
    first_uid = str(pydicom.dcmread(first_seg).SeriesInstanceUID)
    assert str(pydicom.dcmread(second_seg).SeriesInstanceUID) != first_uid
    wait_for(lambda: f"replaces the SEG of series {first_uid}" in node.log(), 10, "the log's reason", node.log)
    assert "1 late instance(s) arrived after job" in node.log()
    report = json.loads(
        (out / str(series.datasets[0].StudyInstanceUID) / series.series_uid / "report.json").read_text()
    )
    assert report["node"]["instances_used"] == 6 and report["node"]["late"]["late_instances"] == 1
    assert report["node"]["late"]["replaces_seg_series_instance_uid"] == first_uid
    time.sleep(2.5)  # room for a third SEG or a failed 1-slice job to show up
    assert len(segs_by_series(scp.folder)[series.series_uid]) == 2
    assert spool_state(spool, "failed") == [] and spool_state(spool, "queue") == []


def test_late_instances_are_dropped_on_request(
    tmp_path: Path, tumor_model: Path, make_ct: Callable[..., SeriesFolder], processes: list
) -> None:
    scp = StoreSCP(tmp_path / "received").start()
    processes.append(scp)
    spool = tmp_path / "spool"
    node = NodeProcess(spool, node_args(tumor_model, scp, None, "--late-instances", "drop"), tmp_path / "n.log")
    processes.append(node.start())
    series = make_ct()
    assert send(node.port, _by_z(series)[:-1])[0] == 0
    wait_segs(scp, series, node)
    assert send(node.port, _by_z(series)[-1:])[0] == 0
    wait_for(lambda: "dropped (--late-instances drop)" in node.log(), 30, "the drop's log line", node.log)
    time.sleep(2.5)
    assert len(segs_by_series(scp.folder)[series.series_uid]) == 1
    assert spool_state(spool, "failed") == [] and spool_state(spool, "queue") == []


def test_done_stays_within_its_bound_over_30_series(
    tmp_path: Path, tumor_model: Path, make_ct: Callable[..., SeriesFolder], processes: list
) -> None:
    spool, out = tmp_path / "spool", tmp_path / "out"
    node = NodeProcess(spool, node_args(tumor_model, None, out, "--keep-done", "5"), tmp_path / "node.log")
    processes.append(node.start())
    series = [make_ct() for _ in range(30)]
    senders = [storescu(node.port, [s.folder for s in series[k::3]]) for k in range(3)]
    largest = 0

    def all_done() -> bool:
        nonlocal largest
        largest = max(largest, len(spool_state(spool, "done")))
        return len(list(out.glob("*/*/report.json"))) == 30 and spool_state(spool, "queue") == []

    for proc in senders:
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, output
    wait_for(all_done, 180, "30 results in --out", node.log)
    assert largest <= 5 and len(spool_state(spool, "done")) == 5
    assert "done: 5" in status_text(spool)


def test_an_out_folder_holding_a_foreign_file_is_never_replaced(
    tmp_path: Path, tumor_model: Path, make_ct: Callable[..., SeriesFolder], processes: list
) -> None:
    spool, out = tmp_path / "spool", tmp_path / "out"
    node = NodeProcess(spool, node_args(tumor_model, None, out), tmp_path / "node.log")
    processes.append(node.start())
    series = make_ct()
    target = out / str(series.datasets[0].StudyInstanceUID) / series.series_uid
    target.mkdir(parents=True)
    (target / "important.txt").write_text("keep")
    assert send(node.port, [series.folder])[0] == 0
    wait_for(lambda: spool_state(spool, "failed"), 60, "the series in failed/", node.log)
    (job,) = spool_state(spool, "failed")
    error = json.loads((spool / "failed" / job / "error.json").read_text())
    assert error["type"] == "OutputError" and "litseg did not write (important.txt)" in error["message"]
    assert [p.name for p in target.iterdir()] == ["important.txt"]


def test_implausible_results_are_flagged_and_held_on_request(
    tmp_path: Path, tumor_model: Path, make_ct: Callable[..., SeriesFolder], processes: list
) -> None:
    """The 64x64x6 test series holds a liver of a few mL: implausible (liver_volume_out_of_range)."""
    scp = StoreSCP(tmp_path / "received").start()
    processes.append(scp)
    spool = tmp_path / "spool"
    node = NodeProcess(spool, node_args(tumor_model, scp, None, "--hold-implausible"), tmp_path / "node.log")
    processes.append(node.start())
    series = make_ct()
    assert send(node.port, [series.folder])[0] == 0
    wait_for(lambda: spool_state(spool, "held"), 60, "the result in held/", node.log)
    (job,) = spool_state(spool, "held")
    held = pydicom.dcmread(spool / "held" / job / "segmentation.dcm")
    assert held.SeriesDescription.startswith("CHECK:") and "volume_out_of_range" in held.ContentDescription
    assert "HELD in held/" in node.log() and "held: 1" in status_text(spool)
    time.sleep(1.5)
    assert series.series_uid not in segs_by_series(scp.folder)  # not forwarded
    # an operator releases it by moving the folder to outbox/: the forwarder delivers it
    (spool / "held" / job).rename(spool / "outbox" / job)
    ((seg, refs),) = wait_segs(scp, series, node)
    assert refs == series.sop_uids and pydicom.dcmread(seg).SeriesDescription.startswith("CHECK:")
