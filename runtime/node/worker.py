"""Workers: segment each queued series with the shared model and keep the result in the spool.

A worker claims a job, runs the same :func:`litseg.runtime.segment` as ``litseg-run`` (through a
:class:`~litseg.runtime.segmenter.Segmenter` that every worker shares: one model in memory), writes the
result (SEG + report) into the job folder, then moves the job on in one rename: to ``outbox/`` when a
``--forward`` peer must acknowledge it, else to ``done/``; with ``--hold-implausible`` a result whose liver
is implausible goes to ``held/`` instead. A job whose series was closed before (late instances) is first
handled by :mod:`~litseg.runtime.node.late`. With ``--out`` the results are first written
to ``<out>/<StudyUID>/<SeriesUID>/`` by :func:`litseg.runtime.write_results`, and that very SEG (same SOP
Instance UID) is the one forwarded. A series that cannot be segmented moves to ``failed/`` with its
error; it is never retried by itself and never stops the node.

For tests only: the environment variable ``LITSEG_NODE_TEST_INFERENCE_DELAY_S`` makes each inference
batch sleep that many seconds, so a test can kill the node while it is inferring.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pydicom

from ..api import OUTPUT_FILES, write_results
from ..errors import EXIT_INTERNAL, InputError
from ..segmenter import Segmenter
from ..series import DicomSeries
from ..write import strict_json
from .config import NodeConfig
from .late import LateJob, prepare, series_uid_of
from .series_queue import SeriesQueue
from .spool import REPORT_FILE, Spool, read_json
from .status import format_series_line

log = logging.getLogger(__name__)

TEST_DELAY_ENV = "LITSEG_NODE_TEST_INFERENCE_DELAY_S"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Worker:
    """Segments queued jobs until stopped; an instance serves one thread.

    Parameters
    ----------
    segmenter
        Shared by all workers (thread-safe).
    spool, queue, config
        The node's spool, series queue and settings.
    results_ready
        Set after a job moved to ``outbox/``, to wake the forwarder.
    """

    def __init__(
        self,
        segmenter: Segmenter,
        spool: Spool,
        queue: SeriesQueue,
        config: NodeConfig,
        results_ready: threading.Event,
    ) -> None:
        self.segmenter = segmenter
        self.spool = spool
        self.queue = queue
        self.config = config
        self.results_ready = results_ready
        self._delay_s = float(os.environ.get(TEST_DELAY_ENV, "0") or 0)

    def run(self, stop: threading.Event) -> None:
        """Thread body: the job being processed when ``stop`` is set is finished first."""
        while not stop.is_set():
            job = self.queue.claim(timeout=0.5)
            if job is None:
                continue
            try:
                self.process(job)
            except Exception:  # a spool/disk problem: the job stays queued and is tried again later
                log.exception("job %s could not be completed; it stays queued", job)
                stop.wait(1.0)
            finally:
                self.queue.release(job)

    def process(self, job: str) -> None:
        folder = self.spool.path("queue", job)
        if self.spool.has_result(job):  # segmented before a crash: finish without redoing it
            log.info("series %s: result found in the spool (recovered), not segmented again", series_uid_of(job))
            self._finish(job, read_json(folder / REPORT_FILE))
            return
        refused = self.spool.refused(job)
        if refused:
            shown = ", ".join(refused[:3]) + (", ..." if len(refused) > 3 else "")
            incomplete = InputError(
                f"{len(refused)} instance(s) of this series were refused while the spool was full (0xA700) and "
                f"never arrived afterwards (SOP Instance UID {shown}), so it is incomplete and was not segmented; "
                "its instances were dropped to free the spool: resend the series"
            )
            self._fail(job, len(self.spool.instances(job)), incomplete, keep_instances=False)
            return
        late = prepare(self.spool, job, self.config.late_instances)
        if late is not None and not late.merged and not self.spool.path("queue", job).is_dir():
            return  # dropped: the earlier result stands
        paths = self.spool.instances(job)
        log.info("series %s: segmenting %d instances", series_uid_of(job), len(paths))
        node: dict[str, Any] = {"job": job, "instances": len(paths)}
        if late is not None and late.merged:
            node["late"] = late.report()
        try:
            seg_bytes, report = self._segment(paths, node)
        except Exception as exc:  # bad input, model failure, unwritable --out: recorded, never retried alone
            self._fail(job, len(paths), exc, late=late)
            return
        self.spool.write_result(job, seg_bytes, report)
        self._finish(job, report)

    def _progress(self, stage: str, done: int, total: int) -> None:
        if self._delay_s > 0 and stage == "inference":
            time.sleep(self._delay_s)

    def _segment(self, paths: list[Path], node: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        """The SEG and the report (with the ``node`` section) of a job's instances; with ``--out`` both are
        written there too, the report with its ``node`` section."""
        result = self.segmenter(paths, progress=self._progress if self._delay_s > 0 else None)
        node = {**node, "out": None, "segmented_at": now_iso()}
        start = time.perf_counter()
        out_dir: Path | None = None
        if self.config.out is not None:
            out_dir = self.config.out / result.series.study_instance_uid / result.series.series_instance_uid
            written = write_results(result, out_dir, ("seg", "json"), overwrite=True)
            seg_bytes = written["seg"].read_bytes()  # the SEG in --out is the one forwarded: one SOP UID
            node["out"] = str(out_dir)
        else:
            buffer = io.BytesIO()
            self.segmenter.seg_dataset(result).save_as(buffer, enforce_file_format=True)
            seg_bytes = buffer.getvalue()
        report = result.report()
        report["timings_s"]["write"] = round(time.perf_counter() - start, 4)
        assert isinstance(result.series, DicomSeries)  # the node receives DICOM instances only
        node["instances_used"] = len(result.series.headers)  # the instances the SEG references
        node.update(_seg_uids(seg_bytes))
        report["node"] = node
        report["seg_file"] = OUTPUT_FILES["seg"]
        if out_dir is not None:  # the same report in --out, node section included (replaced in one rename)
            # written beside the results folder, not in it: a leftover after a crash must not make the folder
            # look as if it held a file litseg did not write
            tmp = out_dir.parent / f".{out_dir.name}.{OUTPUT_FILES['json']}.tmp-{os.getpid()}"
            tmp.write_text(json.dumps(strict_json(report), indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, out_dir / OUTPUT_FILES["json"])
        return seg_bytes, report

    def _finish(self, job: str, report: dict[str, Any]) -> None:
        if self.config.hold_implausible and report.get("liver_plausible") is False:
            summary = make_summary(job, report, state="held")
            self.spool.finish(job, "held", summary=summary)
            log.warning(
                "%s; HELD in held/ (--hold-implausible: %s), not forwarded: move the folder to outbox/ to send it",
                format_series_line(summary),
                ", ".join(_warning_codes(report)),
            )
            return
        if self.config.forward is not None:
            self.spool.finish(job, "outbox")
            self.results_ready.set()
            return
        summary = make_summary(job, report, state="done")
        self.spool.finish(job, "done", summary=summary)
        log.info(format_series_line(summary))

    def _fail(
        self, job: str, instances: int, exc: Exception, keep_instances: bool = True, late: LateJob | None = None
    ) -> None:
        message = str(exc)
        if late is not None and not late.merged:  # late instances segmented alone: say why they were alone
            why = (
                "which failed and kept no instances"
                if late.earlier.state == "failed"
                else f"whose instances were released after the late window of {self.config.late_window_seconds:.0f} s"
            )
            message += (
                f" ({late.late_instances} instance(s) of this series arrived after it was closed as job "
                f"{late.earlier.job}, {why}: resend the whole series)"
            )
        error = {
            "type": type(exc).__name__,
            "message": message,
            "exit_code": getattr(exc, "exit_code", EXIT_INTERNAL),
            "failed_at": now_iso(),
        }
        if not hasattr(exc, "exit_code"):  # not a LitsegError: a bug or a resource problem; keep the trace
            log.error("series %s: unexpected error", series_uid_of(job), exc_info=exc)
        self.spool.fail(job, error, keep_instances)
        summary = {"job": job, "series_instance_uid": series_uid_of(job), "instances": instances, "state": "failed"}
        log.warning(format_series_line({**summary, "error": error}))


def _seg_uids(seg: bytes) -> dict[str, str]:
    """The SEG's own Series and SOP Instance UIDs (what a later SEG of the same series replaces)."""
    ds = pydicom.dcmread(
        io.BytesIO(seg), stop_before_pixels=True, specific_tags=["SeriesInstanceUID", "SOPInstanceUID"]
    )
    return {"seg_series_instance_uid": str(ds.SeriesInstanceUID), "seg_sop_instance_uid": str(ds.SOPInstanceUID)}


