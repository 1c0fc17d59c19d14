"""Run a command as a child process and measure it: wall seconds and peak memory (Linux).

Two memory figures, because they answer different questions:

- ``peak_rss_bytes``: the kernel's high-water mark of resident memory (``ru_maxrss`` from ``wait4``; the
  largest of the command and the descendants it waited for, not their sum). A child's ``ru_maxrss`` starts
  from its parent's high-water mark (Linux records the forking process's peak at ``exec``), so a large
  parent such as a pytest session that just built a 432-slice phantom would be counted: the command is
  therefore started by a small launcher process (a bare Python, ~10 MB), which waits for it and reports its
  ``ru_maxrss``; figures below ~10 MB are not meaningful;
- ``tree_peak_rss_bytes``: the largest sum of the resident memory of the child and all its live
  descendants, sampled every ``interval_s`` (catches worker processes running side by side; may miss a
  spike shorter than the interval; shared pages count once per process).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")

#: Started fresh (small), it spawns the command, waits for it and writes its wall time and ru_maxrss.
_LAUNCHER = """
import json, os, sys, time
start = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"wall_s": time.perf_counter() - start, "maxrss_kib": usage.ru_maxrss}, f)
sys.exit(os.waitstatus_to_exitcode(status) % 256)
"""


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
    chatty child never blocks on a full pipe). A command still running after ``timeout_s`` is killed with
    everything it started."""
    with tempfile.TemporaryDirectory() as tmp:
        report, out_path, err_path = Path(tmp) / "rusage.json", Path(tmp) / "stdout", Path(tmp) / "stderr"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER, str(report), *command],
                stdout=out,
                stderr=err,
                env=dict(env) if env else None,
                cwd=cwd,
                start_new_session=True,  # its own process group: a timeout kills the command's workers too
            )
            sampler = _TreeSampler(proc.pid, interval_s)
            sampler.start()
            try:
                returncode = proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                returncode = proc.wait()
            finally:
                sampler.done.set()
                sampler.join()
            wall = time.perf_counter() - start
        measured = json.loads(report.read_text()) if report.is_file() else {"wall_s": wall, "maxrss_kib": 0}
        peak = int(measured["maxrss_kib"]) * 1024  # Linux reports KiB
        return ChildRun(
            command=tuple(command),
            returncode=returncode,
            wall_s=float(measured["wall_s"]),
            peak_rss_bytes=peak,
            tree_peak_rss_bytes=max(sampler.peak, peak),
            stdout=out_path.read_text(errors="replace"),
            stderr=err_path.read_text(errors="replace"),
        )
