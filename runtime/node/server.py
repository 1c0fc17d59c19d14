"""The node: one process that receives (pynetdicom SCP), collects series, segments and delivers.

Threads: pynetdicom's server and one thread per association (handlers write to the spool); one
collector closing idle series; ``workers`` worker threads sharing one model; one forwarder. All state
that matters lives in the spool, so the process can be killed at any moment. ``stop()`` (SIGTERM) stops
listening, lets running associations end, finishes the series being segmented, tries once more to
deliver what is in the outbox, and returns; queued and incoming series wait for the next start.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from typing import IO, Any

from pynetdicom import AE
from pynetdicom.transport import ThreadedAssociationServer

from ..api import RunConfig
from ..errors import OutputError
from ..segmenter import Segmenter
from .config import NodeConfig
from .forward import Forwarder, ScuSettings
from .handlers import StoreHandler, event_handlers, supported_contexts
from .series_queue import SeriesQueue
from .spool import Spool
from .status import NODE_FILE
from .worker import Worker, now_iso

log = logging.getLogger(__name__)

#: Seconds a stopping node waits for running associations before aborting them.
ASSOCIATION_GRACE_S = 10.0


class Node:
    """A ``litseg-serve`` node built from its :class:`NodeConfig`; ``start()`` then ``stop()``."""

    def __init__(self, config: NodeConfig, segmenter: Segmenter | None = None) -> None:
        self.config = config
        self.spool = Spool(
            config.spool,
            config.max_spool_bytes,
            retain_instances_s=config.retain_instances_s,
            keep_done=config.keep_done,
            keep_done_s=config.keep_done_days * 86400,
        )
        self.queue = SeriesQueue(self.spool, config.idle_seconds, config.max_queue)
        self._segmenter = segmenter
        self._stop_receiving = threading.Event()
        self._stop_workers = threading.Event()
        self._results_ready = threading.Event()
        self._threads: list[threading.Thread] = []
        self._workers: list[threading.Thread] = []
        self._forwarder: Forwarder | None = None
        self._forward_thread: threading.Thread | None = None
        self._ae: AE | None = None
        self._server: ThreadedAssociationServer | None = None
        self._lock_file: IO[str] | None = None
        self.address: tuple[str, int] = (config.host, config.port)

    def start(self) -> None:
        """Lock and recover the spool, load the model, start listening and the threads."""
        config = self.config
        self._lock_spool()
        recovered = self.spool.open()
        if self._segmenter is None:
            self._segmenter = Segmenter(RunConfig(model=config.model, device=config.device))
        model = self._segmenter.model
        store = StoreHandler(self.spool, config.log_phi)
        self.store_handler = store
        ae = AE(ae_title=config.ae_title)
        ae.supported_contexts = supported_contexts()
        ae.maximum_associations = config.max_associations
        ae.maximum_pdu_size = config.max_pdu
        ae.require_calling_aet = list(config.allow_ae)
        ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = 60
        self._ae = ae
        for n in range(config.workers):
            worker = Worker(self._segmenter, self.spool, self.queue, config, self._results_ready)
            self._workers.append(threading.Thread(target=worker.run, args=(self._stop_workers,), name=f"worker-{n}"))
        self._threads.append(
            threading.Thread(target=self.queue.run_collector, args=(self._stop_receiving,), name="collector")
        )
        if config.forward is not None:
            scu = ScuSettings(calling_ae=config.ae_title, max_pdu=config.max_pdu)
            self._forwarder = Forwarder(
                self.spool,
                config.forward,
                scu,
                config.retry_initial_seconds,
                config.retry_max_seconds,
                self._results_ready,
            )
            self._forward_thread = threading.Thread(
                target=self._forwarder.run, args=(self._stop_workers,), name="forwarder"
            )
        server = ae.start_server((config.host, config.port), block=False, evt_handlers=event_handlers(store))
        assert server is not None  # block=False always returns the server
        self._server = server
        self.address = (config.host, int(server.server_address[1]))
        for thread in [*self._threads, *self._workers, *([self._forward_thread] if self._forward_thread else [])]:
            thread.daemon = True
            thread.start()
        # A fresh install compiles its kernels on first use (seconds): now, while the node waits
        # for its first association, not when its first series arrives. Not a daemon: a stop waits for it
        # (numba must not be torn down mid-compilation).
        threading.Thread(target=self._prepare_kernels, name="litseg-prepare").start()
        self._write_node_file(model.info.name, model.info.version, model.provider)
        log.info(
            "litseg-serve %s listening on %s:%d; model %s %s on %s; %d worker(s); spool %s (recovered: %s)",
            config.ae_title,
            *self.address,
            model.info.name,
            model.info.version,
            model.provider,
            config.workers,
            config.spool,
            ", ".join(f"{n} {state}" for state, n in recovered.items()),
        )

    def _prepare_kernels(self) -> None:
        assert self._segmenter is not None  # set in start() before this thread starts
        try:
            log.info("kernels ready (%.1f s)", self._segmenter.prepare())
        except Exception as exc:  # never fatal: a series' run compiles what it needs itself
            log.warning("kernels could not be prepared ahead of the first series: %s", exc)

    def _lock_spool(self) -> None:
        """One node per spool: two would race on the same series. The kernel drops the lock on kill -9."""
        try:
            self.config.spool.mkdir(parents=True, exist_ok=True)
            handle = open(self.config.spool / ".lock", "w")  # noqa: SIM115 (held for the node's life)
        except OSError as exc:
            raise OutputError(f"the spool {self.config.spool} is not writable: {exc}; pass a writable --spool") from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            raise OutputError(
                f"the spool {self.config.spool} is in use by another litseg-serve; give each node its own --spool"
            ) from exc
        self._lock_file = handle

    def _write_node_file(self, model_name: str, model_version: str, provider: str) -> None:
        info: dict[str, Any] = {
            "pid": os.getpid(),
            "ae_title": self.config.ae_title,
            "host": self.address[0],
            "port": self.address[1],
            "model": f"{model_name} {model_version}",
            "provider": provider,
            "started_at": now_iso(),
            "forward": str(self.config.forward) if self.config.forward else None,
            "out": str(self.config.out) if self.config.out else None,
        }
        self.spool.write_json(self.config.spool / NODE_FILE, info)

    def stop(self) -> None:
        """Stop cleanly: no new associations, finish the running series, one last delivery attempt."""
        log.info("stopping: no new associations; finishing the series being segmented")
        if self._server is not None:
            self._server.shutdown()
        deadline = time.monotonic() + ASSOCIATION_GRACE_S
        while self._ae is not None and self._ae.active_associations and time.monotonic() < deadline:
            time.sleep(0.1)
        if self._ae is not None:
            for assoc in self._ae.active_associations:
                assoc.abort()
        self._stop_receiving.set()
        self.queue.close()
        self._stop_workers.set()
        for thread in [*self._threads, *self._workers]:
            thread.join()
        if self._forward_thread is not None and self._forwarder is not None:
            self._forward_thread.join()
            self._forwarder.deliver_due(ignore_backoff=True)
        counts = {state: len(self.spool.jobs(state)) for state in ("queue", "outbox")}
        log.info("stopped; left for the next start: %d queued, %d awaiting delivery", counts["queue"], counts["outbox"])
        if self._lock_file is not None:
            self._lock_file.close()
