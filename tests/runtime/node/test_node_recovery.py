"""litseg-serve under failure: SIGKILL while receiving and while inferring, a destination that is down, a
full spool, SIGTERM. Each test runs its own node process and dcmtk peers on 127.0.0.1.

The two test-only hooks (environment variables, documented in runtime/node/handlers.py and worker.py)
slow a stage down so a kill lands inside it deterministically: LITSEG_NODE_TEST_STORE_DELAY_S (after
each spooled instance, before its C-STORE response) and LITSEG_NODE_TEST_INFERENCE_DELAY_S (per
inference batch).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pydicom

from tests.factories import SeriesGeometry

from .conftest import SeriesFolder
from .peers import NodeProcess, StoreSCP, echo, free_port, segs_by_series, send, storescu, wait_for
from .test_node_peers import node_args, spool_state, status_text, wait_segs


def incoming_sops(spool: Path) -> set[str]:
    return {p.stem for p in (spool / "incoming").rglob("*.dcm")}


def test_sigkill_while_receiving_loses_no_instance(
    tmp_path: Path, tumor_model: Path, make_ct: Callable[..., SeriesFolder], processes: list
) -> None:
    scp = StoreSCP(tmp_path / "received").start()
    processes.append(scp)
    spool = tmp_path / "spool"
    args = node_args(tumor_model, scp, None, "--idle-seconds", "4")
    slow = NodeProcess(spool, args, tmp_path / "node.log", env={"LITSEG_NODE_TEST_STORE_DELAY_S": "0.5"}).start()
    processes.append(slow)
    series = make_ct()
    sender = storescu(slow.port, [series.folder])
    wait_for(lambda: len(incoming_sops(spool)) >= 2, 30, "two spooled instances", slow.log)
    slow.kill()  # mid-association: the sender is still waiting for a C-STORE response
    output, _ = sender.communicate(timeout=60)
    kept = incoming_sops(spool)
    assert 2 <= len(kept) < 6, output
    assert kept <= series.sop_uids
    node = NodeProcess(spool, args, tmp_path / "node.log").start()
    processes.append(node)
    assert "recovered: 0 queue, 0 outbox, 0 done, 0 failed, 1 incoming" in node.log()
    # the sender retries only what the node did not keep: the kept instances must be in the SEG
    missing = [p for p in series.paths if _sop(p) not in kept]
    code, output = send(node.port, missing)
    assert code == 0, output
    ((_, refs),) = wait_segs(scp, series, node)
    assert refs == series.sop_uids
    time.sleep(2)
    assert len(segs_by_series(scp.folder)[series.series_uid]) == 1
    assert list((spool / "tmp").iterdir()) == []


def _sop(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_sigkill_while_inferring_then_restart_delivers_each_seg_once(
    tmp_path: Path, tumor_model: Path, make_ct: Callable[..., SeriesFolder], processes: list
) -> None:
    scp = StoreSCP(tmp_path / "received").start()
    processes.append(scp)
    spool = tmp_path / "spool"
    args = node_args(tumor_model, scp, None)
    slow = NodeProcess(spool, args, tmp_path / "node.log", env={"LITSEG_NODE_TEST_INFERENCE_DELAY_S": "60"}).start()
    processes.append(slow)
    series = make_ct()
    code, output = send(slow.port, [series.folder])
    assert code == 0, output
    wait_for(lambda: "segmenting 6 instances" in slow.log(), 30, "inference to start", slow.log)
    text = status_text(spool)
    assert "queue depth: 1 series" in text and "node running" in text
    slow.kill()
    assert "node not running" in status_text(spool)
    node = NodeProcess(spool, args, tmp_path / "node.log").start()
    processes.append(node)
    ((_, refs),) = wait_segs(scp, series, node)
    assert refs == series.sop_uids
    wait_for(lambda: len(spool_state(spool, "done")) == 1, 10, "the job to be done", node.log)
    # a finished series is not redone after another crash
    node.kill()
    again = NodeProcess(spool, args, tmp_path / "node.log").start()
    processes.append(again)
    assert "recovered: 0 queue, 0 outbox, 1 done, 0 failed, 0 incoming" in again.log()
    time.sleep(2.5)  # more than --idle-seconds: anything pending would have been redone by now
    assert len(segs_by_series(scp.folder)[series.series_uid]) == 1
    assert again.log().count("segmenting 6 instances") == 2  # the killed attempt and the one that finished


def test_destination_down_then_up_still_delivers_once(
    tmp_path: Path, tumor_model: Path, make_ct: Callable[..., SeriesFolder], processes: list
) -> None:
    scp = StoreSCP(tmp_path / "received", port=free_port())  # not started yet: the peer is down
    processes.append(scp)
    spool = tmp_path / "spool"
    args = node_args(tumor_model, scp, None, "--retry-initial-seconds", "0.2", "--retry-max-seconds", "1")
    node = NodeProcess(spool, args, tmp_path / "node.log").start()
    processes.append(node)
    first, second = make_ct(), make_ct()
    assert send(node.port, [first.folder])[0] == 0
    wait_for(lambda: node.log().count("not delivered") >= 2, 30, "two failed deliveries", node.log)
    assert spool_state(spool, "outbox") and "awaiting delivery: 1" in status_text(spool)
    scp.start()
    ((_, refs),) = wait_segs(scp, first, node)
    assert refs == first.sop_uids
    delivered = re.compile(r"status 0x0000 after (\d+) attempt")
    wait_for(lambda: delivered.search(node.log()), 10, "the delivery log line", node.log)
    match = delivered.search(node.log())
    assert match is not None and int(match.group(1)) >= 3  # two failures at least, then the success
    # down again, and the node crashes while the result waits: the spool keeps it
    scp.stop()
    assert send(node.port, [second.folder])[0] == 0
    wait_for(lambda: spool_state(spool, "outbox"), 30, "a result awaiting delivery", node.log)
    node.kill()
    scp.start()
    node = NodeProcess(spool, args, tmp_path / "node.log").start()
    processes.append(node)
    assert "1 outbox" in node.log().rsplit("listening on", 1)[1].splitlines()[0]
    ((_, refs),) = wait_segs(scp, second, node)
    assert refs == second.sop_uids
    time.sleep(1.5)
    received = segs_by_series(scp.folder)
    assert len(received[first.series_uid]) == 1 and len(received[second.series_uid]) == 1
    assert spool_state(spool, "outbox") == []


def test_full_spool_answers_out_of_resources_and_keeps_running(
    tmp_path: Path, tumor_model: Path, make_ct: Callable[..., SeriesFolder], processes: list
) -> None:
    scp = StoreSCP(tmp_path / "received").start()
    processes.append(scp)
    spool = tmp_path / "spool"
    node = NodeProcess(spool, node_args(tumor_model, scp, None, "--max-spool-mb", "0.25"), tmp_path / "n.log")
    processes.append(node.start())
    big = make_ct(SeriesGeometry(rows=128, columns=128, slices=12))  # 12 x 33 kB > 256 kB
    code, output = send(node.port, [big.folder])
    assert "Received Store Response (Refused: OutOfResources)" in output, output  # status 0xA700
    assert code != 0
    assert echo(node.port).returncode == 0  # still serving
    # the incomplete series is not segmented: failed/ records why, and its instances are dropped
    wait_for(lambda: spool_state(spool, "failed"), 30, "the incomplete series in failed/", node.log)
    (job,) = spool_state(spool, "failed")
    assert "refused while the spool was full" in (spool / "failed" / job / "error.json").read_text()
    assert not list((spool / "failed" / job).rglob("*.dcm"))
    small = make_ct()
    assert send(node.port, [small.folder])[0] == 0  # the space is free again
    ((_, refs),) = wait_segs(scp, small, node)
    assert refs == small.sop_uids
    assert big.series_uid not in segs_by_series(scp.folder)


def test_sigterm_finishes_the_running_series_and_exits_0(
    tmp_path: Path, tumor_model: Path, make_ct: Callable[..., SeriesFolder], processes: list
) -> None:
    scp = StoreSCP(tmp_path / "received").start()
    processes.append(scp)
    spool = tmp_path / "spool"
    env = {"LITSEG_NODE_TEST_INFERENCE_DELAY_S": "2"}
    node = NodeProcess(spool, node_args(tumor_model, scp, None), tmp_path / "node.log", env=env).start()
    processes.append(node)
    series = make_ct()
    assert send(node.port, [series.folder])[0] == 0
    wait_for(lambda: "segmenting 6 instances" in node.log(), 30, "inference to start", node.log)
    assert node.terminate(timeout=60) == 0
    ((_, refs),) = segs_by_series(scp.folder)[series.series_uid]
    assert refs == series.sop_uids
    assert "stopped; left for the next start: 0 queued, 0 awaiting delivery" in node.log()
    assert spool_state(spool, "done") and spool_state(spool, "queue") == []
