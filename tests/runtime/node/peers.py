"""Real processes for the node tests: litseg-serve as a subprocess and dcmtk's storescp/storescu/echoscu.

All traffic stays on 127.0.0.1. Every wait is bounded in time; a helper that times out raises with the
node's log, so a failing test says what the node did.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pydicom
import pytest
from pydicom.errors import InvalidDicomError

HOST = "127.0.0.1"
NODE_AE = "LITSEG"
DEST_AE = "DEST"
REPO = Path(__file__).resolve().parents[3]


def dcmtk(tool: str) -> str:
    """dcmtk's ``tool`` from PATH, never pynetdicom's console scripts of the same names (``storescp``,
    ``storescu``, ``echoscu``) that shadow it in an activated virtual environment (or from a pip install
    outside one): the venv's scripts folder is skipped, and what is found must be a compiled program."""
    scripts = Path(sysconfig.get_path("scripts")).resolve()
    search = [d for d in os.environ.get("PATH", os.defpath).split(os.pathsep) if d and Path(d).resolve() != scripts]
    path = shutil.which(tool, path=os.pathsep.join(search))
    if path is None:
        pytest.fail(f"{tool} (Debian package dcmtk) is not installed; .ci/run installs it")
    with open(path, "rb") as program:
        if program.read(4) != b"\x7fELF":  # a Python console script starts with "#!"
            pytest.fail(f"{path} is not dcmtk's {tool} (a script; pynetdicom's?); put /usr/bin first on PATH")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], object], timeout: float, what: str, on_fail: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{on_fail()}")


class NodeProcess:
    """``python -m litseg.runtime.node.cli`` on a port of its own choosing (``--port 0``)."""

    def __init__(self, spool: Path, args: Sequence[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.spool = spool
        self.args = list(args)
        self.log_path = log
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout: float = 60) -> NodeProcess:
        cmd = [sys.executable, "-m", "litseg.runtime.node.cli", "--spool", str(self.spool), "--port", "0", *self.args]
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=self.env)
        found: list[int] = []

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"litseg-serve exited with {self.proc.returncode}\n{self.log()}")
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.log()[self._offset :])
            if m:
                found.append(int(m.group(1)))
            return bool(found)

        wait_for(ready, timeout, "litseg-serve to listen", self.log)
        self.port = found[0]
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def stop_quietly(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


class StoreSCP:
    """dcmtk ``storescp`` receiving into ``folder`` (the destination the node forwards to)."""

    def __init__(self, folder: Path, port: int | None = None, log: Path | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.log_path = log or folder.with_suffix(".storescp.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> StoreSCP:
        self.folder.mkdir(parents=True, exist_ok=True)
        cmd = [dcmtk("storescp"), "-aet", DEST_AE, "-od", str(self.folder), "+xa", str(self.port)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: echo(self.port, called=DEST_AE).returncode == 0, 20, "storescp to answer C-ECHO")
        return self

    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file() and not p.name.startswith("."))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    @property
    def destination(self) -> str:
        return f"{DEST_AE}@{HOST}:{self.port}"


def echo(port: int, calling: str = "ECHOSCU", called: str = NODE_AE) -> subprocess.CompletedProcess[str]:
    cmd = [dcmtk("echoscu"), "-to", "10", "-aet", calling, "-aec", called, HOST, str(port)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def storescu(
    port: int, paths: Sequence[Path], calling: str = "STORESCU", extra: Sequence[str] = ()
) -> subprocess.Popen[str]:
    """Start ``storescu -v`` sending files/folders (recursively) to the node; caller waits."""
    cmd = [dcmtk("storescu"), "-v", "-to", "30", "-aet", calling, "-aec", NODE_AE, "+sd", "+r", *extra, HOST, str(port)]
    return subprocess.Popen([*cmd, *map(str, paths)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def send(port: int, paths: Sequence[Path], calling: str = "STORESCU", extra: Sequence[str] = ()) -> tuple[int, str]:
    proc = storescu(port, paths, calling, extra)
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, out


def seg_references(path: Path) -> tuple[str, set[str]]:
    """(referenced SeriesInstanceUID, referenced SOP Instance UIDs) of a SEG file."""
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4", f"{path} is not a SEG: {ds.SOPClassUID}"
    (series,) = ds.ReferencedSeriesSequence
    return str(series.SeriesInstanceUID), {str(i.ReferencedSOPInstanceUID) for i in series.ReferencedInstanceSequence}


def segs_by_series(folder: Path) -> dict[str, list[tuple[Path, set[str]]]]:
    out: dict[str, list[tuple[Path, set[str]]]] = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else ():
        if path.is_file() and not path.name.startswith("."):
            try:
                series, refs = seg_references(path)
            except (OSError, ValueError, AttributeError, EOFError, InvalidDicomError):
                continue  # storescp may still be writing it (not even its preamble yet)
            out.setdefault(series, []).append((path, refs))
    return out
