"""Ray, and only here: a pool of worker actors (one loaded model each) fed one series at a time.

- **Where**: without an address Ray starts on this machine with the CPUs asked for; with one, the batch
  attaches to that cluster (``ray start --head`` / ``ray start --address``) as a driver, and every node must
  see the inputs, the model and ``--out`` at the same paths (shared storage).
- **Back-pressure**: each actor has at most one series in flight and the next entry is taken from the plan
  only when an actor is free, so a 50,000-series manifest never has more than ``workers`` tasks in Ray.
- **A worker killed mid-series** (SIGKILL, OOM killer, a lost node): Ray restarts the actor (its model is
  loaded again) and retries the series on it, up to :data:`MAX_TASK_RETRIES` times; the killed attempt's
  temporary folder is never renamed into place, so no partial result appears (the driver removes it). The
  driver hears of the series once, when an attempt finishes, so it has one ledger line. A series that kills
  its worker every time is recorded as failed (``WorkerDied``) and its actor replaced.
- **Ctrl-C** on the driver: no new series is handed out, the actors are killed (their unfinished series'
  temporary folders removed by the driver), and the caller learns which series finished; a re-run does the
  rest.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import EXIT_INTERNAL, EXIT_MISSING_EXTRA, DeviceError, LitsegError, ModelError, UsageError
from .inputs import Entry
from .ledger import ModelIdentity
from .worker import SeriesWorker, WorkSettings, outcome

log = logging.getLogger(__name__)

#: Attempts after the first for a series whose worker process died under it.
MAX_TASK_RETRIES = 2
#: How long the driver waits for killed actors' series to settle after Ctrl-C (s).
SETTLE_S = 10.0
#: ray.wait's timeout (s): how often the driver wakes to notice a Ctrl-C when nothing finishes.
POLL_S = 0.5
#: A series still running after this long is stopped (s): far beyond a 1000-slice series on a slow CPU.
DEFAULT_SERIES_TIMEOUT_S = 3600.0
#: Object store for a Ray this batch starts itself: only small records travel through it.
LOCAL_OBJECT_STORE_BYTES = 128 << 20

OnStart = Callable[[Entry, dict[str, Any]], None]
OnDone = Callable[[Entry, dict[str, Any]], None]


@dataclass(frozen=True)
class EngineOptions:
    """Where and how wide to run: ``workers`` actors (``None``: every CPU of the cluster, by ``threads``), each
    with ``threads`` CPUs and ``gpu_share`` of a GPU (0 on the CPU); ``ray_address`` of a cluster or ``None``
    for a local Ray; ``series_timeout_s``: a series still running after this long has its worker stopped and
    is recorded as failed (``SeriesTimeout``; a read hanging on a stalled file server), ``None`` waits for
    ever; ``verbose`` forwards the workers' logs to the driver's terminal."""

    workers: int | None = None
    threads: int = 1
    gpu_share: float = 0.0
    ray_address: str | None = None
    series_timeout_s: float | None = DEFAULT_SERIES_TIMEOUT_S
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.series_timeout_s is not None and not self.series_timeout_s > 0:
            raise ValueError(f"series_timeout_s must be > 0 (or None); got {self.series_timeout_s}")


class RayMissingError(LitsegError):
    """Ray, an optional extra, is not installed where the batch runs."""

    exit_code = EXIT_MISSING_EXTRA


def _connect(options: EngineOptions) -> tuple[Any, bool]:
    """Ray, connected; True when this call started it (and must shut it down)."""
    try:
        import ray
    except ImportError as exc:
        raise RayMissingError(f"Ray is not installed ({exc}); pip install 'litseg[batch]'") from None

    if ray.is_initialized():  # an embedding program (or a test) started it: use it as it is
        return ray, False
    common: dict[str, Any] = {"log_to_driver": options.verbose, "logging_level": logging.WARNING}
    # ray.init puts its own SIGTERM handler in place, which ends the process at once (no summary, a killed
    # write's temporary folder left behind): the caller's handler (litseg-batch's stops as Ctrl-C does) is
    # put back.
    on_term = signal.getsignal(signal.SIGTERM)
    if options.ray_address:
        ray.init(address=options.ray_address, **common)
    else:
        cpus = (options.workers or os.cpu_count() or 1) * options.threads
        ray.init(num_cpus=cpus, include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE_BYTES, **common)
    if threading.current_thread() is threading.main_thread() and on_term is not None:
        signal.signal(signal.SIGTERM, on_term)
    return ray, True


class _Pool:
    """The actors, each idle or busy with one series."""

    def __init__(self, ray: Any, settings: WorkSettings, options: EngineOptions, model: ModelIdentity) -> None:
        self.ray = ray
        self.model = model
        self.actor_class = ray.remote(
            num_cpus=options.threads,
            num_gpus=options.gpu_share,
            max_restarts=-1,
            max_task_retries=MAX_TASK_RETRIES,
        )(SeriesWorker)
        self.settings = settings
        workers = _check_capacity(ray.cluster_resources(), options)
        self.actors = [self.actor_class.remote(settings) for _ in range(workers)]
        self.identities = [self._identity(actor) for actor in self.actors]

    def _identity(self, actor: Any) -> dict[str, Any]:
        """The actor's identity once its model is loaded; its model must be the driver's, byte for byte."""
        try:
            identity: dict[str, Any] = self.ray.get(actor.identity.remote())
        except self.ray.exceptions.RayActorError as exc:
            raise ModelError(f"a batch worker could not start: {' '.join(str(exc).split())[:500]}") from exc
        if "error" in identity:
            error_class = DeviceError if identity["error"]["class"] == "DeviceError" else ModelError
            message = identity["error"]["message"]
            raise error_class(f"a worker on {identity['host']} could not load the model: {message}")
        if identity["model"]["sha256"] != self.model.sha256:
            raise ModelError(
                f"the model a worker on {identity['host']} loaded has sha256 {identity['model']['sha256'][:12]}..., "
                f"the driver's {self.model.sha256[:12]}...: every node must see the same model file at the same path"
            )
        return identity

    def replace(self, index: int) -> None:
        """A fresh actor for one whose series failed with its process (it may be restarting forever)."""
        self.ray.kill(self.actors[index], no_restart=True)
        self.actors[index] = self.actor_class.remote(self.settings)
        self.identities[index] = self._identity(self.actors[index])

    def kill_all(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)


def _check_capacity(resources: dict[str, float], options: EngineOptions) -> int:
    """How many workers to start; more than the cluster can ever place would wait for ever, so it is refused."""
    cpus, gpus = float(resources.get("CPU", 0.0)), float(resources.get("GPU", 0.0))
    if options.gpu_share > 0 and gpus == 0:
        raise DeviceError("--device gpu was asked for but the Ray cluster has no GPU; use --device cpu or GPU nodes")
    fit = int(cpus // options.threads)
    if options.gpu_share > 0:
        fit = min(fit, int(gpus / options.gpu_share + 1e-9))
    workers = options.workers or fit
    if workers < 1 or workers > fit:
        gpu = f" and {gpus:g} GPU(s) ({options.gpu_share:g} each)" if options.gpu_share > 0 else ""
        raise UsageError(
            f"{workers} worker(s) of {options.threads} CPU(s) each do not fit the Ray cluster's {cpus:g} CPU(s)"
            f"{gpu}; ask for at most {fit} (--workers, --threads-per-worker, --gpu-share)"
        )
    return workers


def _died(ray: Any, entry: Entry, exc: Exception) -> dict[str, Any]:
    name = "WorkerDied" if isinstance(exc, ray.exceptions.RayActorError) else type(exc).__name__
    message = " ".join(str(exc).split())[:1000]
    return outcome(
        entry,
        "failed",
        EXIT_INTERNAL,
        error={"class": name, "message": f"the worker process ended {MAX_TASK_RETRIES + 1} times under it: {message}"},
    )


def run_entries(
    entries: Iterable[Entry],
    settings: WorkSettings,
    options: EngineOptions,
    model: ModelIdentity,
    on_start: OnStart,
    on_done: OnDone,
) -> bool:
    """Segment every entry on the pool; ``on_done`` gets each entry's one record as it finishes.

    Returns
    -------
    bool
        True when Ctrl-C stopped the run (entries not passed to ``on_done`` did not finish).
    """
    ray, started = _connect(options)
    try:
        pool = _Pool(ray, settings, options, model)
        return _feed(ray, pool, iter(entries), options.series_timeout_s, on_start, on_done)
    finally:
        if started:
            ray.shutdown()


def _timed_out(entry: Entry, seconds: float) -> dict[str, Any]:
    return outcome(
        entry,
        "failed",
        EXIT_INTERNAL,
        error={
            "class": "SeriesTimeout",
            "message": f"still running after {seconds:g} s (--series-timeout): its worker was stopped",
        },
        seconds=round(seconds, 3),
    )


def _wait_s(in_flight: dict[Any, tuple[Entry, int, float]], timeout_s: float | None) -> float:
    """How long the driver may wait for a result: :data:`POLL_S`, or less when a series' time runs out
    sooner (so that a short --series-timeout is enforced when it is due, not at the next poll)."""
    if timeout_s is None or not in_flight:
        return POLL_S
    due = min(since for _, _, since in in_flight.values()) + timeout_s - time.monotonic()
    return min(POLL_S, max(due, 0.0))


def _feed(
    ray: Any, pool: _Pool, pending: Iterator[Entry], timeout_s: float | None, on_start: OnStart, on_done: OnDone
) -> bool:
    idle = list(range(len(pool.actors)))
    in_flight: dict[Any, tuple[Entry, int, float]] = {}
    try:
        while True:
            while idle:
                entry = next(pending, None)
                if entry is None:
                    break
                index = idle.pop()
                in_flight[pool.actors[index].run.remote(entry)] = (entry, index, time.monotonic())
                on_start(entry, pool.identities[index])
            if not in_flight:
                return False
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=_wait_s(in_flight, timeout_s))
            for ref in ready:
                entry, index, _ = in_flight.pop(ref)
                try:
                    record: dict[str, Any] = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    record = _died(ray, entry, exc)
                    pool.replace(index)
                on_done(entry, record)
                idle.append(index)
            now = time.monotonic()
            for ref, (entry, index, since) in list(in_flight.items()):
                if timeout_s is not None and now - since > timeout_s:
                    del in_flight[ref]  # its result, if it ever comes, is not waited for
                    pool.replace(index)  # stops the worker mid-series: its temporary folder never moves
                    on_done(entry, _timed_out(entry, now - since))
                    idle.append(index)
    except KeyboardInterrupt:
        log.warning("interrupted: stopping the workers; %d series in flight will run again next time", len(in_flight))
        pool.kill_all()
        if in_flight:  # let the killed tasks settle, so that no worker still writes when the driver cleans up
            ray.wait(list(in_flight), num_returns=len(in_flight), timeout=SETTLE_S)
        return True
