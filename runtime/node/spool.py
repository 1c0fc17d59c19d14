"""The node's on-disk spool: every received instance and every result lives here until it is safe to drop.

Layout (each state is a folder; a series moves between states by one ``os.replace`` of its folder, so a
``kill -9`` at any moment leaves every series in exactly one state)::

    <spool>/tmp/                                    partial writes; emptied at start
    <spool>/incoming/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm    series being received
    <spool>/queue/<job>/instances/<SOPInstanceUID>.dcm              complete series waiting for a worker
    <spool>/queue/<job>/segmentation.dcm + report.json              its result (report.json written last)
    <spool>/outbox/<job>/segmentation.dcm + report.json             results awaiting the peer's acknowledgement
    <spool>/done/<job>/summary.json                                 finished series
    <spool>/held/<job>/segmentation.dcm + summary.json              implausible results held back from the
                                                                    peer (``--hold-implausible``)
    <spool>/failed/<job>/instances/... + error.json                 series that could not be segmented
                                                                    (a queue/ job with error.json is failing)

A finished job keeps its instances for the node's late-instance window so that a late instance of its
series can be segmented together with them (:mod:`~litseg.runtime.node.late`); how long, and how many
``done/`` entries stay, is :mod:`~litseg.runtime.node.retention`'s job (``Spool.retention``).

An instance refused because the spool was full (0xA700) is recorded by its SOP Instance UID in the series
folder's ``.refused-sop-uids`` and struck off when the sender retries it and it is stored. A series closed
with an instance that was refused and never arrived is incomplete, so it is not segmented (that would give
a SEG of part of a series); it moves to ``failed/`` with the reason and its instances are dropped.

``<job>`` is ``<closing time in ns, 20 digits>-<SeriesInstanceUID>``, so names sort in arrival order.
Every file is written to ``tmp/``, flushed with ``fsync`` and renamed into place: a reader never sees
half a file. Recovery (:meth:`Spool.open`): ``incoming/`` series resume their idle clock, ``queue/`` jobs
with a result are finished without being redone, the others are segmented again, ``outbox/`` results
are delivered again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import OutputError
from .retention import FINISHED_STATES as FINISHED_STATES  # re-exported: the spool's layout names
from .retention import INSTANCES as INSTANCES
from .retention import KEEP_DONE, Retention
from .retention import REPORT_FILE as REPORT_FILE

log = logging.getLogger(__name__)

STATES = ("tmp", "incoming", "queue", "outbox", "done", "held", "failed")
SEG_FILE = "segmentation.dcm"
SUMMARY_FILE = "summary.json"
ERROR_FILE = "error.json"
#: Prefix of a job folder being built in queue/ (invisible to workers until renamed).
STAGING = ".staging-"
#: In a series folder: the SOP Instance UIDs refused because the spool was full and not received since.
REFUSED_FILE = ".refused-sop-uids"
#: What an older litseg wrote instead: only a count (then the refused instances cannot be told apart).
LEGACY_REFUSED_FILE = ".refused"
#: A DICOM UID (PS3.5 9.1): digits and dots, at most 64 characters; also what makes it a safe file name.
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class SpoolFullError(Exception):
    """Storing would exceed the spool size limit (the C-STORE answer is 0xA700, out of resources)."""


def is_uid(value: str) -> bool:
    return len(value) <= 64 and bool(_UID.match(value))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tree_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return total


@dataclass(frozen=True)
class SeriesKey:
    study_uid: str
    series_uid: str


class Spool:
    """The spool folder and its state changes; thread-safe (one lock around every state change).

    Parameters
    ----------
    root
        Spool folder (created if absent).
    max_bytes
        Size limit of everything in the spool; 0 = none.
    retain_instances_s
        Seconds a finished job keeps its instances (for late instances of its series); 0 drops them at once.
    keep_done, keep_done_s
        ``done/`` keeps at most ``keep_done`` jobs, none older than ``keep_done_s`` seconds (0: no age limit).
    """

    def __init__(
        self,
        root: Path,
        max_bytes: int = 0,
        retain_instances_s: float = 0.0,
        keep_done: int = KEEP_DONE,
        keep_done_s: float = 0.0,
    ) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.retention = Retention(self, retain_instances_s, keep_done, keep_done_s)
        self._lock = threading.RLock()
        self._last_seen: dict[SeriesKey, float] = {}
        self._used = 0

    # ----- start-up and recovery --------------------------------------------------------------------
    def open(self) -> dict[str, int]:
        """Create the layout and recover from whatever a crash left; returns counts per state."""
        try:
            for state in STATES:
                (self.root / state).mkdir(parents=True, exist_ok=True)
            probe = self.root / "tmp" / ".write-probe"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise OutputError(f"the spool {self.root} is not writable: {exc}; pass a writable --spool") from exc
        with self._lock:
            for leftover in (self.root / "tmp").iterdir():  # a write cut short by a crash
                _remove(leftover)
            for staging in (self.root / "queue").glob(f"{STAGING}*"):
                if (staging / INSTANCES).is_dir():  # crash after moving the series in: finish the move
                    os.replace(staging, staging.with_name(staging.name[len(STAGING) :]))
                else:  # crash before: the series is still in incoming/
                    _remove(staging)
            for job in self._jobs("queue"):
                if (job / ERROR_FILE).is_file():  # crash while failing a job: the decision stands
                    os.replace(job, self.root / "failed" / job.name)
            for job in self._jobs("done"):
                _remove(job / SEG_FILE)  # crash between delivering a SEG and dropping it
            now = time.monotonic()
            for study in (self.root / "incoming").iterdir():
                for series in study.iterdir() if study.is_dir() else ():
                    self._last_seen[SeriesKey(study.name, series.name)] = now  # idle clock restarts now
            self._used = _tree_bytes(self.root)
        self.retention.sweep(force=True)  # instances past the late window, done/ beyond its bounds
        with self._lock:
            counts = {state: len(self._jobs(state)) for state in ("queue", "outbox", "done", "failed")}
            counts["incoming"] = len(self._last_seen)
        return counts

    @property
    def used_bytes(self) -> int:
        return self._used

    # ----- receiving --------------------------------------------------------------------------------
    def store(self, key: SeriesKey, sop_uid: str, data: bytes) -> Path:
        """Write one received instance durably; returns its path.

        Raises
        ------
        ValueError
            A UID is not a valid DICOM UID.
        SpoolFullError
            The spool limit would be exceeded.
        OSError
            The disk refused the write.
        """
        for name, uid in (("StudyInstanceUID", key.study_uid), ("SeriesInstanceUID", key.series_uid), ("SOP", sop_uid)):
            if not is_uid(uid):
                raise ValueError(f"{name} {uid!r} is not a valid DICOM UID")
        folder = self.root / "incoming" / key.study_uid / key.series_uid
        path = folder / f"{sop_uid}.dcm"
        with self._lock:
            resent = path.stat().st_size if path.exists() else 0  # a resent instance replaces itself
            if self.max_bytes and self._used + len(data) - resent > self.max_bytes:
                self.retention.make_room(self._used + len(data) - resent - self.max_bytes)
            if self.max_bytes and self._used + len(data) - resent > self.max_bytes:
                self._mark_refused(key, sop_uid)
                raise SpoolFullError(
                    f"spool holds {self._used / 2**20:.1f} MiB of {self.max_bytes / 2**20:.1f} MiB; "
                    f"an instance of {len(data) / 2**20:.2f} MiB does not fit"
                )
            self._used += len(data)  # reserved now, so concurrent stores cannot overshoot together
        try:
            tmp = self._write_tmp(data)
        except BaseException:
            with self._lock:
                self._used -= len(data)
            raise
        with self._lock:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                replaced = path.stat().st_size if path.exists() else 0  # the sender resent an instance
                os.replace(tmp, path)
            except BaseException:
                self._used -= len(data)
                tmp.unlink(missing_ok=True)
                raise
            self._used -= replaced
            self._last_seen[key] = time.monotonic()
            self._strike_refused(folder, sop_uid)
        # The rename is what makes the instance durable across a power cut; the collector may already
        # have moved the folder on (then its own fsync of queue/ covers it).
        with contextlib.suppress(FileNotFoundError):
            _fsync_dir(folder)
        return path

    def _mark_refused(self, key: SeriesKey, sop_uid: str) -> None:
        """Record a refused instance by its SOP Instance UID in the series folder (caller holds the lock). A
        sender retries after 0xA700 (and its retries keep the series open); an instance that never arrives
        makes the series incomplete, which is recorded in ``failed/`` rather than forgotten."""
        folder = self.root / "incoming" / key.study_uid / key.series_uid
        try:
            folder.mkdir(parents=True, exist_ok=True)
            uids = _read_uids(folder / REFUSED_FILE)
            if sop_uid not in uids:
                self._write_small(folder / REFUSED_FILE, "".join(f"{u}\n" for u in sorted({*uids, sop_uid})))
        except OSError as exc:
            log.error("cannot record a refused instance of series %s: %s", key.series_uid, exc)
            return
        self._last_seen[key] = time.monotonic()

    def _strike_refused(self, folder: Path, sop_uid: str) -> None:
        """A refused instance arrived after all: strike it off (caller holds the lock)."""
        marker = folder / REFUSED_FILE
        if not marker.exists():
            return
        uids = _read_uids(marker) - {sop_uid}
        try:
            if uids:
                self._write_small(marker, "".join(f"{u}\n" for u in sorted(uids)))
            else:
                marker.unlink()
        except OSError as exc:
            log.error("cannot record the arrival of refused instance %s: %s", sop_uid, exc)

    def _write_small(self, path: Path, text: str) -> None:
        """Replace a small bookkeeping file atomically (not counted against the limit: it is bytes)."""
        tmp = self._write_tmp(text.encode("ascii"))
        os.replace(tmp, path)

    def refused(self, job: str) -> list[str]:
        """SOP Instance UIDs of a queued job's series that were refused for lack of space and never arrived
        (an older node's bare count gives ``"?"`` entries)."""
        instances = self.root / "queue" / job / INSTANCES
        missing = sorted(u for u in _read_uids(instances / REFUSED_FILE) if not (instances / f"{u}.dcm").exists())
        try:
            legacy = int((instances / LEGACY_REFUSED_FILE).read_text() or 0)
        except (OSError, ValueError):
            legacy = 0
        return missing + ["?"] * legacy

    def _write_tmp(self, data: bytes) -> Path:
        fd, name = tempfile.mkstemp(dir=self.root / "tmp", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        return Path(name)

    def write_file(self, path: Path, data: bytes) -> None:
        """Atomically (re)place ``path`` inside the spool with ``data``."""
        tmp = self._write_tmp(data)
        with self._lock:
            old = path.stat().st_size if path.exists() else 0
            os.replace(tmp, path)
            self._used += len(data) - old

    def write_json(self, path: Path, content: Mapping[str, Any]) -> None:
        self.write_file(path, (json.dumps(content, indent=2) + "\n").encode("utf-8"))

    # ----- complete series -> queue -------------------------------------------------------------------
    def idle_series(self, idle_seconds: float) -> list[SeriesKey]:
        """Series in ``incoming/`` without a new instance for ``idle_seconds``, oldest first."""
        now = time.monotonic()
        with self._lock:
            idle = [(t, k) for k, t in self._last_seen.items() if now - t >= idle_seconds]
        return [k for _, k in sorted(idle, key=lambda item: item[0])]

    def close_series(self, key: SeriesKey) -> str | None:
        """Move a complete series from ``incoming/`` to ``queue/``; returns the job name (``None`` when its
        folder is gone, e.g. removed by an operator)."""
        with self._lock:
            job = f"{time.time_ns():020d}-{key.series_uid}"
            src = self.root / "incoming" / key.study_uid / key.series_uid
            dst = self.root / "queue" / job
            if not src.is_dir():
                del self._last_seen[key]
                return None
            # Built under a hidden name, then renamed: a worker listing queue/ never sees a job without
            # its instances (recovery finishes or removes a staging folder a crash left).
            staging = self.root / "queue" / f"{STAGING}{job}"
            staging.mkdir()
            os.replace(src, staging / INSTANCES)
            os.replace(staging, dst)
            del self._last_seen[key]
            with contextlib.suppress(OSError):
                src.parent.rmdir()  # the study folder, when this was its last series
        _fsync_dir(self.root / "queue")
        return job

    # ----- jobs ---------------------------------------------------------------------------------------
    def _jobs(self, state: str) -> list[Path]:
        return [self.root / state / job for job in list_jobs(self.root, state)]

    def jobs(self, state: str) -> list[str]:
        """Job names in ``state`` (``queue``, ``outbox``, ``done``, ``failed``), oldest first."""
        return [p.name for p in self._jobs(state)]

    def path(self, state: str, job: str) -> Path:
        return self.root / state / job

    def instances(self, job: str) -> list[Path]:
        return sorted((self.root / "queue" / job / INSTANCES).glob("*.dcm"))

    def has_result(self, job: str) -> bool:
        return (self.root / "queue" / job / REPORT_FILE).is_file()

    def write_result(self, job: str, seg: bytes, report: Mapping[str, Any]) -> None:
        """Keep a job's SEG and report in ``queue/<job>``; the report, written last, marks it complete."""
        folder = self.root / "queue" / job
        self.write_file(folder / SEG_FILE, seg)
        self.write_json(folder / REPORT_FILE, report)

    def finish(self, job: str, state: str, summary: Mapping[str, Any] | None = None) -> None:
        """Move a job with its result to ``outbox/`` (to deliver), ``done/`` or ``held/``; its instances go
        with it for the late-instance window (or are dropped at once without one)."""
        if state not in FINISHED_STATES:
            raise ValueError(f"a finished job goes to one of {FINISHED_STATES}; got {state!r}")
        src = self.root / "queue" / job
        if state != "outbox":
            self.write_json(src / SUMMARY_FILE, summary or {})
        dst = self.root / state / job
        with self._lock:
            if state == "done":
                self.retention.prune_done(self.retention.keep_done - 1)  # room first: never above keep_done
            os.replace(src, dst)
        if self.retention.retain_instances_s <= 0:
            self._drop(dst / INSTANCES)
        if state == "done":
            self._drop(dst / SEG_FILE)

    def fail(self, job: str, error: Mapping[str, Any], keep_instances: bool = True) -> None:
        """Move a job that could not be segmented to ``failed/`` with its error; its instances are kept
        (for inspection, or to move the job back to ``queue/``) unless ``keep_instances`` is false.

        The job reaches ``failed/`` in its final state: the error is written and unwanted instances are
        dropped while it is still in ``queue/`` (a crash in between is finished by :meth:`open`, which moves
        a queued job holding an error to ``failed/``)."""
        src = self.root / "queue" / job
        self.write_json(src / ERROR_FILE, error)
        if not keep_instances:
            self._drop(src / INSTANCES)
        with self._lock:
            os.replace(src, self.root / "failed" / job)
        _fsync_dir(self.root / "failed")

    def delivered(self, job: str, summary: Mapping[str, Any]) -> bool:
        """The peer acknowledged the SEG of ``job`` (or it was superseded before delivery): record the summary,
        move it to ``done/``; ``False`` when the job had already left ``outbox/``."""
        src = self.root / "outbox" / job
        with self._lock:
            if not src.is_dir():
                return False
            self.write_json(src / SUMMARY_FILE, summary)
            self.retention.prune_done(self.retention.keep_done - 1)  # room first: never above keep_done
            os.replace(src, self.root / "done" / job)
        self._drop(self.root / "done" / job / SEG_FILE)
        return True

    def drop_job(self, state: str, job: str) -> int:
        """Remove a job and everything in it; returns the bytes freed."""
        return self._drop(self.root / state / job)

    def drop_instances(self, state: str, job: str) -> int:
        """Remove a job's instances; returns the bytes freed."""
        return self._drop(self.root / state / job / INSTANCES)

    def account(self, size: int) -> None:
        """Count ``size`` bytes a caller put into the spool itself (a linked instance)."""
        with self._lock:
            self._used += size

    def _drop(self, path: Path) -> int:
        size = _tree_bytes(path) if path.is_dir() else (path.stat().st_size if path.exists() else 0)
        _remove(path)
        with self._lock:
            self._used -= size
        return size


def _read_uids(path: Path) -> set[str]:
    try:
        return {line.strip() for line in path.read_text(encoding="ascii").splitlines() if is_uid(line.strip())}
    except (OSError, ValueError):
        return set()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def list_jobs(root: Path, state: str) -> list[str]:
    """Job folders of a state, oldest first (hidden staging folders are not jobs yet)."""
    folder = Path(root) / state
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from the spool, or ``{}`` when it is missing or unreadable."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def iter_incoming(root: Path) -> Iterator[tuple[SeriesKey, int]]:
    """Series being received (study, series) and their instance counts, read from the disk alone."""
    incoming = Path(root) / "incoming"
    for study in sorted(incoming.iterdir()) if incoming.is_dir() else ():
        for series in sorted(study.iterdir()) if study.is_dir() else ():
            yield SeriesKey(study.name, series.name), sum(1 for _ in series.glob("*.dcm"))
