"""The node's settings: one frozen dataclass, validated on creation (the CLI has one flag per field)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..model import DEVICES
from .late import LATE_MODES
from .retention import KEEP_DONE

#: Application Entity titles: 1-16 characters of the default repertoire, no backslash or control
#: characters (PS3.5 6.2, VR AE); leading/trailing spaces are not significant, so they are refused here.
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
#: Smallest and largest Maximum Length a P-DATA-TF PDU may announce (PS3.8 D.1); 0 means unlimited.
MIN_PDU_BYTES = 4096
MAX_PDU_BYTES = 2**32 - 1


def check_ae_title(value: str, what: str) -> str:
    """``value`` if it is a valid AE title, else ``ValueError`` naming ``what`` (e.g. ``--ae-title``)."""
    if not isinstance(value, str) or not _AE_TITLE.match(value) or value != value.strip():
        raise ValueError(
            f"{what} must be 1 to 16 printable ASCII characters without backslash or surrounding spaces; got {value!r}"
        )
    return value


@dataclass(frozen=True)
class Destination:
    """A C-STORE peer: ``AE@HOST:PORT``."""

    ae_title: str
    host: str
    port: int

    def __post_init__(self) -> None:
        check_ae_title(self.ae_title, "the destination AE title")
        if not self.host or any(c.isspace() for c in self.host):
            raise ValueError(f"the destination host must be a host name or IP address; got {self.host!r}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"the destination port must be 1 to 65535; got {self.port}")

    @classmethod
    def parse(cls, text: str) -> Destination:
        """Parse ``AE@HOST:PORT`` (an IPv6 host in brackets: ``AE@[::1]:104``)."""
        ae, at, rest = text.partition("@")
        host, colon, port = rest.rpartition(":")
        if not at or not colon or not port.isdigit():
            raise ValueError(f"a destination is AE@HOST:PORT, e.g. PACS@10.0.0.5:104; got {text!r}")
        return cls(ae, host.strip("[]"), int(port))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class NodeConfig:
    """Settings of one ``litseg-serve`` node.

    Attributes
    ----------
    spool
        Folder holding received instances, queued series and undelivered results (created if absent).
    ae_title, host, port
        The node's own AE title and listening address.
    forward
        Peer that receives each SEG by C-STORE (retried with back-off until acknowledged).
    out
        Folder for ``<StudyUID>/<SeriesUID>/`` result folders (SEG + JSON report).
    idle_seconds
        A series is complete after this many seconds without a new instance of it.
    workers
        Worker threads segmenting series in parallel; they share one loaded model.
    allow_ae
        Calling AE titles allowed to associate; empty allows every caller.
    model, device
        ONNX model (``None``: the bundled default) and compute device (``auto``, ``cpu``, ``gpu``).
    max_associations
        Simultaneous associations; more are rejected (transient, local limit exceeded).
    max_pdu
        Maximum PDU length the node announces (bytes; 0 = unlimited).
    max_spool_mb
        Spool size limit (MiB, received instances and results); a C-STORE that would exceed it gets
        status 0xA700 (out of resources). 0 = no limit.
    max_queue
        Complete series waiting for a worker; when full, further series stay in ``incoming/`` until a
        worker frees a place (back-pressure, nothing is dropped).
    retry_initial_seconds, retry_max_seconds
        Back-off of SEG delivery: the first retry after ``retry_initial_seconds``, doubling up to
        ``retry_max_seconds``; delivery is retried until the peer acknowledges it.
    log_phi
        Allow patient identifiers (patient ID, accession number) in the log.
    keep_done, keep_done_days
        ``done/`` keeps the summaries of at most ``keep_done`` finished series, none older than
        ``keep_done_days`` (0: no age limit); older ones are removed.
    late_instances
        What to do with instances of a series that arrive after it was closed: ``resegment`` segments the
        series again with every instance (a new SEG replacing the earlier one), ``drop`` drops them with a
        log line.
    late_window_seconds
        How long a finished series keeps its instances so that late ones can join them (``resegment``).
    hold_implausible
        Keep a result whose liver is implausible (``liver_plausible`` false) in ``held/`` instead of
        forwarding it; by default it is forwarded, flagged ``CHECK:`` in its descriptions.
    """

    spool: Path
    ae_title: str = "LITSEG"
    host: str = "127.0.0.1"
    port: int = 11112
    forward: Destination | None = None
    out: Path | None = None
    idle_seconds: float = 10.0
    workers: int = 1
    allow_ae: tuple[str, ...] = ()
    model: Path | None = None
    device: str = "auto"
    max_associations: int = 10
    max_pdu: int = 16382
    max_spool_mb: float = 0.0
    max_queue: int = 16
    retry_initial_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    log_phi: bool = False
    keep_done: int = KEEP_DONE
    keep_done_days: float = 30.0
    late_instances: str = "resegment"
    late_window_seconds: float = 600.0
    hold_implausible: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "spool", Path(self.spool))
        if self.out is not None:
            object.__setattr__(self, "out", Path(self.out))
        if self.model is not None:
            object.__setattr__(self, "model", Path(self.model))
        object.__setattr__(self, "allow_ae", tuple(self.allow_ae))
        check_ae_title(self.ae_title, "ae_title")
        for ae in self.allow_ae:
            check_ae_title(ae, "each allow_ae entry")
        if self.forward is None and self.out is None:
            raise ValueError("give at least one result destination: forward (AE@HOST:PORT) and/or out (a folder)")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0 to 65535; got {self.port}")
        if not 0.05 <= self.idle_seconds <= 86400:
            raise ValueError(f"idle_seconds must be 0.05 to 86400 s; got {self.idle_seconds}")
        if not 1 <= self.workers <= 64:
            raise ValueError(f"workers must be 1 to 64; got {self.workers}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}; got {self.device!r}")
        if not 1 <= self.max_associations <= 1000:
            raise ValueError(f"max_associations must be 1 to 1000; got {self.max_associations}")
        if self.max_pdu != 0 and not MIN_PDU_BYTES <= self.max_pdu <= MAX_PDU_BYTES:
            raise ValueError(f"max_pdu must be 0 (unlimited) or {MIN_PDU_BYTES} to {MAX_PDU_BYTES}; got {self.max_pdu}")
        if not self.max_spool_mb >= 0:
            raise ValueError(f"max_spool_mb must be >= 0 (0 = no limit); got {self.max_spool_mb}")
        if not 1 <= self.max_queue <= 10000:
            raise ValueError(f"max_queue must be 1 to 10000; got {self.max_queue}")
        if not 0 < self.retry_initial_seconds <= self.retry_max_seconds <= 86400:
            raise ValueError(
                "retry seconds must satisfy 0 < retry_initial_seconds <= retry_max_seconds <= 86400; got "
                f"{self.retry_initial_seconds} and {self.retry_max_seconds}"
            )

        if not 1 <= self.keep_done <= 10_000_000:
            raise ValueError(f"keep_done must be 1 to 10000000 series; got {self.keep_done}")
        if not self.keep_done_days >= 0:
            raise ValueError(f"keep_done_days must be >= 0 (0 = no age limit); got {self.keep_done_days}")
        if self.late_instances not in LATE_MODES:
            raise ValueError(f"late_instances must be one of {LATE_MODES}; got {self.late_instances!r}")
        if not 0 <= self.late_window_seconds <= 7 * 86400:
            raise ValueError(f"late_window_seconds must be 0 to 604800 s; got {self.late_window_seconds}")

    @property
    def retain_instances_s(self) -> float:
        """How long a finished series keeps its instances (only ``resegment`` needs them)."""
        return self.late_window_seconds if self.late_instances == "resegment" else 0.0

    @property
    def max_spool_bytes(self) -> int:
        """The spool limit in bytes (0 = no limit)."""
        return int(self.max_spool_mb * 1024 * 1024)
