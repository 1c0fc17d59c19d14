"""Association handlers: what the node accepts (presentation contexts) and how it answers C-ECHO and C-STORE.

CT Image Storage is accepted in every transfer syntax that this install's pydicom can decode (the
runtime reads the pixels with pydicom), so a compressed series never reaches a worker that cannot read
it. Every other storage SOP class is negotiated with the uncompressed transfer syntaxes only so that its
C-STORE can be refused with a DICOM status (0x0122, SOP class not supported) instead of a bare
association-level refusal; nothing of it is stored. Handlers never raise: an error is logged and
answered with a failure status (pynetdicom's rule: a callback's error is never fatal).

For tests only: the environment variable ``LITSEG_NODE_TEST_STORE_DELAY_S`` makes the C-STORE handler
wait that many seconds after spooling an instance, so a test can kill the node during an association.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from threading import Lock
from typing import Any

from pydicom import uid as pydicom_uid
from pydicom.pixels.decoders.base import get_decoder
from pynetdicom import events as evt
from pynetdicom.presentation import PresentationContext, StoragePresentationContexts, build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from ..series import CT_IMAGE_STORAGE
from .spool import SeriesKey, Spool, SpoolFullError

log = logging.getLogger(__name__)

TEST_DELAY_ENV = "LITSEG_NODE_TEST_STORE_DELAY_S"
STATUS_SUCCESS = 0x0000
#: PS3.7 C.4.2.1.4 / PS3.4 B.2.3: refused, SOP class not supported.
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122
#: PS3.4 B.2.3: refused, out of resources.
STATUS_OUT_OF_RESOURCES = 0xA700
#: PS3.4 B.2.3: error, data set does not match SOP class.
STATUS_DATASET_MISMATCH = 0xA900
#: PS3.4 B.2.3: error, cannot understand.
STATUS_CANNOT_UNDERSTAND = 0xC000

UNCOMPRESSED = (
    pydicom_uid.ImplicitVRLittleEndian,
    pydicom_uid.ExplicitVRLittleEndian,
    pydicom_uid.ExplicitVRBigEndian,
)
#: Transfer syntaxes considered for CT, in order of preference; those without an available pydicom
#: decoder in this install are left out (e.g. JPEG Lossless needs gdcm or pylibjpeg-libjpeg).
CT_CANDIDATE_SYNTAXES = (
    *UNCOMPRESSED,
    pydicom_uid.DeflatedExplicitVRLittleEndian,
    pydicom_uid.JPEGBaseline8Bit,
    pydicom_uid.JPEGExtended12Bit,
    pydicom_uid.JPEGLossless,
    pydicom_uid.JPEGLosslessSV1,
    pydicom_uid.JPEGLSLossless,
    pydicom_uid.JPEGLSNearLossless,
    pydicom_uid.JPEG2000Lossless,
    pydicom_uid.JPEG2000,
    pydicom_uid.HTJ2KLossless,
    pydicom_uid.HTJ2KLosslessRPCL,
    pydicom_uid.HTJ2K,
    pydicom_uid.RLELossless,
)


def ct_transfer_syntaxes() -> list[str]:
    """The CT transfer syntaxes this install can decode (uncompressed ones always)."""
    out = []
    for ts in CT_CANDIDATE_SYNTAXES:
        if ts in UNCOMPRESSED or ts == pydicom_uid.DeflatedExplicitVRLittleEndian:
            out.append(str(ts))
            continue
        try:
            if get_decoder(ts).is_available:
                out.append(str(ts))
        except NotImplementedError:  # pydicom has no decoder class for it at all
            continue
    return out


def supported_contexts() -> list[PresentationContext]:
    """Presentation contexts the node accepts: Verification, CT in every decodable syntax, other storage
    SOP classes uncompressed (to answer them with a refusal status)."""
    contexts = [build_context(Verification), build_context(CT_IMAGE_STORAGE, ct_transfer_syntaxes())]
    for cx in StoragePresentationContexts:
        if cx.abstract_syntax is not None and cx.abstract_syntax != CT_IMAGE_STORAGE:
            contexts.append(build_context(cx.abstract_syntax, list(UNCOMPRESSED)))
    return contexts


@dataclass
class ReceiveCounters:
    """What the store handler did since start (read by the node's log and tests through the log)."""

    stored: int = 0
    refused_sop_class: int = 0
    refused_full: int = 0
    errors: int = 0
    _lock: Lock = field(default_factory=Lock, repr=False)

    def add(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)


def _peer(event: evt.Event) -> str:
    requestor = event.assoc.requestor
    return f"{requestor.ae_title}@{requestor.address}:{requestor.port}"


class StoreHandler:
    """``evt.EVT_C_STORE`` handler: spool CT instances, refuse the rest with a status."""

    def __init__(self, spool: Spool, log_phi: bool = False) -> None:
        self.spool = spool
        self.log_phi = log_phi
        self.counters = ReceiveCounters()
        self._delay_s = float(os.environ.get(TEST_DELAY_ENV, "0") or 0)

    def __call__(self, event: evt.Event) -> int:
        try:
            return self._store(event)
        except Exception:
            self.counters.add("errors")
            log.exception("C-STORE from %s failed; answered 0x%04X", _peer(event), STATUS_CANNOT_UNDERSTAND)
            return STATUS_CANNOT_UNDERSTAND

    def _store(self, event: evt.Event) -> int:
        request: Any = event.request
        sop_class = str(request.AffectedSOPClassUID)
        sop_uid = str(request.AffectedSOPInstanceUID)
        if sop_class != CT_IMAGE_STORAGE:
            self.counters.add("refused_sop_class")
            log.warning(
                "refused C-STORE of SOP class %s from %s (only CT Image Storage is segmented): 0x%04X",
                sop_class,
                _peer(event),
                STATUS_SOP_CLASS_NOT_SUPPORTED,
            )
            return STATUS_SOP_CLASS_NOT_SUPPORTED
        try:
            ds = event.dataset
            key = SeriesKey(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))
        except Exception as exc:  # unreadable data set or missing UIDs
            log.warning("C-STORE %s from %s: no usable study/series UIDs (%s)", sop_uid, _peer(event), exc)
            return STATUS_DATASET_MISMATCH
        try:
            self.spool.store(key, sop_uid, event.encoded_dataset(include_meta=True))
        except SpoolFullError as exc:
            self.counters.add("refused_full")
            log.warning("refused C-STORE %s of series %s: %s (0xA700)", sop_uid, key.series_uid, exc)
            return STATUS_OUT_OF_RESOURCES
        except ValueError as exc:
            log.warning("C-STORE %s from %s: %s", sop_uid, _peer(event), exc)
            return STATUS_DATASET_MISMATCH
        except OSError as exc:  # disk full or failing: the sender should retry later
            self.counters.add("errors")
            log.error("cannot spool C-STORE %s of series %s: %s (0xA700)", sop_uid, key.series_uid, exc)
            return STATUS_OUT_OF_RESOURCES
        self.counters.add("stored")
        if self._delay_s > 0:
            time.sleep(self._delay_s)
        if self.log_phi:
            log.debug(
                "stored %s of series %s (patient %s, accession %s)",
                sop_uid,
                key.series_uid,
                ds.get("PatientID", ""),
                ds.get("AccessionNumber", ""),
            )
        else:
            log.debug("stored %s of series %s", sop_uid, key.series_uid)
        return STATUS_SUCCESS


def handle_echo(event: evt.Event) -> int:
    log.info("C-ECHO from %s", _peer(event))
    return STATUS_SUCCESS


def handle_accepted(event: evt.Event) -> None:
    log.info("association from %s accepted", _peer(event))


def handle_rejected(event: evt.Event) -> None:
    log.warning("association from %s rejected", _peer(event))


def handle_aborted(event: evt.Event) -> None:
    log.warning("association with %s aborted", _peer(event))


def event_handlers(store: StoreHandler) -> list[evt.EventHandlerType]:
    """The (event, handler) pairs for ``AE.start_server``."""
    return [
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, store),
        (evt.EVT_ACCEPTED, handle_accepted),
        (evt.EVT_REJECTED, handle_rejected),
        (evt.EVT_ABORTED, handle_aborted),
    ]
