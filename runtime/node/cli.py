"""``litseg-serve``: a DICOM node that receives CT series by C-STORE and returns their SEG (a thin layer
over :class:`~litseg.runtime.node.server.Node`)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from .. import errors
from ..model import DEVICES
from ..pages import prefer_small_pages
from .config import Destination, NodeConfig
from .late import LATE_MODES
from .server import Node
from .status import main_status

EPILOG = f"""\
spool layout: incoming/<StudyUID>/<SeriesUID>/ (receiving), queue/ (complete series), outbox/ (results
awaiting the peer's acknowledgement), done/, held/ (implausible results with --hold-implausible; move one
to outbox/ to send it), failed/ (series that could not be segmented, with error.json).
The node can be killed at any moment: a restart resumes from the spool.

C-STORE statuses: 0x0000 stored; 0x0122 SOP class not supported (only CT Image Storage is segmented);
0xA700 out of resources (spool full: retry later); 0xA900 data set without valid study/series UIDs.

exit codes:
  {errors.EXIT_OK}  stopped cleanly (SIGTERM or Ctrl-C), or --status printed
  {errors.EXIT_USAGE}  usage error (bad flags, port in use)
  {errors.EXIT_MODEL}  model problem (missing file, missing litseg metadata, a broken onnxruntime install)
  {errors.EXIT_DEVICE}  requested device unusable
  {errors.EXIT_OUTPUT}  spool not writable or in use by another node
  {errors.EXIT_INTERNAL} unexpected internal error (please report it)
  {errors.EXIT_INTERRUPTED} interrupted (Ctrl-C) while starting, before the node listened
"""


def _destination(text: str) -> Destination:
    try:
        return Destination.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    d = NodeConfig.__dataclass_fields__
    p = argparse.ArgumentParser(
        prog="litseg-serve",
        description="DICOM node: receives CT series (C-STORE), segments liver and tumors, sends the DICOM SEG "
        "back by C-STORE (--forward) and/or writes it with a JSON report (--out).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--spool", type=Path, required=True, help="spool folder (received instances, queue, results)")
    p.add_argument("--status", action="store_true", help="print queue depth and recent series from --spool; exit")
    p.add_argument("--json", action="store_true", help="with --status: print JSON")
    p.add_argument("--ae-title", default=d["ae_title"].default, help="this node's AE title (default: %(default)s)")
    p.add_argument("--host", default=d["host"].default, help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=d["port"].default, help="port to listen on (default: %(default)s)")
    p.add_argument("--forward", type=_destination, default=None, metavar="AE@HOST:PORT", help="send each SEG here")
    p.add_argument("--out", type=Path, default=None, help="write <StudyUID>/<SeriesUID>/ SEG + report here")
    p.add_argument(
        "--idle-seconds",
        type=float,
        default=d["idle_seconds"].default,
        help="a series is complete after this long without a new instance (default: %(default)s)",
    )
    p.add_argument("--workers", type=int, default=d["workers"].default, help="parallel series (default: 1)")
    p.add_argument("--allow-ae", nargs="+", default=[], metavar="AE", help="calling AE titles allowed (default: all)")
    p.add_argument("--model", type=Path, default=None, help="ONNX model (default: the bundled model)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="compute device (default: auto)")
    p.add_argument("--max-associations", type=int, default=d["max_associations"].default, help="default: 10")
    p.add_argument("--max-pdu", type=int, default=d["max_pdu"].default, help="bytes, 0 = unlimited (default: 16382)")
    p.add_argument("--max-spool-mb", type=float, default=0.0, help="spool size limit in MiB (default: 0, none)")
    p.add_argument("--max-queue", type=int, default=d["max_queue"].default, help="complete series waiting (16)")
    p.add_argument("--retry-initial-seconds", type=float, default=d["retry_initial_seconds"].default)
    p.add_argument("--retry-max-seconds", type=float, default=d["retry_max_seconds"].default)
    p.add_argument("--log-phi", action="store_true", help="allow patient ID and accession number in the log")
    p.add_argument(
        "--keep-done", type=int, default=d["keep_done"].default, help="finished series kept in done/ (default: 1000)"
    )
    p.add_argument(
        "--keep-done-days",
        type=float,
        default=d["keep_done_days"].default,
        help="remove done/ entries older than this; 0 keeps them by count only (default: %(default)s)",
    )
    p.add_argument(
        "--late-instances",
        choices=LATE_MODES,
        default=d["late_instances"].default,
        help="instances arriving after their series was closed: segment the series again with every instance "
        "(a new SEG replaces the earlier one) or drop them with a log line (default: %(default)s)",
    )
    p.add_argument(
        "--late-window-seconds",
        type=float,
        default=d["late_window_seconds"].default,
        help="how long a finished series keeps its instances for late ones (default: %(default)s)",
    )
    p.add_argument(
        "--hold-implausible",
        action="store_true",
        help="keep results with an implausible liver in held/ instead of forwarding them (default: forward them, "
        "flagged CHECK: in their descriptions)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug log (pynetdicom's too)")
    return p


def _config(args: argparse.Namespace) -> NodeConfig:
    return NodeConfig(
        spool=args.spool,
        ae_title=args.ae_title,
        host=args.host,
        port=args.port,
        forward=args.forward,
        out=args.out,
        idle_seconds=args.idle_seconds,
        workers=args.workers,
        allow_ae=tuple(args.allow_ae),
        model=args.model,
        device=args.device,
        max_associations=args.max_associations,
        max_pdu=args.max_pdu,
        max_spool_mb=args.max_spool_mb,
        max_queue=args.max_queue,
        retry_initial_seconds=args.retry_initial_seconds,
        retry_max_seconds=args.retry_max_seconds,
        log_phi=args.log_phi,
        keep_done=args.keep_done,
        keep_done_days=args.keep_done_days,
        late_instances=args.late_instances,
        late_window_seconds=args.late_window_seconds,
        hold_implausible=args.hold_implausible,
    )


def main(argv: Sequence[str] | None = None) -> int:
    prefer_small_pages()  # see litseg.runtime.pages: huge pages cost seconds of zeroing here
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.status:
        print(main_status(args.spool, as_json=args.json))
        return errors.EXIT_OK
    try:
        config = _config(args)
    except ValueError as exc:
        parser.error(str(exc))
    # The node's own lines (one per series, associations, start/stop) at INFO; the runtime's stages, highdicom
    # and pynetdicom only with -v (pynetdicom's debug output only with --log-phi too: it dumps data sets).
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger(__package__).setLevel(logging.DEBUG if args.verbose else logging.INFO)
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if args.verbose and args.log_phi else logging.WARNING)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    node = Node(config)
    try:
        node.start()
    except errors.LitsegError as exc:
        print(f"litseg-serve: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # the listening socket: port in use, address not available
        print(f"litseg-serve: error: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return errors.EXIT_USAGE
    except Exception:
        logging.getLogger(__name__).exception("internal error")
        print("litseg-serve: internal error (a bug); please report it with the traceback above", file=sys.stderr)
        return errors.EXIT_INTERNAL
    while not stop.wait(0.5):
        pass
    node.stop()
    return errors.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
