"""``litseg-batch``: segment every series of an archive on this machine or a Ray cluster (a thin layer over
:func:`~litseg.runtime.batch.driver.run_batch`)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from .. import errors
from ..api import RunConfig
from ..cli import _warning_to_log
from ..cli import build_parser as run_parser
from ..pages import prefer_small_pages
from .driver import BatchOptions, model_identity, plan_batch, run_batch
from .engine import DEFAULT_SERIES_TIMEOUT_S, EngineOptions
from .inputs import Entry
from .ledger import Decision
from .summary import EXIT_INTERRUPTED, EXIT_SERIES_FAILED, Progress, summarize, table

RUN_CONFIG_FIELDS = frozenset(RunConfig.__dataclass_fields__)
#: litseg-run's flags that a batch takes as they are (one flag per RunConfig field, plus --formats).
RUN_FLAGS = (
    "model",
    "device",
    "formats",
    "batch_size",
    "largest_component",
    "min_tumor_ml",
    "tumor_margin_mm",
    "tta",
    "focus",
    "allow_thin",
)

EPILOG = f"""\
INPUT: a root folder (every CT series under it, found by reading the DICOM headers, and every .nii/.nii.gz
volume), a manifest (.csv with a header row, or .jsonl: one series folder, DICOM file or NIfTI volume per row
in 'path', optional 'id' naming its output folder, optional 'series_uid'), or a NIfTI volume.

--out DIR holds <id>/ per series (written atomically), ledger.jsonl (one line per finished series: the
resume record) and summary.json. A re-run skips series done with the same model (name, version, sha256).

exit codes:
  {errors.EXIT_OK}  every series that ran was done, or refused for its input (see the ledger)
  {errors.EXIT_USAGE}  usage error (bad flags, inputs or manifest)
  {errors.EXIT_MODEL}  model problem (missing, no litseg metadata, not the same file on every node)
  {errors.EXIT_DEVICE}  requested device unusable
  {errors.EXIT_OUTPUT}  --out unusable: overlaps an input, holds other files, another batch holds it
  {errors.EXIT_MISSING_EXTRA}  Ray is not installed: pip install 'litseg[batch]'
  {EXIT_SERIES_FAILED}  a series failed (model, device, output or internal error, or its worker died), in this run
     or in an earlier one and not retried (--retry-failed)
  {errors.EXIT_INTERNAL} unexpected internal error (please report it)
  {EXIT_INTERRUPTED} interrupted (Ctrl-C or SIGTERM): what finished is in the ledger; run again for the rest
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="litseg-batch",
        description="Segment the liver and liver tumors in every CT series of an archive (DICOM series and NIfTI "
        "volumes), on this machine or an existing Ray cluster; resumable, with a ledger of every series.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", type=Path, nargs="+", metavar="INPUT", help="root folder, manifest or NIfTI volume")
    p.add_argument("--out", type=Path, required=True, help="output folder (shared storage on a cluster)")
    for action in run_parser()._actions:  # the same flags, help and defaults as litseg-run
        if action.dest in RUN_FLAGS:
            p._add_action(action)
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes, one model each (default: every CPU of this machine, or of the cluster with "
        "--ray-address, divided by --threads-per-worker)",
    )
    p.add_argument("--threads-per-worker", type=int, default=1, help="CPUs each worker uses (default: 1)")
    p.add_argument(
        "--gpu-share",
        type=float,
        default=1.0,
        help="with --device gpu: the share of a GPU each worker asks Ray for (0.25: four per GPU; default 1)",
    )
    p.add_argument(
        "--series-timeout",
        type=float,
        default=DEFAULT_SERIES_TIMEOUT_S,
        help="seconds after which a series still running is stopped and recorded as failed (a read hanging on a "
        "stalled file server); 0 waits for ever (default: %(default)g)",
    )
    p.add_argument(
        "--ray-address", default=None, help="attach to this Ray cluster (e.g. 10.0.0.1:6379) instead of a local Ray"
    )
    p.add_argument("--dry-run", action="store_true", help="list what would run and why every other entry is skipped")
    p.add_argument("--retry-failed", action="store_true", help="run again the series whose last attempt failed")
    p.add_argument(
        "--retry-refused", action="store_true", help="run again the series refused for their input (once fixed)"
    )
    p.add_argument("--limit", type=int, default=None, help="run at most N series now (the rest stay for later)")
    p.add_argument("--quiet", action="store_true", help="no progress and no summary table")
    p.add_argument("-v", "--verbose", action="store_true", help="log details, the workers' logs included")
    return p


