"""Run a command as a child process and measure it: wall seconds and peak memory (Linux).

Two memory figures, because they answer different questions:

- ``peak_rss_bytes``: the kernel's high-water mark of resident memory (``ru_maxrss`` from ``wait4`` on
  this very child; the largest of the child and the descendants it waited for, not their sum);
- ``tree_peak_rss_bytes``: the largest sum of the resident memory of the child and all its live
  descendants, sampled every ``interval_s`` (catches worker processes running side by side; may miss a
  spike shorter than the interval; shared pages count once per process).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ChildRun:
    """What one measured child process did."""

    command: tuple[str, ...]
    returncode: int
    wall_s: float
    peak_rss_bytes: int
    tree_peak_rss_bytes: int
    stdout: str
    stderr: str


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # the process ended meanwhile
        # the command name (field 2) may hold spaces and parentheses: split after its last ')'
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss_bytes(root: int) -> int:
    """Resident bytes of ``root`` and all its live descendants, now."""
    children = _children_map()
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += _rss_bytes(pid)
        stack.extend(children.get(pid, ()))
    return total


class _TreeSampler(threading.Thread):
    def __init__(self, root: int, interval_s: float) -> None:
        super().__init__(daemon=True)
        self.root, self.interval_s = root, interval_s
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, tree_rss_bytes(self.root))
            self.done.wait(self.interval_s)


def run_measured(
    command: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float = 1800.0,
    interval_s: float = 0.1,
) -> ChildRun:
    """Run ``command`` to completion and measure it; stdout and stderr are captured (through files, so a
    chatty child never blocks on a full pipe). A child still running after ``timeout_s`` is killed."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(command), stdout=out, stderr=err, env=dict(env) if env else None, cwd=cwd)
        sampler = _TreeSampler(proc.pid, interval_s)
        sampler.start()
        killer = threading.Timer(timeout_s, proc.kill)
        killer.start()
        try:
            # wait4 rather than Popen.wait: it returns this child's own rusage (peak RSS), which
            # getrusage(RUSAGE_CHILDREN) only gives as a maximum over every child ever waited for.
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
            sampler.done.set()
            sampler.join()
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait again
        out.seek(0)
        err.seek(0)
        return ChildRun(
            command=tuple(command),
            returncode=proc.returncode,
            wall_s=wall,
            peak_rss_bytes=usage.ru_maxrss * 1024,  # Linux reports KiB
            tree_peak_rss_bytes=max(sampler.peak, usage.ru_maxrss * 1024),
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )
