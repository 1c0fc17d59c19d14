"""Where results go, and how they get there: never near the input, all at once, durably.

- :func:`check_output_location` runs before anything is read: an output folder that equals, contains or
  lies inside an input folder is refused (writing there could replace or mix with the input), and the
  folder must be creatable and absent or empty, or, when replacing is asked for, hold litseg's own results.
- Only litseg's own results are ever replaced: every results folder carries a marker (:data:`MARKER`, a
  small JSON file naming the files litseg wrote there); a folder holding anything else (a file the user
  put there, another tool's output) is refused with the name of that file, even with ``overwrite``.
- :func:`commit_folder` writes every file into a hidden temporary folder beside the destination, fsyncs
  them, and moves the folder into place with one rename. Replacing old results is one atomic exchange
  of the two folders (Linux ``renameat2(RENAME_EXCHANGE)``), so there is no moment at which neither the
  old nor the new results exist; the old ones are deleted afterwards. The folder gets the permissions the
  process umask gives a new folder.
"""

from __future__ import annotations

import ctypes
import errno
import json
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

#: The marker of a litseg results folder: JSON ``{"format": MARKER_FORMAT, "files": [...]}``.
MARKER = ".litseg"
MARKER_FORMAT = "litseg-results/1"
#: What litseg-run wrote before results folders carried the marker (its output names, with a report whose
#: ``litseg_version`` says who wrote it): such a folder is still litseg's to replace.
LEGACY_RESULT_NAMES = frozenset({"segmentation.dcm", "labels.nii.gz", "report.json", "mask", "overlay.png"})

#: How an error names the replace switch and the folder argument: in the API's words or the CLI's.
_API_WORDS = {"overwrite": "overwrite=True", "out": "out_dir"}
_CLI_WORDS = {"overwrite": "--overwrite", "out": "--out"}


def _output_error(template: str, **values: object) -> OutputError:
    """An :class:`OutputError` whose message names ``overwrite=True``/``out_dir`` and whose CLI message
    names ``--overwrite``/``--out`` (``{overwrite}`` and ``{out}`` in ``template``)."""
    return OutputError(template.format(**values, **_API_WORDS), template.format(**values, **_CLI_WORDS))


def write_marker(folder: Path) -> None:
    """Mark ``folder`` as litseg's results, naming every entry it holds now (call it last)."""
    files = sorted(p.name for p in folder.iterdir() if p.name != MARKER)
    (folder / MARKER).write_text(json.dumps({"format": MARKER_FORMAT, "files": files}) + "\n", encoding="utf-8")


def _marked_files(folder: Path) -> frozenset[str] | None:
    """The entries the marker says litseg wrote; ``None`` without a valid marker."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("format") != MARKER_FORMAT:
        return None
    files = marker.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    return frozenset([*files, MARKER])


def _legacy_results(folder: Path, names: set[str]) -> bool:
    if not names <= LEGACY_RESULT_NAMES or "report.json" not in names:
        return False
    try:
        report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(report, dict) and "litseg_version" in report


def foreign_entry(folder: Path) -> str | None:
    """The name of an entry of ``folder`` that litseg did not write, or ``None`` when the folder is empty or
    holds litseg's results only (what its marker lists, or a results folder of a litseg without markers)."""
    names = {p.name for p in folder.iterdir()}
    if not names:
        return None
    ours = _marked_files(folder)
    if ours is None and _legacy_results(folder, names):
        return None
    foreign = sorted(names - (ours or frozenset()))
    if not foreign:
        return None
    unknown = [n for n in foreign if n not in LEGACY_RESULT_NAMES]  # name the surprising file first
    return (unknown or foreign)[0]


