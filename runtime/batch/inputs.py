"""What a batch runs: the series under a root folder, the rows of a manifest, or single NIfTI volumes.

A root folder is searched the way the DICOM reader sorts a folder: every file's header is classified by
:func:`~litseg.runtime.series_files.read_file` (pixel data never read) and CT slices are grouped by series
(SeriesInstanceUID, or for blanked ones the frame of reference, size and orientation); every ``.nii`` /
``.nii.gz`` file is a volume. A manifest (CSV with a header row, or JSON Lines) names one series folder,
DICOM file or NIfTI volume per row in ``path`` (relative to the manifest), with an optional ``id`` (the
output folder's name) and ``series_uid`` (for a folder holding several series).

Every entry has a ``key`` (its absolute input, plus the series it picks) by which the ledger knows it across
runs, and an ``id``: a unique, file-system-safe name for its output folder under ``--out``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import threading
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ..errors import UsageError
from ..nifti_series import nifti_name
from ..series_files import HEADER_BYTES, list_files, prefetch, read_file

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: Output folder names: no path separators, no leading dot (hidden files are the batch's own), no spaces.
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
#: Names in ``--out`` that belong to the batch itself, never to a series.
RESERVED_IDS = frozenset({"ledger.jsonl", "summary.json"})
#: NIFTI_INTENT_LABEL: the voxels are label indices.
NIFTI_INTENT_LABEL = 1002
#: Files whose headers discovery asks the kernel for ahead of reading them: bounded, so that the read-ahead of
#: a root of millions of files does not push the headers it is about to read out of the page cache.
PREFETCH_WINDOW = 512
#: Discovery logs a line every this many files, so that a large archive shows it is being read.
DISCOVERY_LOG_EVERY = 10_000


@dataclass(frozen=True)
class Entry:
    """One series to segment.

    Attributes
    ----------
    key
        Identity across runs: the absolute input path, ``#`` and the series chosen when one is.
    id
        The output folder's name under ``--out``.
    source
        The input path: a series folder, a DICOM file, or a NIfTI file.
    series_uid
        The series to pick in ``source`` (SeriesInstanceUID, or the reader's key for a blanked one).
    """

    key: str
    id: str
    source: str
    series_uid: str | None = None

    @property
    def is_nifti(self) -> bool:
        return self.source.lower().endswith(NIFTI_SUFFIXES)


@dataclass
class Plan:
    """The entries of a batch, in order, and what was left out while finding them (reason -> count)."""

    entries: list[Entry] = field(default_factory=list)
    left_out: Counter[str] = field(default_factory=Counter)


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def safe_id(name: str) -> str:
    """``name`` made into a folder name :data:`SAFE_ID` accepts (other characters become ``_``)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip("._-")[:200]
    return cleaned or "series"


def _key(path: Path, series_uid: str | None) -> str:
    return os.path.abspath(path) + (f"#{series_uid}" if series_uid else "")


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _prefetch(paths: list[Path]) -> None:
    """Ask the kernel for these files' headers on a thread (network storage answers many requests at once)."""
    if paths:
        threading.Thread(target=prefetch, args=(paths, HEADER_BYTES), name="litseg-discovery", daemon=True).start()


def nifti_left_out(path: Path) -> str | None:
    """Why a NIfTI file found under a root is not a CT volume, from its header alone; None to run it.

    Research layouts keep their masks beside the images (LiTS ``segmentation-N.nii``, TotalSegmentator's
    ``segmentations/*.nii.gz``, a hundred per case): 8-bit voxels without a rescale, or a label intent, are
    masks, not HU. Anything else is left to the reader, which refuses what is not CT naming the reason.
    """
    try:
        header: Any = nib.load(str(path)).header  # the header only: the voxels are never read here
        dtype = header.get_data_dtype()
        slope = header["scl_slope"]
        intent = int(header["intent_code"])
    except Exception:  # unreadable: the worker's reader refuses it with its own message
        return None
    if intent == NIFTI_INTENT_LABEL:
        return "NIfTI label map (intent label)"
    if dtype.kind in "biu" and dtype.itemsize == 1 and (not np.isfinite(slope) or slope in (0.0, 1.0)):
        return "NIfTI mask (8-bit voxels, no rescale)"
    return None


def discover(root: Path, plan: Plan) -> list[Entry]:
    """Every CT series and NIfTI volume under ``root``; unique ids are given later by :func:`assign_ids`."""
    series_folders: dict[str, set[Path]] = {}
    volumes: list[Entry] = []
    files = list_files(root)
    for n, path in enumerate(files, 1):
        if n % PREFETCH_WINDOW == 1:  # the next window's headers asked for while this one is read
            first = n - 1 + (PREFETCH_WINDOW if n > 1 else 0)
            _prefetch(files[first : n - 1 + 2 * PREFETCH_WINDOW])
        if n % DISCOVERY_LOG_EVERY == 0:
            log.info("discovery: %d of %d files classified", n, len(files))
        if _is_nifti(path):
            reason = nifti_left_out(path)
            if reason is None:
                volumes.append(Entry(_key(path, None), nifti_name(path), str(path)))
            else:
                plan.left_out[reason] += 1
            continue
        cand = read_file(path)  # header only: the pixel data are deferred and never read here
        if cand is None:
            plan.left_out["not DICOM"] += 1
        elif cand.skip is not None:
            plan.left_out[cand.skip] += 1
        else:  # a CT slice, or a broken one (its series is refused by the worker, naming the file)
            group = cand.series_uid or f"<no SeriesInstanceUID under {path.parent}>"
            series_folders.setdefault(group, set()).add(path.parent)
    entries = []
    for uid, folders in series_folders.items():
        folder = Path(os.path.commonpath(sorted(folders)))
        name = uid if not uid.startswith("<") else f"series-{_short_hash(uid)}"
        # A blanked series is told apart by the reader itself within its folder: no uid to pick it by.
        pick = None if uid.startswith("<") else uid
        entries.append(Entry(_key(folder, pick), name, str(folder), pick))
    return sorted(entries, key=lambda e: e.key) + volumes


def _manifest_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV (header row) or JSON Lines manifest."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the manifest {path}: {exc}") from exc
    if path.name.lower().endswith(".csv"):
        reader = csv.DictReader(text.splitlines())
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            raise UsageError(
                f"the manifest {path} needs a header row with a 'path' column (optional: id, series_uid); "
                f"its header is {reader.fieldnames}"
            )
        for n, row in enumerate(reader, 2):
            yield n, {k: (v or "").strip() for k, v in row.items() if k is not None}
        return
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"the manifest {path} line {n} is not JSON: {exc}") from exc
        if not isinstance(row, dict):
            raise UsageError(f"the manifest {path} line {n} is not a JSON object with a 'path'")
        yield n, {str(k): str(v).strip() for k, v in row.items() if v is not None}


