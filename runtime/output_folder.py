"""Where results go, and how they get there: never near the input, all at once, durably.

- :func:`check_output_location` runs before anything is read: an output folder that equals, contains or
  lies inside an input folder is refused (writing there could replace or mix with the input), and the
  folder must be creatable and, unless replacing is asked for, absent or empty.
- :func:`commit_folder` writes every file into a hidden temporary folder beside the destination, fsyncs
  them, and moves the folder into place with one rename. Replacing old results is one atomic exchange
  of the two folders (Linux ``renameat2(RENAME_EXCHANGE)``), so there is no moment at which neither the
  old nor the new results exist; the old ones are deleted afterwards. The folder gets the permissions the
  process umask gives a new folder.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import OutputError, UsageError

log = logging.getLogger(__name__)

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _resolved(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(os.path.realpath(path)))


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def input_folders(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The folders an input occupies: a folder itself, the folder of a file (its series is read from there)."""
    folders = []
    for item in inputs:
        path = _resolved(item)
        folders.append(path.parent if path.is_file() else path)
    return folders


def check_output_location(
    out_dir: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]], overwrite: bool = False
) -> None:
    """Refuse an output folder that could touch the input, or that cannot be written; before any work.

    Raises
    ------
    UsageError
        ``out_dir`` equals, contains or lies inside an input folder (with or without ``overwrite``).
    OutputError
        ``out_dir`` exists and is not a folder, holds files and ``overwrite`` is not set, or cannot be created.
    """
    out = _resolved(out_dir)
    for folder in input_folders(inputs):
        if _is_within(out, folder) or _is_within(folder, out):
            relation = "is" if out == folder else ("lies inside" if _is_within(out, folder) else "contains")
            raise UsageError(
                f"the output folder {out_dir} {relation} the input folder {folder}; results must never be "
                "written over, into or around the input: choose an --out outside it"
            )
    if out.exists():
        if not out.is_dir():
            raise OutputError(f"output path {out_dir} exists and is not a folder; choose another --out")
        if any(out.iterdir()) and not overwrite:
            raise OutputError(f"output folder {out_dir} already holds files; choose another --out or pass --overwrite")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot create the output folder {out_dir}: {parent} is not a writable folder")


def _umask() -> int:
    try:  # reading the umask without changing it (os.umask would race with other threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _fsync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a folder; the rename is still atomic
        pass
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def commit_folder(out_dir: str | os.PathLike[str], write: Callable[[Path], object], overwrite: bool = False) -> None:
    """Run ``write(tmp)`` into a temporary folder, then move it to ``out_dir`` in one rename.

    An existing non-empty ``out_dir`` is an error unless ``overwrite``; then it is exchanged with the new
    results in one atomic step and deleted afterwards. A failure (a full disk, a permission) leaves no
    trace: the temporary folder is removed and old results stay as they were.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"output path {out_dir} exists and is not a folder; choose another --out")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise OutputError(f"output folder {out_dir} already holds files; choose another --out or pass --overwrite")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    except OSError as exc:
        raise OutputError(f"cannot create the output folder next to {out_dir}: {exc}") from exc
    try:
        write(tmp)
        os.chmod(tmp, 0o777 & ~_umask())
        _fsync_tree(tmp)
        if out_dir.exists() and _exchange(tmp, out_dir):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old results
        elif out_dir.exists():  # no atomic exchange here: move the old results aside for a moment
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
        _fsync_dir(out_dir.parent)
    except OSError as exc:
        reason = "the disk is full" if exc.errno == errno.ENOSPC else str(exc)
        raise OutputError(f"cannot write results to {out_dir}: {reason}; nothing was written there") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
