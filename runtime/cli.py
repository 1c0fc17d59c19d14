"""``litseg-run``: segment a CT DICOM series from the command line (a thin layer over the API)."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import resource
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import errors, kernels
from .api import (
    DEFAULT_FORMATS,
    OUTPUT_FILES,
    RunConfig,
    check_formats,
    default_formats,
    release_pixels,
    segment,
    write_results,
)
from .model import CPU_BATCH_SIZE, DEVICES, GPU_BATCH_SIZE
from .output_folder import check_output_location
from .pages import prefer_small_pages
from .sources import NIFTI_FORMATS, output_name
from .summary import format_summary
from .version import litseg_version

#: Where results go without --out: ./litseg-out/<SeriesInstanceUID> (a NIfTI volume: its file name).
DEFAULT_OUT_ROOT = Path("litseg-out")

EPILOG = f"""\
outputs (in --out, written atomically): {", ".join(f"{k}={v}" for k, v in OUTPUT_FILES.items())}

exit codes:
  {errors.EXIT_OK}  success
  {errors.EXIT_USAGE}  usage error (bad flags; an --out that equals, contains or lies inside the input)
  {errors.EXIT_BAD_INPUT}  bad input series (not found, no CT series, several series, gaps, tilt, ...)
  {errors.EXIT_MODEL}  model problem (missing file, missing litseg metadata, wrong outputs, a broken onnxruntime)
  {errors.EXIT_DEVICE}  requested device unusable (--device gpu without a usable CUDA GPU)
  {errors.EXIT_OUTPUT}  results cannot be written (output folder holds files, permissions, disk full); checked
     before the series is read where possible
  {errors.EXIT_INTERNAL} unexpected internal error (please report it)
  {errors.EXIT_INTERRUPTED} interrupted (Ctrl-C)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="litseg-run",
        description="Segment the liver and liver tumors in a CT DICOM series; writes DICOM SEG, "
        "a NIfTI label map and a JSON report.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "series",
        type=Path,
        nargs="?",
        help="folder (searched recursively) of the CT series, or one of its files (then its whole series is read "
        "from the file's folder), or a NIfTI CT volume in HU (.nii / .nii.gz)",
    )
    parser.add_argument("--model", type=Path, default=None, help="ONNX model (default: the bundled model)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: ./litseg-out/<SeriesInstanceUID>, for a NIfTI volume ./litseg-out/<its name>)",
    )
    parser.add_argument("--device", choices=DEVICES, default="auto", help="compute device (default: auto)")
    parser.add_argument(
        "--formats",
        default=None,
        help=f"comma-separated outputs among {','.join(OUTPUT_FILES)} (default: {','.join(DEFAULT_FORMATS)}; for a "
        f"NIfTI input {','.join(NIFTI_FORMATS)}: seg and mask-dicom need a DICOM input)",
    )
    parser.add_argument("--series-uid", default=None, help="SeriesInstanceUID when the input holds several")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=RunConfig.batch_size,
        help=f"slices per inference call (default: {CPU_BATCH_SIZE} on the CPU, {GPU_BATCH_SIZE} on a GPU)",
    )
    parser.add_argument(
        "--no-largest-component",
        dest="largest_component",
        action="store_false",
        help="keep every liver component, not only the largest",
    )
    parser.add_argument(
        "--min-tumor-ml",
        type=float,
        default=RunConfig.min_tumor_ml,
        help="relabel tumor components smaller than this many mL as liver: fewer false positives, fewer small "
        "lesions (default: the value calibrated with the model, else keep all; 0 keeps all)",
    )
    parser.add_argument(
        "--tumor-margin-mm",
        type=float,
        default=None,
        help="relabel liver within this many mm (in-plane) of a tumor as tumor (default: the margin calibrated "
        "with the model, in its metadata; 0 turns it off)",
    )
    parser.add_argument(
        "--no-tta",
        dest="tta",
        action="store_false",
        help="one inference pass instead of the test-time shifts calibrated with the model (faster; "
        "a model without them runs one pass anyway)",
    )
    parser.add_argument(
        "--no-focus",
        dest="focus",
        action="store_false",
        help="run the full inference on every slice and the whole grid, not only around the liver that a coarse "
        "first pass finds (slower; the same labels up to the reported cost)",
    )
    parser.add_argument(
        "--allow-thin", action="store_true", help="segment series of fewer than 3 slices (refused by default)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the litseg results in an existing --out folder (a folder holding anything "
        "litseg did not write is never replaced)",
    )
    parser.add_argument(
        "--warmup",
        action="store_true",
        help="compile the numba kernels into the cache and exit (run it when building a container image)",
    )
    parser.add_argument("--version", action="version", version=f"litseg {litseg_version()}")
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument(
        "--json", action="store_true", help="print the full JSON report (with the output paths) instead of the summary"
    )
    shown.add_argument("--quiet", action="store_true", help="print nothing on success (no progress bar or summary)")
    parser.add_argument(
        "--profile", action="store_true", help="print the seconds of every stage and the peak memory to stderr"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    return parser


class _ProgressBar:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        width = 30
        filled = int(width * done / max(total, 1))
        end = "\n" if done >= total else ""
        print(f"\r{stage:<10} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end=end, file=sys.stderr)


def _warning_to_log(message: Any, category: type[Warning], *_: Any, **__: Any) -> None:
    # Third-party libraries (highdicom, pydicom) warn about the input's style; that is detail, not news.
    logging.getLogger("py.warnings").debug("%s: %s", category.__name__, message)


def main(argv: Sequence[str] | None = None) -> int:
    prefer_small_pages()  # see litseg.runtime.pages: huge pages cost seconds of zeroing here
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.warmup:
        seconds = kernels.warmup()
        if not args.quiet:
            print(f"litseg-run: kernels ready ({seconds:.1f} s)", file=sys.stderr)
        if args.series is None:
            return errors.EXIT_OK
    if args.series is None:
        parser.error("the series folder (or file) is required")
    if args.formats is None:
        formats = default_formats(args.series)
    else:
        formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    unknown = sorted(set(formats) - set(OUTPUT_FILES))
    if unknown or not formats:
        parser.error(f"--formats: unknown {unknown or 'empty list'}; choose from {','.join(OUTPUT_FILES)}")
    try:
        config = RunConfig(
            model=args.model,
            device=args.device,
            batch_size=args.batch_size,
            largest_component=args.largest_component,
            min_tumor_ml=args.min_tumor_ml,
            series_uid=args.series_uid,
            tumor_margin_mm=args.tumor_margin_mm,
            tta=args.tta,
            allow_thin=args.allow_thin,
            focus=args.focus,
        )
    except ValueError as exc:
        parser.error(str(exc))
    with warnings.catch_warnings():
        warnings.showwarning = _warning_to_log
        return _run(args, config, formats)


def _print_profile(timings: dict[str, float], wall_s: float) -> None:
    """Per-stage seconds (``model_*`` are summed over the overlapped batches) and the process' peak memory."""
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    lines = [f"{'stage':<22}{'seconds':>9}"]
    lines += [f"{stage:<22}{seconds:>9.3f}" for stage, seconds in timings.items()]
    inference = timings.get("model_inference", 0.0)
    share = (wall_s - inference) / max(inference, 1e-9)
    lines += [
        f"{'wall (after start-up)':<22}{wall_s:>9.3f}",
        f"{'not inference':<22}{wall_s - inference:>9.3f}  ({share:.0%} of inference)",
        f"{'peak memory':<22}{peak_kb / 1024:>9.0f} MiB",
    ]
    print("\n".join(lines), file=sys.stderr)


def _run(args: argparse.Namespace, config: RunConfig, formats: tuple[str, ...]) -> int:
    started = time.perf_counter()
    try:
        # Before any work: an --out that could touch the input, or that cannot be written, stops here.
        check_formats(args.series, formats)  # SEG / mask DICOM of a NIfTI input: refused before any work
        check_output_location(args.out or DEFAULT_OUT_ROOT, [args.series], args.overwrite, root=args.out is None)
        result = segment(args.series, config, progress=_ProgressBar(not args.quiet and sys.stderr.isatty()))
        if "overlay" not in formats:  # only the overlay reads the HU again
            result = release_pixels(result)
        out_dir = args.out or DEFAULT_OUT_ROOT / output_name(result.series)
        paths = write_results(result, out_dir, formats, overwrite=args.overwrite)
    except errors.LitsegError as exc:
        message = " ".join(exc.cli_message.split())  # one line, even when a library's message spans several
        print(f"litseg-run: error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("litseg-run: interrupted; nothing was written", file=sys.stderr)
        return errors.EXIT_INTERRUPTED
    except Exception:  # a bug: say so, keep the traceback for the report, use the documented code
        logging.getLogger(__name__).exception("internal error")
        print("litseg-run: internal error (a bug); please report it with the traceback above", file=sys.stderr)
        return errors.EXIT_INTERNAL
    if args.profile:
        _print_profile(result.timings_s, time.perf_counter() - started)
    if args.json:
        report = {k: v for k, v in result.report().items() if k not in ("study_instance_uid",)}
        report["outputs"] = {f: str(p) for f, p in paths.items()}
        print(json.dumps(report, indent=2))
    elif not args.quiet:
        print(format_summary(result.report(), paths, time.perf_counter() - started))
    return errors.EXIT_OK


def entry() -> NoReturn:
    """The ``litseg-run`` command: :func:`main` in a process of its own, which it ends at once.

    Once main has returned, every output is written, fsynced and renamed into place, and nothing is left to
    do but tear the interpreter down, which cost most of a second on every run (collecting garbage over
    numba's, onnxruntime's and highdicom's objects; docs/performance.md) and, on a fresh install, waited for
    kernels still compiling in the background that this run did not need (a series without liver). So the
    command flushes its streams and log handlers and leaves with ``os._exit``: no teardown, no wait (a kernel whose
    compilation is cut short compiles again on the next run; numba replaces cache files whole, so none is
    left half-written). ``gc.freeze`` after the imports keeps the collector off them during the run. Only
    here, never in :func:`main`, which tests and embedding programs call in their own long-lived processes.
    """
    gc.freeze()
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        # a closed pipe (``litseg-run ... | head``) or stream: nothing left to save
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
