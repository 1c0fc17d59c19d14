"""Progress while a batch runs and its summary at the end (a table on the terminal, ``summary.json`` on disk).

Progress on a terminal is one line redrawn in place (series done / total, series per minute, ETA, failures
so far); elsewhere (a log file, CI) it is a plain line at every 10 %. The summary counts every entry once:
done, refused (by error class), failed (by error class), skipped (by reason), not run (interrupted).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TextIO

from .. import errors
from .inputs import Entry, Plan
from .ledger import Decision, ModelIdentity
from .worker import now_iso


@dataclass
class BatchResult:
    """What a run did: every entry's decision, the records of those that ran, the summary."""

    plan: Plan
    decisions: list[tuple[Entry, Decision]]
    records: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0
    model: ModelIdentity | None = None
    #: Seconds from the start until the first series was handed to a worker (planning, Ray and the workers'
    #: models starting).
    startup_s: float | None = None

    @property
    def failed(self) -> int:
        return sum(1 for r in self.records if r["status"] == "failed")


#: The batch's own exit code when at least one series failed (model, device, output, internal, worker died).
EXIT_SERIES_FAILED = 8
#: Ctrl-C (or SIGTERM): the usual 128 + SIGINT.
EXIT_INTERRUPTED = 130


class Progress:
    """Counts finished series and shows them on ``stream`` (in place on a terminal, every 10 % otherwise)."""

    def __init__(self, total: int, stream: TextIO, tty: bool, enabled: bool = True) -> None:
        self.total = total
        self.stream = stream
        self.tty = tty
        self.enabled = enabled and total > 0
        self.started: float | None = None
        self.counts: Counter[str] = Counter()
        self.next_tenth = 1

    def __call__(self, record: dict[str, Any]) -> None:
        self.counts[record["status"]] += 1
        if not self.enabled:
            return
        done = sum(self.counts.values())
        if self.tty:
            end = "\n" if done >= self.total else ""
            print(f"\r{self.line(done)}\033[K", end=end, file=self.stream, flush=True)
        elif done * 10 >= self.next_tenth * self.total:
            self.next_tenth = done * 10 // self.total + 1
            print(f"litseg-batch: {self.line(done)}", file=self.stream, flush=True)

    def start(self) -> None:
        """The first series is handed out: rates and ETA count from here, not from Ray's start-up."""
        if self.started is None:
            self.started = time.perf_counter()

    def line(self, done: int) -> str:
        elapsed = time.perf_counter() - (self.started or time.perf_counter())
        rate = done / elapsed * 60 if elapsed > 0 else 0.0
        left = (self.total - done) / rate * 60 if rate > 0 else 0.0
        width = 24
        bar = "#" * int(width * done / self.total) + "." * (width - int(width * done / self.total))
        return (
            f"[{bar}] {done}/{self.total} series, {rate:.1f}/min, ETA {timedelta(seconds=round(left))}, "
            f"refused {self.counts['refused']}, failed {self.counts['failed']}"
        )


def exit_code(result: BatchResult) -> int:
    """130 when interrupted; 8 when a series failed now or stays failed from an earlier run (skipped without
    ``--retry-failed``); else 0: every series is done or refused for its input."""
    if result.interrupted:
        return EXIT_INTERRUPTED
    still_failed = any(d.kind == "failed" for _, d in result.decisions)
    return EXIT_SERIES_FAILED if result.failed or still_failed else errors.EXIT_OK


def summarize(result: BatchResult) -> dict[str, Any]:
    """The summary of a run, as ``summary.json`` holds it."""
    by_status: dict[str, Counter[str]] = {"refused": Counter(), "failed": Counter()}
    done = 0
    for record in result.records:
        if record["status"] == "done":
            done += 1
        else:
            by_status[record["status"]][(record.get("error") or {}).get("class", "?")] += 1
    skipped = Counter(d.kind for _, d in result.decisions if not d.run)
    ran = len(result.records)
    planned = sum(1 for _, d in result.decisions if d.run)
    return {
        "finished": now_iso(),
        "seconds": round(result.seconds, 3),
        "startup_s": None if result.startup_s is None else round(result.startup_s, 3),
        "interrupted": result.interrupted,
        "model": result.model.as_dict() if result.model else None,
        "entries": len(result.decisions),
        "ran": ran,
        "done": done,
        "refused": dict(by_status["refused"]),
        "failed": dict(by_status["failed"]),
        "skipped": dict(skipped),
        "not_run": planned - ran,
        "left_out_while_searching": dict(result.plan.left_out),
        "series_per_minute": round(ran / result.seconds * 60, 2) if result.seconds > 0 and ran else 0.0,
        "exit_code": exit_code(result),
    }


def table(summary: dict[str, Any]) -> str:
    """The summary as a small table for the terminal."""
    rows: list[tuple[str, object]] = [("entries", summary["entries"]), ("done", summary["done"])]
    rows += [(f"refused: {cls}", n) for cls, n in sorted(summary["refused"].items())]
    rows += [(f"failed: {cls}", n) for cls, n in sorted(summary["failed"].items())]
    rows += [(f"skipped: {kind}", n) for kind, n in sorted(summary["skipped"].items())]
    if summary["not_run"]:
        rows.append(("not run (interrupted)", summary["not_run"]))
    rows += [
        ("seconds", summary["seconds"]),
        ("series per minute", summary["series_per_minute"]),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name:<{width}}  {value:>8}" for name, value in rows)