def read_manifest(path: Path) -> tuple[list[Entry], set[str]]:
    """The manifest's rows as entries, and the keys of those whose id the manifest gives; an ``id`` given is
    checked, a missing one is the input's name."""
    entries = []
    given_keys = set()
    for line, row in _manifest_rows(path):
        if not row.get("path"):
            raise UsageError(f"the manifest {path} line {line} has no 'path'")
        source = Path(row["path"])
        if not source.is_absolute():
            source = path.parent / source
        uid = row.get("series_uid") or None
        given = row.get("id", "")
        if given and (not SAFE_ID.match(given) or given in RESERVED_IDS):
            raise UsageError(
                f"the manifest {path} line {line} has id {given!r}; an id names an output folder: letters, "
                "digits, '.', '_' and '-' only, not starting with '.', '_' or '-', at most 200 characters"
            )
        name = given or (nifti_name(source) if _is_nifti(source) else source.name)
        entries.append(Entry(_key(source, uid), name, str(source), uid))
        if given:
            given_keys.add(entries[-1].key)
    return entries, given_keys


def assign_ids(entries: Iterable[Entry], given_keys: Collection[str] = ()) -> list[Entry]:
    """Entries with unique, safe ids; duplicate inputs (same key) dropped after the first.

    The ids of entries whose key is in ``given_keys`` were chosen by the user: a clash among them is an
    error. Other names that clash (two ``volume-0.nii.gz`` in different folders) get a short hash of their
    key appended, which stays the same from run to run.
    """
    unique: dict[str, Entry] = {}
    for entry in entries:
        unique.setdefault(entry.key, entry)
    given = Counter(e.id for e in unique.values() if e.key in given_keys)
    clashes = sorted(name for name, n in given.items() if n > 1)
    if clashes:
        raise UsageError(f"the manifest gives the same id to several rows: {clashes[:5]}; ids name output folders")
    auto = Counter(safe_id(e.id) for e in unique.values() if e.key not in given_keys)
    out = []
    for entry in unique.values():
        name = entry.id
        if entry.key not in given_keys:
            name = safe_id(name)
            if auto[name] > 1 or name in given or name in RESERVED_IDS:
                name = f"{name[:190]}-{_short_hash(entry.key)}"
        out.append(Entry(entry.key, name, entry.source, entry.series_uid))
    return out


def plan_inputs(inputs: Sequence[Path]) -> Plan:
    """The entries of every INPUT: root folders searched, manifests read, NIfTI files taken as they are.

    Raises
    ------
    UsageError
        An INPUT that does not exist or is neither a folder, a manifest nor a NIfTI file; a bad manifest.
    """
    plan = Plan()
    found: list[Entry] = []
    given: set[str] = set()
    for item in inputs:
        if item.is_dir():
            found += discover(item, plan)
        elif item.is_file() and item.name.lower().endswith(MANIFEST_SUFFIXES):
            rows, keys = read_manifest(item)
            found += rows
            given |= keys
        elif item.is_file() and _is_nifti(item):
            found.append(Entry(_key(item, None), nifti_name(item), str(item)))
        elif not item.exists():
            raise UsageError(f"input not found: {item}; pass root folders, manifests (.csv, .jsonl) or NIfTI files")
        else:
            raise UsageError(
                f"input {item} is neither a folder, a manifest (.csv, .jsonl) nor a NIfTI volume (.nii, .nii.gz)"
            )
    plan.entries = assign_ids(found, given)
    return plan
