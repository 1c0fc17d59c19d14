"""How a litseg process asks the kernel for memory: small pages unless the user says otherwise.

numpy advises the kernel to back every large array with transparent huge pages (``MADV_HUGEPAGE``;
``NUMPY_MADVISE_HUGEPAGE``). A 2 MB page must be found whole and zeroed at the first touch; where free
memory is fragmented (a long-running node beside a full page cache, with THP ``defrag`` = ``madvise``, the
default of common distributions) the kernel compacts memory first, and in a VM whose free memory the
host reclaims (free page reporting hands back whole 2 MB blocks) every huge page is a fresh host
allocation. On a small VM that zeroing cost seconds of kernel time (``clear_page``) per large series
(docs/performance.md), and litseg's kernels stream through their arrays once, where huge pages save little.
The command-line tools therefore turn the advice off for their own process; an explicit
``NUMPY_MADVISE_HUGEPAGE`` in the environment is respected, and the library never changes the setting of a
process that embeds it (call :func:`prefer_small_pages` there to opt in).
"""

from __future__ import annotations

import importlib
import logging
import os

log = logging.getLogger(__name__)

ENV = "NUMPY_MADVISE_HUGEPAGE"


def prefer_small_pages() -> bool:
    """Turn numpy's huge-page advice off for this process unless ``NUMPY_MADVISE_HUGEPAGE`` is set.

    Returns whether it was turned off (False: the user chose through the environment, or this numpy has
    no such switch).
    """
    if os.environ.get(ENV, "").strip():
        return False
    for name in ("numpy._core.multiarray", "numpy.core.multiarray"):  # numpy 2, numpy 1
        try:
            setter = getattr(importlib.import_module(name), "_set_madvise_hugepage", None)
        except ImportError:
            continue
        if setter is not None:
            setter(False)
            log.debug("numpy's huge-page advice off (%s unset)", ENV)
            return True
    return False
