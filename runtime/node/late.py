"""Late instances: instances of a series that arrive after the node closed it.

DICOM has no "end of series" message, so the node closes a series after ``idle_seconds`` without a new
instance (:mod:`~litseg.runtime.node.series_queue`); an instance that comes later (a slow sender, a
retry after 0xA700, a technologist adding a reconstruction slice) starts a new job of the same series.
Segmented alone it would give a SEG of one slice, or fail, and the first SEG would silently lack it.

So a finished job keeps its instances for the late-instance window, and a job whose series has an earlier
job is handled here, by the operator's choice (``--late-instances``):

- ``resegment`` (default): the earlier job's instances join the late ones and the series is segmented once
  more with every instance; the new SEG (a new SeriesInstanceUID) replaces the earlier one at the
  destination and the log says why. A resend that brings nothing new is dropped: the earlier result stands.
- ``drop``: the late instances are dropped with a log line; the earlier result stands.

Jobs of one series are segmented one after the other (:meth:`SeriesQueue.claim` skips a job while an earlier
one of its series is queued), so a late job always finds its predecessor finished.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass

from .spool import FINISHED_STATES, INSTANCES, REPORT_FILE, Spool, read_json

log = logging.getLogger(__name__)

LATE_MODES = ("resegment", "drop")
#: States an earlier job of a series can be in, newest result first when several exist.
EARLIER_STATES = ("queue", *FINISHED_STATES, "failed")


def series_uid_of(job: str) -> str:
    """The SeriesInstanceUID in a job name ``<ns>-<uid>``."""
    return job.split("-", 1)[-1]


@dataclass(frozen=True)
class EarlierJob:
    """A job of the same series closed before the late one."""

    state: str
    job: str
    sop_uids: frozenset[str]  # the instances it still holds (empty once released)
    seg_series_uid: str | None  # the SeriesInstanceUID of its SEG, when it has one


@dataclass(frozen=True)
class LateJob:
    """What :func:`prepare` decided for a job whose series was closed before."""

    earlier: EarlierJob
    late_instances: int  # instances of the late job that the earlier one lacked
    merged: bool  # the earlier instances joined the job: it is segmented with every instance

    def report(self) -> dict[str, object]:
        """The ``node.late`` section of the report."""
        return {
            "earlier_job": self.earlier.job,
            "earlier_state": self.earlier.state,
            "late_instances": self.late_instances,
            "replaces_seg_series_instance_uid": self.earlier.seg_series_uid,
        }


def earlier_jobs(spool: Spool, job: str) -> list[EarlierJob]:
    """Jobs of ``job``'s series closed before it, newest first."""
    uid = series_uid_of(job)
    found = []
    for state in EARLIER_STATES:
        for name in spool.jobs(state):
            if name < job and series_uid_of(name) == uid:
                folder = spool.path(state, name)
                sops = frozenset(p.stem for p in (folder / INSTANCES).glob("*.dcm"))
                seg_uid = read_json(folder / REPORT_FILE).get("node", {}).get("seg_series_instance_uid")
                found.append(EarlierJob(state, name, sops, seg_uid if isinstance(seg_uid, str) else None))
    return sorted(found, key=lambda e: e.job, reverse=True)


def queued_earlier(jobs: list[str], job: str) -> bool:
    """Whether a job of ``job``'s series closed before it is among ``jobs`` (the queue)."""
    uid = series_uid_of(job)
    return any(other < job and series_uid_of(other) == uid for other in jobs)


def prepare(spool: Spool, job: str, mode: str) -> LateJob | None:
    """Handle a job whose series has an earlier job; ``None`` when it has none (an ordinary job).

    Returns a :class:`LateJob`; when its ``merged`` is false and the job is gone from ``queue/``, the late
    instances were dropped (``drop`` mode, or a resend without anything new).
    """
    earlier = earlier_jobs(spool, job)
    if not earlier:
        return None
    uid = series_uid_of(job)
    own = {p.stem for p in spool.instances(job)}
    if mode == "drop":
        finished = next((e for e in earlier if e.state != "failed"), None)
        if finished is None:  # only failed attempts before: this is the resend the failure asked for
            return None
        spool.drop_job("queue", job)
        log.warning(
            "series %s: %d instance(s) arrived after the series was closed (job %s, %s); dropped "
            "(--late-instances drop): the earlier result stands",
            uid,
            len(own),
            finished.job,
            finished.state,
        )
        return LateJob(finished, len(own), merged=False)
    source = next((e for e in earlier if e.sop_uids), None)
    if source is None:  # the earlier instances were released (the late window passed): segmented alone
        return LateJob(earlier[0], len(own), merged=False)
    new = own - source.sop_uids
    if not new and source.state != "failed":
        spool.drop_job("queue", job)
        log.info(
            "series %s: %d instance(s) received again, none new; the result of job %s stands", uid, len(own), source.job
        )
        return LateJob(source, 0, merged=False)
    _link_missing(spool, source, job, own)
    if source.state != "failed":  # the late job holds them now; a failed job keeps its own for inspection
        spool.drop_instances(source.state, source.job)
    if source.state == "outbox":  # not delivered yet: never send a SEG that lacks the late instances
        superseded = {"job": source.job, "state": "superseded", "series_instance_uid": uid, "superseded_by": job}
        if spool.delivered(source.job, superseded):
            log.warning(
                "series %s: the undelivered SEG of job %s is withdrawn: job %s replaces it", uid, source.job, job
            )
    log.warning(
        "series %s: re-segmenting with all %d instances: %d late instance(s) arrived after job %s was closed "
        "(%s); the new SEG, in a new series, replaces the SEG of series %s",
        uid,
        len(own | source.sop_uids),
        len(new),
        source.job,
        source.state,
        source.seg_series_uid or "(none)",
    )
    return LateJob(source, len(new), merged=True)


def _link_missing(spool: Spool, source: EarlierJob, job: str, own: set[str]) -> None:
    """Hard-link (or copy, across file systems) the earlier instances the late job lacks into it."""
    src = spool.path(source.state, source.job) / INSTANCES
    dst = spool.path("queue", job) / INSTANCES
    for sop in sorted(source.sop_uids - own):  # a resent instance: the newer copy wins
        target = dst / f"{sop}.dcm"
        try:
            os.link(src / f"{sop}.dcm", target)
        except OSError:
            shutil.copy2(src / f"{sop}.dcm", target)
        spool.account(target.stat().st_size)