def check_replaceable(out_dir: str | os.PathLike[str], overwrite: bool) -> None:
    """Refuse an ``out_dir`` that is not a folder, or that holds files unless they are litseg's results and
    ``overwrite`` is set; an absent or empty folder passes.

    Raises
    ------
    OutputError
        With the name of a file litseg did not write when there is one (never replaced, even with
        ``overwrite``); else suggesting ``overwrite`` for litseg's own earlier results.
    """
    out = Path(out_dir)
    if not out.exists():
        return
    if not out.is_dir():
        raise _output_error("output path {path} exists and is not a folder; choose another {out}", path=out_dir)
    foreign = foreign_entry(out)
    if foreign is not None:
        raise _output_error(
            "output folder {path} already holds files that litseg did not write ({name}); choose another {out} or "
            "empty it yourself: litseg replaces only a folder of its own results, never anything else in it",
            path=out_dir,
            name=foreign,
        )
    if not overwrite and any(out.iterdir()):
        raise _output_error(
            "output folder {path} already holds litseg results; pass {overwrite} to replace them or choose "
            "another {out}",
            path=out_dir,
        )


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
    out_dir: str | os.PathLike[str],
    inputs: Iterable[str | os.PathLike[str]],
    overwrite: bool = False,
    root: bool = False,
) -> None:
    """Refuse an output folder that could touch the input, or that cannot be written; before any work.

    ``root`` says that ``out_dir`` is a folder under which results folders are made (``litseg-out/``, the
    node's ``--out``): then what it holds is not checked, only where it lies and that it can be written.

    Raises
    ------
    UsageError
        ``out_dir`` equals, contains or lies inside an input folder (with or without ``overwrite``).
    OutputError
        ``out_dir`` exists and is not a folder, holds files that are not litseg's results, holds litseg's
        results and ``overwrite`` is not set, or cannot be created.
    """
    out = _resolved(out_dir)
    for folder in input_folders(inputs):
        if _is_within(out, folder) or _is_within(folder, out):
            relation = "is" if out == folder else ("lies inside" if _is_within(out, folder) else "contains")
            text = (
                f"the output folder {out_dir} {relation} the input folder {folder}; results must never be "
                "written over, into or around the input: choose {out} outside it"
            )
            raise UsageError(text.format(out="an out_dir"), text.format(out="an --out"))
    if root:
        if out.exists() and not out.is_dir():
            raise _output_error("output path {path} exists and is not a folder; choose another {out}", path=out_dir)
    else:
        check_replaceable(out_dir, overwrite)
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise _output_error(
            "cannot create the output folder {path}: {parent} is not a writable folder", path=out_dir, parent=parent
        )


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


def commit_folder(
    out_dir: str | os.PathLike[str], write: Callable[[Path], object], overwrite: bool = False, marked: bool = False
) -> None:
    """Run ``write(tmp)`` into a temporary folder, then move it to ``out_dir`` in one rename.

    ``marked`` is for a results folder a user chose (:func:`~litseg.runtime.api.write_results`): the new folder
    carries litseg's :data:`MARKER`, and an existing non-empty ``out_dir`` is replaced only when it holds
    litseg's results and ``overwrite`` is set (:func:`check_replaceable`). Without it (a folder a tool owns
    whole, e.g. one case of a prepared data set) ``overwrite`` replaces whatever is there. The replacement is
    one atomic exchange; the old folder is deleted afterwards. A failure (a full disk, a permission) leaves
    no trace: the temporary folder is removed and old results stay as they were.
    """
    out_dir = Path(out_dir)

    def check() -> None:
        if marked:
            check_replaceable(out_dir, overwrite)
        elif out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not overwrite)):
            what = "is not a folder" if not out_dir.is_dir() else "already holds files"
            raise _output_error("output path {path} {what}; choose another {out}", path=out_dir, what=what)

    check()
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    except OSError as exc:
        raise _output_error("cannot create the output folder next to {path}: {exc}", path=out_dir, exc=exc) from exc
    try:
        write(tmp)
        if marked:
            write_marker(tmp)
        os.chmod(tmp, 0o777 & ~_umask())
        _fsync_tree(tmp)
        check()  # again: a file may have been put there while we wrote
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
