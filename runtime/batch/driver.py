"""The batch from start to end: plan the entries, skip what the ledger says is settled, run the rest on the
engine, append one ledger line per finished series, and leave ``--out`` clean and summarised.

The driver alone writes the ledger, ``summary.json`` and ``running.json`` (what each worker has now), and it
holds ``--out``'s lock for the whole run. Nothing here imports Ray: :mod:`~litseg.runtime.batch.engine` does,
only when there is something to run, so ``--dry-run`` and a run with nothing left to do need no Ray at all.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..api import RunConfig, check_formats
from ..errors import OutputError, UsageError
from ..model import Model
from .engine import EngineOptions, run_entries
from .inputs import MANIFEST_SUFFIXES, Entry, Plan, plan_inputs
from .ledger import LEDGER_NAME, LOCK_NAME, Decision, Ledger, ModelIdentity, decide, exclusive, file_sha256
from .summary import BatchResult, summarize
from .worker import WorkSettings, now_iso

log = logging.getLogger(__name__)

SUMMARY_NAME = "summary.json"
RUNNING_NAME = ".running.json"
#: What commit_folder leaves beside a result folder while it writes (``.<id>.tmp-*``) or swaps (``.old-*``):
#: a worker killed at that moment leaves one behind; the driver, holding the lock, removes them.
LEFTOVER = re.compile(r"^\..+\.(tmp-.+|old-\d+)$")


@dataclass(frozen=True)
class BatchOptions:
    """One batch run (the CLI has one flag per field).

    Attributes
    ----------
    inputs
        Root folders, manifests (``.csv``, ``.jsonl``) and NIfTI files.
    out_dir
        Results (``<out_dir>/<id>/``), the ledger and the summary; shared storage on a cluster.
    config
        Segmentation settings, as for ``litseg-run``.
    formats
        Outputs per series; ``None``: each input's default (SEG + NIfTI + JSON, NIfTI + JSON + overlay).
    engine
        Where and how wide to run.
    retry_failed, retry_refused
        Run again the series whose latest ledger line says failed / refused (with the same model).
    limit
        Run at most this many series now (the rest stay for a later run).
    dry_run
        Plan and decide only: nothing runs and nothing is written.
    """

    inputs: tuple[Path, ...]
    out_dir: Path
    config: RunConfig = field(default_factory=RunConfig)
    formats: tuple[str, ...] | None = None
    engine: EngineOptions = field(default_factory=EngineOptions)
    retry_failed: bool = False
    retry_refused: bool = False
    limit: int | None = None
    dry_run: bool = False

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"limit must be >= 0; got {self.limit}")


def model_identity(config: RunConfig) -> ModelIdentity:
    """Load the model once on the driver: a bad model stops here (exit 4), before any worker starts."""
    model = Model(config.model, device="cpu")
    return ModelIdentity(model.info.name, model.info.version, file_sha256(model.info.path))


def _overlap(out: Path, sources: Iterable[str | Path]) -> None:
    """Refuse an --out that equals, contains or lies inside an input's folder (a file's folder for a file)."""
    resolved = Path(os.path.abspath(out))
    for source in sources:
        path = Path(source)
        if not path.exists():  # the worker refuses it ("input not found"); nothing of it can be touched
            continue
        folder = Path(os.path.abspath(path if path.is_dir() else path.parent))
        if resolved == folder or folder in resolved.parents or resolved in folder.parents:
            raise OutputError(
                f"--out {out} overlaps the input {source}; results must never be written into or around the "
                "input: choose an --out outside it"
            )


def _check_out(out_dir: Path, inputs: tuple[Path, ...]) -> None:
    """--out must be outside every root and volume given (a manifest's rows are checked once read) and, when it
    holds files, be a batch's own (it has a ledger)."""
    out = Path(os.path.abspath(out_dir))
    _overlap(out_dir, [item for item in inputs if not item.name.lower().endswith(MANIFEST_SUFFIXES)])
    if out.is_dir() and not (out / LEDGER_NAME).exists():
        foreign = [p.name for p in out.iterdir() if p.name != LOCK_NAME]
        if foreign:
            raise OutputError(
                f"--out {out_dir} holds files ({', '.join(sorted(foreign)[:3])}, ...) but no {LEDGER_NAME}; "
                "choose an empty folder or one an earlier litseg-batch wrote"
            )


def remove_leftovers(out_dir: Path) -> int:
    """Remove the temporary folders of writes that never finished (a killed worker's); returns how many."""
    removed = 0
    for path in out_dir.iterdir():
        if not LEFTOVER.match(path.name):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:  # a status file a killed driver was replacing
            path.unlink(missing_ok=True)
        removed += 1
    return removed


def write_json_atomic(path: Path, data: Any, durable: bool = True) -> None:
    """Replace ``path`` by ``data`` in one rename; ``durable`` fsyncs first (not for status that is rewritten
    twice per series: on a network file system each fsync is milliseconds the workers would wait for)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def plan_batch(options: BatchOptions, model: ModelIdentity) -> tuple[Plan, list[tuple[Entry, Decision]]]:
    """The entries and, for each, whether it runs now (the ledger, the retry flags and the limit decide)."""
    plan = plan_inputs(options.inputs)
    _overlap(options.out_dir, [e.source for e in plan.entries])
    latest = Ledger(options.out_dir).latest() if options.out_dir.is_dir() else {}
    # An output folder belongs to one input: a new input under an id the ledger gives another is refused
    # before anything runs (it would replace that input's results).
    owners = {r.get("id"): key for key, r in latest.items() if r.get("status") == "done"}
    taken = [(e.id, owners[e.id]) for e in plan.entries if e.id in owners and owners[e.id] != e.key]
    if taken:
        name, owner = taken[0]
        raise UsageError(
            f"{len(taken)} entr{'y' if len(taken) == 1 else 'ies'} would write into output folders that hold "
            f"another input's results, e.g. {name!r} (from {owner}); give them other ids, or another --out"
        )
    decisions = []
    to_run = 0
    for entry in plan.entries:
        record = latest.get(entry.key)
        decision = decide(record, model, options.retry_failed, options.retry_refused)
        if record is not None and decision.kind == "done" and not (options.out_dir / str(record.get("id"))).is_dir():
            decision = Decision(True, "output_gone", "done earlier, but its output folder is gone: run again")
        if decision.run and options.limit is not None and to_run >= options.limit:
            decision = Decision(False, "limit", f"over --limit {options.limit}: left for a later run")
        to_run += decision.run
        decisions.append((entry, decision))
    return plan, decisions


def run_batch(
    options: BatchOptions,
    on_planned: Callable[[int], None] | None = None,
    on_start: Callable[[Entry, dict[str, Any]], None] | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> BatchResult:
    """Run a batch (see the module docstring).

    ``on_planned`` hears how many series will run, ``on_start`` each series handed to a worker (with the
    worker's host and pid), ``on_record`` every ledger line as it is appended.

    Raises
    ------
    UsageError, OutputError, ModelError, DeviceError
        Bad inputs or manifest, an unusable ``--out`` (or one another batch holds), a bad model; before any
        series runs.
    """
    started = time.perf_counter()
    if options.formats is not None:
        check_formats(None, options.formats)
    _check_out(options.out_dir, options.inputs)
    model = model_identity(options.config)
    if options.dry_run:
        plan, decisions = plan_batch(options, model)
        return BatchResult(plan, decisions, model=model)
    try:
        options.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create --out {options.out_dir}: {exc}") from exc
    with exclusive(options.out_dir):
        remove_leftovers(options.out_dir)
        plan, decisions = plan_batch(options, model)
        result = BatchResult(plan, decisions, model=model)
        ledger = Ledger(options.out_dir)
        running: dict[str, Any] = {}
        running_path = options.out_dir / RUNNING_NAME

        def started_on(entry: Entry, worker: dict[str, Any]) -> None:
            if result.startup_s is None:  # planned, Ray up, every worker's model loaded: a run's fixed cost
                result.startup_s = time.perf_counter() - started
            running[entry.id] = {"host": worker["host"], "pid": worker["pid"], "since": now_iso()}
            write_json_atomic(running_path, running, durable=False)
            if on_start is not None:
                on_start(entry, worker)

        def finished(entry: Entry, record: dict[str, Any]) -> None:
            record = {**record, "model": model.as_dict()}
            ledger.append(record)  # first: a series counts once its line is on disk
            result.records.append(record)
            running.pop(entry.id, None)
            write_json_atomic(running_path, running, durable=False)
            if on_record is not None:
                on_record(record)

        to_run = [entry for entry, decision in decisions if decision.run]
        if on_planned is not None:
            on_planned(len(to_run))
        if to_run:
            settings = WorkSettings(options.config, options.formats, str(options.out_dir), options.engine.threads)
            result.interrupted = run_entries(to_run, settings, options.engine, model, started_on, finished)
        remove_leftovers(options.out_dir)
        running_path.unlink(missing_ok=True)
        result.seconds = time.perf_counter() - started
        write_json_atomic(options.out_dir / SUMMARY_NAME, summarize(result))
        return result
