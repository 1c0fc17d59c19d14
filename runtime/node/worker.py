"""Workers: segment each queued series with the shared model and keep the result in the spool.

A worker claims a job, runs the same :func:`litseg.runtime.segment` as ``litseg-run`` (through a
:class:`~litseg.runtime.segmenter.Segmenter` that every worker shares: one model in memory), writes the
result (SEG + report) into the job folder, then moves the job on in one rename: to ``outbox/`` when a
``--forward`` peer must acknowledge it, else to ``done/``. With ``--out`` the results are first written
to ``<out>/<StudyUID>/<SeriesUID>/`` by :func:`litseg.runtime.write_results`, and that very SEG (same SOP
Instance UID) is the one forwarded. A series that cannot be segmented moves to ``failed/`` with its
error; it is never retried by itself and never stops the node.

For tests only: the environment variable ``LITSEG_NODE_TEST_INFERENCE_DELAY_S`` makes each inference
batch sleep that many seconds, so a test can kill the node while it is inferring.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..api import OUTPUT_FILES, write_results
from ..errors import EXIT_INTERNAL, InputError
from ..segmenter import Segmenter
from .config import NodeConfig
from .series_queue import SeriesQueue
from .spool import REPORT_FILE, Spool, read_json
from .status import format_series_line

log = logging.getLogger(__name__)

TEST_DELAY_ENV = "LITSEG_NODE_TEST_INFERENCE_DELAY_S"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def series_uid_of(job: str) -> str:
    """The SeriesInstanceUID in a job name ``<ns>-<uid>``."""
    return job.split("-", 1)[-1]


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
        paths = self.spool.instances(job)
        refused = self.spool.refused(job)
        if refused:
            incomplete = InputError(
                f"{refused} instance(s) of this series were refused while the spool was full (0xA700), so it is "
                "incomplete and was not segmented; its instances were dropped to free the spool: resend the series"
            )
            self._fail(job, len(paths), incomplete, keep_instances=False)
            return
        log.info("series %s: segmenting %d instances", series_uid_of(job), len(paths))
        try:
            seg_bytes, report = self._segment(paths)
        except Exception as exc:  # bad input, model failure, unwritable --out: recorded, never retried alone
            self._fail(job, len(paths), exc)
            return
        report["node"] = {"job": job, "instances": len(paths), "segmented_at": now_iso(), **report.get("node", {})}
        self.spool.write_result(job, seg_bytes, report)
        self._finish(job, report)

    def _progress(self, stage: str, done: int, total: int) -> None:
        if self._delay_s > 0 and stage == "inference":
            time.sleep(self._delay_s)

    def _segment(self, paths: list[Path]) -> tuple[bytes, dict[str, Any]]:
        result = self.segmenter(paths, progress=self._progress if self._delay_s > 0 else None)
        node: dict[str, Any] = {"out": None}
        start = time.perf_counter()
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
        report["node"] = node
        report["seg_file"] = OUTPUT_FILES["seg"]
        return seg_bytes, report

    def _finish(self, job: str, report: dict[str, Any]) -> None:
        if self.config.forward is not None:
            self.spool.finish(job, deliver=True)
            self.results_ready.set()
            return
        summary = make_summary(job, report, state="done")
        self.spool.finish(job, deliver=False, summary=summary)
        log.info(format_series_line(summary))

    def _fail(self, job: str, instances: int, exc: Exception, keep_instances: bool = True) -> None:
        error = {
            "type": type(exc).__name__,
            "message": str(exc),
            "exit_code": getattr(exc, "exit_code", EXIT_INTERNAL),
            "failed_at": now_iso(),
        }
        if not hasattr(exc, "exit_code"):  # not a LitsegError: a bug or a resource problem; keep the trace
            log.error("series %s: unexpected error", series_uid_of(job), exc_info=exc)
        self.spool.fail(job, error, keep_instances)
        summary = {"job": job, "series_instance_uid": series_uid_of(job), "instances": instances, "state": "failed"}
        log.warning(format_series_line({**summary, "error": error}))


def make_summary(job: str, report: dict[str, Any], state: str, forward: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``done/<job>/summary.json`` keeps (no patient identifiers: UIDs, counts, timings, outcome)."""
    node = report.get("node", {})
    return {
        "job": job,
        "state": state,
        "series_instance_uid": report.get("series_instance_uid", series_uid_of(job)),
        "study_instance_uid": report.get("study_instance_uid"),
        "instances": node.get("instances"),
        "finished_at": now_iso(),
        "timings_s": report.get("timings_s", {}),
        "result": {
            "liver_volume_ml": report.get("liver_volume_ml"),
            "tumor_count": report.get("tumor_count"),
            "tumor_volume_ml": report.get("tumor_volume_ml"),
        },
        "out": node.get("out"),
        "forward": forward,
    }
