"""What finished jobs keep, and for how long: their instances for the late-instance window, ``done/`` bounded.

A finished job (``outbox/``, ``done/``, ``held/``) keeps its instances for ``retain_instances_s`` so that a
late instance of its series can be segmented together with them (:mod:`~litseg.runtime.node.late`);
afterwards, or earlier when the spool limit is reached (a series being received comes first), they are
released. ``done/`` keeps at most ``keep_done`` summaries (the oldest goes before a new one comes in) and
none closed more than ``keep_done_s`` ago. The collector thread calls :meth:`Retention.sweep`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .spool import Spool

log = logging.getLogger(__name__)

#: Finished series whose summaries are kept for ``--status`` (``--keep-done``).
KEEP_DONE = 1000
#: Seconds between two sweeps of finished jobs (instances past the late window, done/ past its age).
SWEEP_INTERVAL_S = 5.0
#: States whose jobs are finished (a result exists); their instances are kept for the late-instance window.
FINISHED_STATES = ("outbox", "done", "held")
#: A job's instances folder and the file whose time says when its result was made.
INSTANCES = "instances"
REPORT_FILE = "report.json"


def closed_ns(job: str) -> int:
    """The closing time in a job name ``<ns, 20 digits>-<uid>`` (0 when the name has none)."""
    head = job.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


class Retention:
    """The retention rules of one spool (see the module docstring)."""

    def __init__(
        self, spool: Spool, retain_instances_s: float = 0.0, keep_done: int = KEEP_DONE, keep_done_s: float = 0.0
    ) -> None:
        self.spool = spool
        self.retain_instances_s = retain_instances_s
        self.keep_done = keep_done
        self.keep_done_s = keep_done_s
        self._last_sweep = 0.0

    def sweep(self, force: bool = False) -> None:
        """At most every :data:`SWEEP_INTERVAL_S`: release instances past the late window and prune
        ``done/`` by count and age."""
        now = time.monotonic()
        if not force and now - self._last_sweep < SWEEP_INTERVAL_S:
            return
        self._last_sweep = now
        self.release_instances(self.retain_instances_s)
        self.prune_done(self.keep_done, self.keep_done_s)

    def release_instances(self, older_than_s: float) -> int:
        """Drop the instances of finished jobs whose result is older than ``older_than_s``; returns how many
        jobs released theirs."""
        released = 0
        deadline = time.time() - older_than_s
        for state in FINISHED_STATES:
            for job in self.spool.jobs(state):
                folder = self.spool.path(state, job)
                if not (folder / INSTANCES).is_dir():
                    continue
                try:
                    finished = (folder / REPORT_FILE).stat().st_mtime
                except FileNotFoundError:  # moved on meanwhile
                    continue
                if finished <= deadline:
                    self.spool.drop_instances(state, job)
                    released += 1
        return released

    def prune_done(self, keep: int, max_age_s: float = 0.0) -> list[str]:
        """Remove the oldest ``done/`` jobs beyond ``keep``, and those closed more than ``max_age_s`` ago
        (0: no age limit); returns the removed job names."""
        jobs = self.spool.jobs("done")
        old = jobs[: max(len(jobs) - max(keep, 0), 0)]
        if max_age_s > 0:
            cutoff_ns = time.time_ns() - int(max_age_s * 1e9)
            old += [job for job in jobs[len(old) :] if closed_ns(job) < cutoff_ns]
        for job in old:
            self.spool.drop_job("done", job)
        return old

    def make_room(self, needed: int) -> None:
        """Release kept instances, oldest job first, until ``needed`` bytes are free."""
        finished = sorted((job, state) for state in FINISHED_STATES for job in self.spool.jobs(state))
        for job, state in finished:
            if needed <= 0:
                return
            if (self.spool.path(state, job) / INSTANCES).is_dir():
                needed -= self.spool.drop_instances(state, job)
                log.info("spool full: released the kept instances of finished job %s early", job)
