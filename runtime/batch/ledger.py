"""The ledger: one JSON line per finished series in ``--out/ledger.jsonl``, written by the driver only.

Each line is appended with one ``write`` on a file opened ``O_APPEND`` and fsynced before the next series is
counted, so a line is either whole or (after a power cut mid-write) a torn last line, which the reader skips
with a warning. Later lines win: a series retried after a failure has its failure and then its success in
the ledger, and its latest line says where it stands. A lock file keeps a second driver off the same
``--out`` (``flock``, which NFS v4 and local file systems honour).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import OutputError

log = logging.getLogger(__name__)

LEDGER_NAME = "ledger.jsonl"
LOCK_NAME = ".litseg-batch.lock"
#: Ledger statuses: ``done`` (results written), ``refused`` (bad input: the input must change), ``failed``
#: (model, device, output or internal problem, or the worker died every time it tried).
STATUSES = ("done", "refused", "failed")


@dataclass(frozen=True)
class ModelIdentity:
    """The model a series was segmented with; a new version or other bytes re-run the series."""

    name: str
    version: str
    sha256: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Decision:
    """Whether to run an entry now, the kind of reason (``new``, ``other_model``, ``retry``, ``output_gone``,
    ``done``, ``failed``, ``refused``, ``limit``) and the reason in words (for ``--dry-run`` and the summary)."""

    run: bool
    kind: str
    reason: str


def decide(record: Mapping[str, Any] | None, model: ModelIdentity, retry_failed: bool, retry_refused: bool) -> Decision:
    """What to do with an entry given its latest ledger line."""
    if record is None:
        return Decision(True, "new", "new")
    earlier = record.get("model", {})
    if earlier.get("sha256") != model.sha256:
        return Decision(
            True, "other_model", f"seen with model {earlier.get('name')} {earlier.get('version')}: run with this one"
        )
    status = record.get("status")
    error = record.get("error") or {}
    if status == "done":
        return Decision(False, "done", "done with this model")
    if status == "failed":
        if retry_failed:
            return Decision(True, "retry", "retry of a failure")
        return Decision(False, "failed", f"failed earlier ({error.get('class')}); --retry-failed runs it again")
    if retry_refused:
        return Decision(True, "retry", "retry of a refused input")
    return Decision(False, "refused", f"refused earlier ({error.get('class')}): fix the input, then --retry-refused")


class Ledger:
    """``--out/ledger.jsonl``: read at start, appended after every finished series."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LEDGER_NAME

    def latest(self) -> dict[str, dict[str, Any]]:
        """The latest line of every key (later lines win); a torn or foreign line is skipped and logged."""
        records: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return records
        with open(self.path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    log.warning("%s line %d is not whole JSON (a write cut short?); ignored", self.path, n)
                    continue
                if isinstance(record, dict) and isinstance(record.get("key"), str):
                    records[record["key"]] = record
        return records

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one line with one write, then fsync: whole or, after a crash mid-write, a torn last line."""
        data = (json.dumps(record, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size and not self._ends_with_newline():
                    data = b"\n" + data  # after a torn line: start on a line of our own
                written = os.write(fd, data)
                if written != len(data):  # a full disk mid-line: say so; the reader skips the torn line
                    raise OSError(f"only {written} of {len(data)} bytes written")
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise OutputError(f"cannot append to the ledger {self.path}: {exc}; the batch stops here") from exc

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"


@contextlib.contextmanager
def exclusive(out_dir: Path) -> Iterator[None]:
    """Hold ``--out``'s lock for the run: a second litseg-batch on the same folder is refused at once."""
    path = out_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(
                f"another litseg-batch is writing to {out_dir} (it holds {path}); wait for it, or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock
