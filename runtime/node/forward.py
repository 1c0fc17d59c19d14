"""Forwarding: each result's SEG goes to the ``--forward`` peer by C-STORE (SCU) until it is acknowledged.

A result stays in ``outbox/`` until the peer answers the C-STORE with success (0x0000) or a warning
(0xB000, 0xB006, 0xB007: stored with coercion or elements discarded). Failures (peer down, association
rejected, a failure status, no response) are retried with exponential back-off, from
``retry_initial_seconds`` doubling to ``retry_max_seconds``, without limit: the result is never dropped.
Delivery is exactly once as far as the peer's acknowledgement allows: a crash after the peer stored the
SEG but before its answer was recorded sends the same SEG (same SOP Instance UID) again after restart.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from .config import Destination
from .spool import REPORT_FILE, SEG_FILE, Spool, read_json
from .status import format_series_line
from .worker import make_summary

log = logging.getLogger(__name__)

ACKNOWLEDGED = {0x0000, 0xB000, 0xB006, 0xB007}


class DeliveryError(Exception):
    """The SEG was not acknowledged (peer unreachable, association refused, failure status)."""


@dataclass(frozen=True)
class ScuSettings:
    """Our side of an outgoing association."""

    calling_ae: str
    timeout_s: float = 30.0
    max_pdu: int = 16382


def send_file(path: Path, destination: Destination, scu: ScuSettings) -> int:
    """C-STORE one DICOM file to ``destination``; returns the acknowledged status.

    Raises
    ------
    DeliveryError
        No association, no response, or a status that is not success or warning.
    """
    ds = pydicom.dcmread(path)
    own = str(ds.file_meta.TransferSyntaxUID)
    syntaxes = list(dict.fromkeys([own, ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
    ae = AE(ae_title=scu.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = scu.timeout_s
    ae.maximum_pdu_size = scu.max_pdu
    ae.add_requested_context(str(ds.SOPClassUID), syntaxes)
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        raise DeliveryError(f"no association with {destination} (peer down, refused or rejected our AE title)")
    try:
        response = assoc.send_c_store(ds)
    finally:
        if assoc.is_established:
            assoc.release()
    status = int(response.get("Status", -1)) if response else -1
    if status not in ACKNOWLEDGED:
        answer = f"answered status 0x{status:04X}" if status >= 0 else "sent no C-STORE response"
        raise DeliveryError(f"{destination} {answer}")
    return status


class Forwarder:
    """Delivers every ``outbox/`` result to one destination, retrying with back-off (one thread)."""

    def __init__(
        self,
        spool: Spool,
        destination: Destination,
        scu: ScuSettings,
        retry_initial_seconds: float,
        retry_max_seconds: float,
        results_ready: threading.Event,
    ) -> None:
        self.spool = spool
        self.destination = destination
        self.scu = scu
        self.retry_initial_seconds = retry_initial_seconds
        self.retry_max_seconds = retry_max_seconds
        self.results_ready = results_ready
        self._attempts: dict[str, int] = {}
        self._due: dict[str, float] = {}

    def run(self, stop: threading.Event) -> None:
        """Thread body: deliver due results until ``stop`` is set."""
        while not stop.is_set():
            try:
                wait = self.deliver_due()
            except Exception:  # never let delivery die; the results stay in the outbox
                log.exception("forwarder error")
                wait = self.retry_initial_seconds
            if self.results_ready.wait(timeout=min(wait, 1.0)):
                self.results_ready.clear()

    def deliver_due(self, ignore_backoff: bool = False) -> float:
        """Try every result whose back-off has passed; returns seconds until the next one is due."""
        now = time.monotonic()
        next_due = self.retry_max_seconds
        for job in self.spool.jobs("outbox"):
            due = self._due.get(job, 0.0)
            if due > now and not ignore_backoff:
                next_due = min(next_due, due - now)
                continue
            if not self.deliver(job):
                next_due = min(next_due, self._due[job] - time.monotonic())
        return max(next_due, 0.05)

    def deliver(self, job: str) -> bool:
        """One attempt to deliver ``job``; ``True`` when the peer acknowledged it."""
        folder = self.spool.path("outbox", job)
        attempts = self._attempts.get(job, 0) + 1
        self._attempts[job] = attempts
        start = time.perf_counter()
        try:
            status = send_file(folder / SEG_FILE, self.destination, self.scu)
        except (DeliveryError, OSError, ValueError, RuntimeError) as exc:
            delay = min(self.retry_initial_seconds * 2 ** (attempts - 1), self.retry_max_seconds)
            self._due[job] = time.monotonic() + delay
            log.warning("SEG of job %s not delivered (attempt %d): %s; next try in %.1f s", job, attempts, exc, delay)
            return False
        seconds = time.perf_counter() - start
        report: dict[str, Any] = read_json(folder / REPORT_FILE)
        report.setdefault("timings_s", {})["send"] = round(seconds, 4)
        forward = {"destination": str(self.destination), "status": f"0x{status:04X}", "attempts": attempts}
        summary = make_summary(job, report, state="done", forward=forward)
        self._attempts.pop(job, None)
        self._due.pop(job, None)
        if not self.spool.delivered(job, summary):  # superseded by a re-segmentation while it was being sent
            log.warning("SEG of job %s was delivered while a re-segmentation superseded it", job)
            return True
        log.info(format_series_line(summary))
        return True