def options_from(args: argparse.Namespace, parser: argparse.ArgumentParser) -> BatchOptions:
    formats = None if args.formats is None else tuple(f.strip() for f in args.formats.split(",") if f.strip())
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be at least 1; got {args.workers}")
    if args.threads_per_worker < 1:
        parser.error(f"--threads-per-worker must be at least 1; got {args.threads_per_worker}")
    try:
        config = RunConfig(**{name: getattr(args, name) for name in RUN_FLAGS if name in RUN_CONFIG_FIELDS})
        engine = EngineOptions(
            workers=args.workers,
            threads=args.threads_per_worker,
            gpu_share=args.gpu_share if args.device == "gpu" else 0.0,
            ray_address=args.ray_address,
            series_timeout_s=args.series_timeout or None,
            verbose=args.verbose,
        )
        return BatchOptions(
            tuple(args.inputs),
            args.out,
            config,
            formats,
            engine,
            args.retry_failed,
            args.retry_refused,
            args.limit,
            args.dry_run,
        )
    except ValueError as exc:
        parser.error(str(exc))


def _print_plan(decisions: list[tuple[Entry, Decision]], left_out: dict[str, int]) -> None:
    for entry, decision in decisions:
        verb = "run " if decision.run else "skip"
        print(f"{verb}  {entry.id}  {entry.source}  ({decision.reason})")
    for reason, n in sorted(left_out.items()):
        print(f"left out while searching: {n} x {reason}")
    runs = sum(1 for _, d in decisions if d.run)
    print(f"{runs} of {len(decisions)} entries would run", file=sys.stderr)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM (a scheduler stopping the job) stops as Ctrl-C does


def main(argv: Sequence[str] | None = None) -> int:
    prefer_small_pages()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    options = options_from(args, parser)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with warnings.catch_warnings():
            # pydicom's remarks on the style of files a root search reads are detail (-v), as in litseg-run
            warnings.showwarning = _warning_to_log
            return _main(options, args.quiet)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(options: BatchOptions, quiet: bool) -> int:
    try:
        if options.dry_run:
            plan, decisions = plan_batch(options, model_identity(options.config))
            _print_plan(decisions, dict(plan.left_out))
            return errors.EXIT_OK
        return _run(options, quiet)
    except errors.LitsegError as exc:
        print(f"litseg-batch: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("litseg-batch: interrupted before any series ran; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # a bug: say so, keep the traceback for the report, use the documented code
        logging.getLogger(__name__).exception("internal error")
        print("litseg-batch: internal error (a bug); please report it with the traceback above", file=sys.stderr)
        return errors.EXIT_INTERNAL


def _run(options: BatchOptions, quiet: bool) -> int:
    progress: list[Progress] = []

    def planned(to_run: int) -> None:
        progress.append(Progress(to_run, sys.stderr, sys.stderr.isatty(), enabled=not quiet))
        if to_run and not quiet:  # Ray and the workers' models take seconds to start: say what is coming
            print(f"litseg-batch: {to_run} series to run; starting the workers", file=sys.stderr, flush=True)

    def started(entry: Entry, worker: dict[str, Any]) -> None:
        progress[0].start()

    def finished(record: dict[str, Any]) -> None:
        progress[0](record)

    result = run_batch(options, on_planned=planned, on_start=started, on_record=finished)
    summary = summarize(result)
    if not quiet:
        print(table(summary), file=sys.stderr)
        if result.interrupted:
            print("litseg-batch: interrupted; run the same command again to finish the rest", file=sys.stderr)
    return int(summary["exit_code"])


def entry() -> NoReturn:
    """The ``litseg-batch`` command."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
