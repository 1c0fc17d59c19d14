"""The console scripts' entry points: Ctrl-C at any moment gives one line and exit 130, never a traceback.

``litseg-run`` spends its first seconds importing numba, onnxruntime and highdicom; a KeyboardInterrupt
there (or while parsing flags, or after the results were written) would end in a traceback of dozens of
lines. These launchers import the command inside a guard: this module and the package's ``__init__`` load
nothing heavy (the package's public names are imported on first use). What the commands catch themselves
stays theirs (``litseg-run`` says "nothing was written" when it is interrupted before its results moved
into place; ``litseg-serve`` stops cleanly on SIGINT once it runs).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from typing import NoReturn

from .errors import EXIT_INTERRUPTED


def _interrupted(prog: str) -> NoReturn:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the goodbye
    try:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
    finally:
        # no interpreter teardown: threads (pixel decoders, a kernel compiling) may still run
        os._exit(EXIT_INTERRUPTED)


def _launch(prog: str, module: str, function: str) -> NoReturn:
    try:
        command = getattr(importlib.import_module(module), function)
        code = command()
    except KeyboardInterrupt:
        _interrupted(prog)
    sys.exit(code)


def litseg_run() -> NoReturn:
    """``litseg-run`` (:func:`litseg.runtime.cli.entry`)."""
    _launch("litseg-run", "litseg.runtime.cli", "entry")


def litseg_serve() -> NoReturn:
    """``litseg-serve`` (:func:`litseg.runtime.node.cli.main`)."""
    _launch("litseg-serve", "litseg.runtime.node.cli", "main")
