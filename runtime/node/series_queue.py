"""Series completion and the bounded queue of complete series that feeds the workers.

DICOM has no "end of series" message, so a series counts as complete after ``idle_seconds`` without a
new instance of it (as MONAI Deploy's gateway and Orthanc's stable-series rule do). Instances of a series
that arrive after it was closed start a new job for that series, handled by :mod:`~litseg.runtime.node.late`
after the earlier job (jobs of one series are handed out one at a time, oldest first). The queue is the
spool's ``queue/`` folder itself, so it survives a crash; this class only hands each job to one worker at a
time and keeps at most ``max_queue`` jobs waiting (further complete series wait in ``incoming/``: back-pressure, nothing
is dropped).
"""

from __future__ import annotations

import logging
import threading

from .late import queued_earlier
from .spool import Spool

log = logging.getLogger(__name__)


class SeriesQueue:
    """Closes idle series into ``queue/`` and lets workers claim queued jobs one at a time.

    Parameters
    ----------
    spool
        The node's spool.
    idle_seconds
        Quiet time after which a series is complete.
    max_queue
        Most jobs waiting in ``queue/`` (claimed ones included).
    """

    def __init__(self, spool: Spool, idle_seconds: float, max_queue: int) -> None:
        self.spool = spool
        self.idle_seconds = idle_seconds
        self.max_queue = max_queue
        self._cond = threading.Condition()
        self._claimed: set[str] = set()
        self._closed = False

    def collect(self) -> list[str]:
        """Close every idle series while the queue has room; returns the new job names."""
        new: list[str] = []
        for key in self.spool.idle_series(self.idle_seconds):
            if len(self.spool.jobs("queue")) >= self.max_queue:
                break
            try:
                job = self.spool.close_series(key)
            except OSError as exc:  # e.g. the folder vanished under an operator's hands; try next round
                log.error("cannot queue series %s: %s", key.series_uid, exc)
                continue
            if job is not None:
                new.append(job)
        if new:
            with self._cond:
                self._cond.notify_all()
        return new

    def run_collector(self, stop: threading.Event) -> None:
        """Thread body: collect (and sweep finished jobs) until ``stop`` is set."""
        interval = min(0.25, self.idle_seconds / 4)
        while not stop.wait(interval):
            try:
                self.collect()
                self.spool.retention.sweep()
            except Exception:  # never let the collector die: the next round tries again
                log.exception("series collector error")

    def claim(self, timeout: float) -> str | None:
        """The oldest unclaimed job, claimed for the caller; ``None`` after ``timeout`` s or when closed."""
        with self._cond:
            for _ in range(2):
                if self._closed:
                    return None
                queued = self.spool.jobs("queue")
                for job in queued:
                    # one job of a series at a time, oldest first: a late job waits for its predecessor
                    if job not in self._claimed and not queued_earlier(queued, job):
                        self._claimed.add(job)
                        return job
                self._cond.wait(timeout)
        return None

    def release(self, job: str) -> None:
        """The worker is finished with ``job`` (it left ``queue/``)."""
        with self._cond:
            self._claimed.discard(job)
            self._cond.notify_all()

    def close(self) -> None:
        """Wake every waiting worker and hand out no more jobs."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def depth(self) -> int:
        return len(self.spool.jobs("queue"))