def _warning_codes(report: dict[str, Any]) -> list[str]:
    warnings = (report.get("plausibility") or {}).get("warnings") or []
    return [str(w.get("code")) for w in warnings if isinstance(w, dict)]


def make_summary(job: str, report: dict[str, Any], state: str, forward: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``done/<job>/summary.json`` keeps (no patient identifiers: UIDs, counts, timings, outcome)."""
    node = report.get("node", {})
    return {
        "job": job,
        "state": state,
        "series_instance_uid": report.get("series_instance_uid", series_uid_of(job)),
        "study_instance_uid": report.get("study_instance_uid"),
        "instances": node.get("instances"),
        "instances_used": node.get("instances_used"),
        "seg_series_instance_uid": node.get("seg_series_instance_uid"),
        "late": node.get("late"),
        "liver_plausible": report.get("liver_plausible"),
        "warnings": _warning_codes(report),
        "finished_at": now_iso(),
        "timings_s": report.get("timings_s", {}),
        "result": {
            "liver_volume_ml": report.get("liver_volume_ml"),  # the whole liver, tumours included
            "parenchyma_volume_ml": report.get("parenchyma_volume_ml"),
            "tumor_count": report.get("tumor_count"),
            "tumor_volume_ml": report.get("tumor_volume_ml"),
        },
        "out": node.get("out"),
        "forward": forward,
    }
