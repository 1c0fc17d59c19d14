"""litseg-batch: every CT series of an archive segmented on this machine or an existing Ray cluster.

Modules, in the order a run uses them: ``inputs`` (root folders searched by the DICOM reader's own
classification, manifests, NIfTI volumes: the entries and their output ids), ``ledger`` (the resume
record: one JSON line per finished series, the lock on ``--out``), ``worker`` (one loaded model segmenting
series through the runtime's public API), ``engine`` (Ray: the actor pool, back-pressure, retries of killed
workers, Ctrl-C), ``driver`` (planning, skipping, ledger appends, clean-up), ``summary`` (progress, summary
table and ``summary.json``), ``cli`` (``litseg-batch``).

Ray is imported in ``engine`` only, and only when a series is to run; the rest of the runtime never imports
this subpackage. The public API::

    run_batch(BatchOptions(inputs, out_dir, config, formats, EngineOptions(workers=4))) -> BatchResult
"""

import logging

from .driver import BatchOptions, run_batch
from .engine import EngineOptions
from .summary import BatchResult, summarize

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["BatchOptions", "BatchResult", "EngineOptions", "run_batch", "summarize"]
