"""One batch worker: a loaded model that segments series through the public API, as ``litseg-run`` does.

Plain Python, no Ray: :mod:`~litseg.runtime.batch.engine` makes it a Ray actor, one per worker process, so
the model is loaded once per process and every series after the first pays for none of it. :meth:`run`
never raises for a series: every outcome, a refused input included, comes back as a ledger record for the
driver to append. Only the death of the process itself reaches the driver as an error.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import resource
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import errors
from ..api import RunConfig, check_formats, default_formats, release_pixels, segment, write_results
from ..model import Model
from ..output_folder import check_output_location
from ..pages import prefer_small_pages
from ..version import litseg_version
from .inputs import Entry
from .ledger import ModelIdentity, file_sha256

log = logging.getLogger(__name__)

#: Exit-code classes of the ledger, by the code ``litseg-run`` would have returned.
EXIT_CLASSES = {
    errors.EXIT_OK: "ok",
    errors.EXIT_USAGE: "usage",
    errors.EXIT_BAD_INPUT: "bad_input",
    errors.EXIT_MODEL: "model",
    errors.EXIT_DEVICE: "device",
    errors.EXIT_OUTPUT: "output",
    errors.EXIT_INTERNAL: "internal",
}
#: Errors that mean "this input cannot be segmented as given": the series is refused, not failed.
REFUSING_ERRORS = (errors.InputError, errors.UsageError)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class WorkSettings:
    """What every worker needs (sent once to each): run settings, formats (``None``: each input's default),
    the output root and the CPU threads a worker may use."""

    config: RunConfig
    formats: tuple[str, ...] | None
    out_dir: str
    threads: int = 1


def outcome(entry: Entry, status: str, exit_code: int, **fields: Any) -> dict[str, Any]:
    """A ledger record for ``entry`` (the driver adds the model identity)."""
    return {
        "key": entry.key,
        "id": entry.id,
        "input": entry.source,
        "series_uid": entry.series_uid,
        "status": status,
        "exit_code": exit_code,
        "exit_class": EXIT_CLASSES.get(exit_code, "internal"),
        "finished": now_iso(),
        "litseg_version": litseg_version(),
        **fields,
    }


class SeriesWorker:
    """A model loaded once, segmenting one series per :meth:`run` call into ``out_dir/<entry id>``."""

    def __init__(self, settings: WorkSettings) -> None:
        # Each worker is given its CPUs by the scheduler: its kernels and onnxruntime use that many threads,
        # not every core of the machine (which the other workers share).
        os.environ.setdefault("LITSEG_THREADS", str(max(1, settings.threads)))
        prefer_small_pages()  # as litseg-run does: huge pages cost seconds of zeroing on every series
        self.settings = settings
        self.host = socket.gethostname()
        # A model that cannot load here (not on this node's disk, no GPU) is reported by identity(), with its
        # class and message: an error raised from an actor's __init__ reaches the driver as text only.
        self.startup_error: errors.LitsegError | None = None
        try:
            self.model = Model(settings.config.model, device=settings.config.device)
            self.model_identity = ModelIdentity(
                self.model.info.name, self.model.info.version, file_sha256(self.model.info.path)
            )
        except errors.LitsegError as exc:
            self.startup_error = exc

    def identity(self) -> dict[str, Any]:
        """The model this worker loaded (the driver checks its bytes are the driver's), host and process; or
        why it could not load it (``error``: class, message)."""
        where = {"host": self.host, "pid": os.getpid()}
        if self.startup_error is not None:
            error = {"class": type(self.startup_error).__name__, "message": str(self.startup_error)}
            return {"error": error, **where}
        return {"model": self.model_identity.as_dict(), **where}

    def run(self, entry: Entry) -> dict[str, Any]:
        """Segment ``entry`` and write its results atomically; the ledger record of what happened."""
        started = time.perf_counter()
        worker: dict[str, Any] = {"host": self.host, "pid": os.getpid()}
        out_dir = Path(self.settings.out_dir) / entry.id
        formats = self.settings.formats or default_formats(entry.source)
        try:
            check_formats(entry.source, formats)  # SEG of a NIfTI volume: refused before any work
            # overwrite: a folder there is this series' own, from another model or from a run stopped after
            # writing and before its ledger line; replacing it is one atomic exchange (output_folder).
            check_output_location(out_dir, [entry.source], overwrite=True)
            config = dataclasses.replace(self.settings.config, series_uid=entry.series_uid)
            result = segment(entry.source, config, model=self.model)
            if "overlay" not in formats:
                result = release_pixels(result)
            write_results(result, out_dir, formats, overwrite=True)
        except errors.LitsegError as exc:
            status = "refused" if isinstance(exc, REFUSING_ERRORS) else "failed"
            message = " ".join(str(exc).split())
            log.warning("%s %s: %s", entry.id, status, message)
            return outcome(
                entry,
                status,
                exc.exit_code,
                error={"class": type(exc).__name__, "message": message},
                seconds=round(time.perf_counter() - started, 3),
                worker=worker,
            )
        except Exception as exc:  # a bug: the traceback goes to the worker's log, the record names it
            log.exception("internal error on %s", entry.id)
            return outcome(
                entry,
                "failed",
                errors.EXIT_INTERNAL,
                error={"class": type(exc).__name__, "message": " ".join(str(exc).split()) or repr(exc)},
                seconds=round(time.perf_counter() - started, 3),
                worker=worker,
            )
        report = result.report()
        # the process' peak so far (kilobytes on Linux): what a worker needs, for sizing a cluster's nodes
        worker["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        return outcome(
            entry,
            "done",
            errors.EXIT_OK,
            output=entry.id,
            formats=list(formats),
            seconds=round(time.perf_counter() - started, 3),
            timings_s=report["timings_s"],
            liver_volume_ml=report["liver_volume_ml"],
            tumor_count=report["tumor_count"],
            worker=worker,
        )
