"""The node's parts in-process: settings validation, CLI usage errors, the spool's crash recovery, --status."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from litseg.runtime.node.cli import main
from litseg.runtime.node.config import Destination, NodeConfig
from litseg.runtime.node.late import prepare
from litseg.runtime.node.series_queue import SeriesQueue
from litseg.runtime.node.spool import SeriesKey, Spool, SpoolFullError
from litseg.runtime.node.status import format_series_line, spool_status

STUDY, SERIES = "1.2.3", "1.2.3.4"
KEY = SeriesKey(STUDY, SERIES)


def test_destination_parses_and_names_bad_input() -> None:
    assert Destination.parse("PACS@10.0.0.5:104") == Destination("PACS", "10.0.0.5", 104)
    assert Destination.parse("PACS@[::1]:11112").host == "::1"
    for bad in ("PACS10.0.0.5:104", "PACS@host", "PACS@host:x", "@host:104", "A_TITLE_LONGER_THAN_16@h:1"):
        with pytest.raises(ValueError, match=r"AE@HOST:PORT|AE title|16"):
            Destination.parse(bad)


def test_node_config_validates(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one result destination"):
        NodeConfig(spool=tmp_path)
    ok = NodeConfig(spool=str(tmp_path), out=str(tmp_path / "out"), max_spool_mb=1.5)  # type: ignore[arg-type]
    assert ok.spool == tmp_path and ok.max_spool_bytes == int(1.5 * 2**20)
    for field, value, message in (
        ("ae_title", "BACK\\SLASH", "ae_title"),
        ("port", 70000, "port"),
        ("idle_seconds", 0, "idle_seconds"),
        ("workers", 0, "workers"),
        ("max_pdu", 100, "max_pdu"),
        ("allow_ae", ("",), "allow_ae"),
        ("retry_initial_seconds", 500.0, "retry"),
    ):
        with pytest.raises(ValueError, match=message):
            NodeConfig(spool=tmp_path, out=tmp_path, **{field: value})


@pytest.mark.parametrize(
    "argv",
    [
        ["--spool", "S"],  # no --forward and no --out
        ["--spool", "S", "--out", "O", "--port", "70000"],
        ["--spool", "S", "--forward", "PACS-no-port"],
        ["--spool", "S", "--out", "O", "--device", "tpu"],
        ["--out", "O"],  # no --spool
    ],
)
def test_bad_flags_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "litseg-serve: error:" in capsys.readouterr().err


def test_spool_recovers_exactly_what_a_crash_leaves(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.open()
    spool.store(KEY, "1.1", b"a" * 10)
    spool.store(KEY, "1.1", b"b" * 12)  # the sender resent it: replaced, counted once
    spool.store(KEY, "1.2", b"c" * 10)
    assert spool.used_bytes == 22
    job = spool.close_series(KEY)
    assert [p.name for p in spool.instances(job)] == ["1.1.dcm", "1.2.dcm"]
    assert not (tmp_path / "spool" / "incoming" / STUDY).exists()
    # crash leftovers: a partial write, an empty job folder, a result already computed for another job
    (tmp_path / "spool" / "tmp" / "x.part").write_bytes(b"partial")
    (tmp_path / "spool" / "queue" / ".staging-00000000000000000001-9.9").mkdir()  # before the series moved in
    staged = tmp_path / "spool" / "queue" / ".staging-00000000000000000002-8.8"  # after: the move is finished
    (staged / "instances").mkdir(parents=True)
    (staged / "instances" / "8.8.1.dcm").write_bytes(b"f" * 3)
    spool.store(SeriesKey(STUDY, "5.5"), "5.5.1", b"d" * 5)
    done_job = spool.close_series(SeriesKey(STUDY, "5.5"))
    spool.write_result(done_job, b"SEG", {"series_instance_uid": "5.5"})
    spool.store(KEY, "1.3", b"e" * 7)  # a new instance of the closed series: a new incoming folder

    again = Spool(tmp_path / "spool")
    counts = again.open()
    assert counts == {"queue": 3, "outbox": 0, "done": 0, "failed": 0, "incoming": 1}
    assert list((tmp_path / "spool" / "tmp").iterdir()) == []
    assert again.jobs("queue") == sorted([job, done_job, "00000000000000000002-8.8"])
    assert [p.name for p in (tmp_path / "spool" / "queue").iterdir() if p.name.startswith(".")] == []
    assert again.has_result(done_job) and not again.has_result(job)
    assert again.idle_series(0.0) == [KEY]
    again.finish(done_job, "outbox")
    assert again.jobs("outbox") == [done_job] and not (again.path("outbox", done_job) / "instances").exists()
    again.delivered(done_job, {"state": "done", "series_instance_uid": "5.5"})
    assert again.jobs("done") == [done_job]
    assert again.used_bytes == sum(f.stat().st_size for f in (tmp_path / "spool").rglob("*") if f.is_file())


def test_spool_limit_refuses_and_marks_the_series(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=100)
    spool.open()
    spool.store(KEY, "1.1", b"a" * 60)
    with pytest.raises(SpoolFullError, match="does not fit"):
        spool.store(KEY, "1.2", b"b" * 60)
    job = spool.close_series(KEY)
    assert spool.refused(job) == ["1.2"]
    spool.fail(job, {"type": "InputError"}, keep_instances=False)
    assert spool.jobs("failed") == [job] and spool.jobs("queue") == []
    assert [p.name for p in spool.path("failed", job).iterdir()] == ["error.json"]
    assert spool.used_bytes < 60
    spool.store(KEY, "1.2", b"b" * 60)  # room again


def test_a_crash_while_failing_a_job_is_finished_at_start(tmp_path: Path) -> None:
    """A job whose error was written in queue/ before a crash (instances possibly already dropped) is a
    decided failure: the next start moves it to failed/ instead of segmenting what is left of it."""
    spool = Spool(tmp_path / "spool")
    spool.open()
    spool.store(KEY, "1.1", b"a" * 10)
    job = spool.close_series(KEY)
    spool.write_json(spool.path("queue", job) / "error.json", {"type": "InputError"})
    (spool.path("queue", job) / "instances" / "1.1.dcm").unlink()
    again = Spool(tmp_path / "spool")
    assert again.open()["failed"] == 1
    assert again.jobs("queue") == [] and again.jobs("failed") == [job]
    assert json.loads((again.path("failed", job) / "error.json").read_text()) == {"type": "InputError"}


def test_spool_rejects_non_uid_names(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.open()
    with pytest.raises(ValueError, match="not a valid DICOM UID"):
        spool.store(SeriesKey(STUDY, "../../etc"), "1.1", b"x")


def test_status_reads_the_spool_without_a_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spool = Spool(tmp_path / "spool")
    spool.open()
    spool.store(KEY, "1.1", b"a")
    job = spool.close_series(KEY)
    spool.write_result(job, b"SEG", {})
    summary = {
        "job": job,
        "state": "done",
        "series_instance_uid": SERIES,
        "instances": 1,
        "timings_s": {"read": 0.1, "model_inference": 1.25, "send": 0.05},
        "result": {"liver_volume_ml": 1500.0, "tumor_count": 2, "tumor_volume_ml": 12.5},
        "forward": {"destination": "PACS@h:104", "status": "0x0000", "attempts": 1},
        "out": None,
    }
    spool.finish(job, "done", summary=summary)
    spool.store(SeriesKey(STUDY, "7.7"), "7.1", b"b")
    # a node that died and whose pid now belongs to another program (here: pytest) is not running
    (tmp_path / "spool" / "node.json").write_text(json.dumps({"pid": os.getpid(), "port": 104}))
    status = spool_status(tmp_path / "spool")
    assert status["receiving"] == {"series": 1, "instances": 1}
    assert status["queue_depth"] == 0 and status["done"] == 1 and not status["node"]["running"]
    line = format_series_line(summary)
    assert line == (
        "series 1.2.3.4 (1 instances): read 0.10 s, inference 1.25 s, send 0.05 s; liver 1500.0 mL incl. "
        "2 tumor(s) 12.5 mL; forward PACS@h:104 status 0x0000 after 1 attempt(s)"
    )
    assert main(["--status", "--spool", str(tmp_path / "spool")]) == 0
    printed = capsys.readouterr().out
    assert "queue depth: 0 series" in printed and line in printed and "receiving: 1 series" in printed


def test_a_refused_instance_that_arrives_later_is_struck_off(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=100)
    spool.open()
    spool.store(KEY, "1.1", b"a" * 60)
    for _ in range(2):  # refused twice (the sender retries while the spool is full): recorded once
        with pytest.raises(SpoolFullError):
            spool.store(KEY, "1.2", b"b" * 60)
    spool.store(KEY, "1.1", b"a" * 60)  # resending a stored instance needs no new room
    spool.max_bytes = 200  # room again (another series was segmented and dropped)
    spool.store(KEY, "1.2", b"b" * 60)
    job = spool.close_series(KEY)
    assert spool.refused(job) == []
    assert sorted(p.name for p in spool.path("queue", job).rglob("*") if p.is_file()) == ["1.1.dcm", "1.2.dcm"]


def test_done_is_pruned_by_count_and_by_age(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", keep_done=3, keep_done_s=3600)
    spool.open()
    for n in range(6):
        key = SeriesKey(STUDY, f"1.2.3.{n}")
        spool.store(key, f"1.{n}", b"x")
        job = spool.close_series(key)
        spool.write_result(job, b"SEG", {})
        spool.finish(job, "done", summary={})
        spool.retention.sweep(force=True)
    assert len(spool.jobs("done")) == 3
    old = spool.path("done", spool.jobs("done")[0])
    os.rename(old, old.with_name(f"{time.time_ns() - int(7200e9):020d}-1.2.3.99"))  # closed two hours ago
    assert len(spool.retention.prune_done(3, max_age_s=3600)) == 1 and len(spool.jobs("done")) == 2


def _finished_job(spool: Spool, sops: list[str], key: SeriesKey = KEY) -> str:
    for sop in sops:
        spool.store(key, sop, sop.encode())
    job = spool.close_series(key)
    assert job is not None
    spool.write_result(job, b"SEG", {"node": {"seg_series_instance_uid": "9.9.9"}})
    spool.finish(job, "done", summary={})
    return job


def test_a_late_instance_joins_the_earlier_ones_once(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", retain_instances_s=600)
    spool.open()
    first = _finished_job(spool, ["1.1", "1.2"])
    assert (spool.path("done", first) / "instances" / "1.1.dcm").is_file()  # kept for the late window
    spool.store(KEY, "1.3", b"late")
    late_job = spool.close_series(KEY)
    assert late_job is not None
    queue = SeriesQueue(spool, idle_seconds=1, max_queue=4)
    late = prepare(spool, late_job, "resegment")
    assert late is not None and late.merged and late.late_instances == 1
    assert late.report()["replaces_seg_series_instance_uid"] == "9.9.9"
    assert [p.stem for p in spool.instances(late_job)] == ["1.1", "1.2", "1.3"]
    assert not (spool.path("done", first) / "instances").exists()  # the late job holds them now
    assert queue.claim(timeout=0.1) == late_job
    # the same instances sent again, nothing new: dropped, the result stands
    spool.write_result(late_job, b"SEG", {})
    spool.finish(late_job, "done", summary={})
    for sop in ("1.1", "1.2", "1.3"):
        spool.store(KEY, sop, b"again")
    again = spool.close_series(KEY)
    assert again is not None
    resent = prepare(spool, again, "resegment")
    assert resent is not None and not resent.merged and spool.jobs("queue") == []


def test_late_instances_dropped_on_request_and_released_after_the_window(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", retain_instances_s=600)
    spool.open()
    first = _finished_job(spool, ["1.1", "1.2"])
    spool.store(KEY, "1.3", b"late")
    late_job = spool.close_series(KEY)
    assert late_job is not None
    dropped = prepare(spool, late_job, "drop")
    assert dropped is not None and not dropped.merged and spool.jobs("queue") == []
    assert spool.retention.release_instances(600) == 0
    assert spool.retention.release_instances(0) == 1 and not (spool.path("done", first) / "instances").exists()


def test_jobs_of_one_series_are_handed_out_one_at_a_time(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.open()
    other = SeriesKey(STUDY, "7.7")
    jobs = []
    for key, sop in ((KEY, "1.1"), (KEY, "1.2"), (other, "7.1")):
        spool.store(key, sop, b"x")
        jobs.append(spool.close_series(key))
    queue = SeriesQueue(spool, idle_seconds=1, max_queue=8)
    assert queue.claim(timeout=0.05) == jobs[0]
    assert queue.claim(timeout=0.05) == jobs[2]  # the second job of KEY waits for the first
    assert queue.claim(timeout=0.05) is None
    spool.fail(jobs[0], {"type": "InputError"})
    queue.release(jobs[0])
    assert queue.claim(timeout=0.05) == jobs[1]


def test_an_undelivered_seg_lacking_late_instances_is_withdrawn(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", retain_instances_s=600)
    spool.open()
    spool.store(KEY, "1.1", b"a")
    first = spool.close_series(KEY)
    assert first is not None
    spool.write_result(first, b"SEG", {"node": {"seg_series_instance_uid": "9.9.9"}})
    spool.finish(first, "outbox")  # the peer is down: the SEG waits
    spool.store(KEY, "1.2", b"late")
    late_job = spool.close_series(KEY)
    assert late_job is not None
    late = prepare(spool, late_job, "resegment")
    assert late is not None and late.merged
    assert spool.jobs("outbox") == [] and spool.jobs("done") == [first]
    summary = json.loads((spool.path("done", first) / "summary.json").read_text())
    assert summary["state"] == "superseded" and summary["superseded_by"] == late_job
    assert "superseded before delivery" in format_series_line(summary)
    assert not spool.delivered(first, {})  # a forwarder that was sending it meanwhile finds it gone
