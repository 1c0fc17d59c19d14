"""Console-script entry points of the training and export tools that say which extra is missing.

``pip install litseg`` installs the runtime only, yet every console script is installed. Importing
``litseg.train.fit.trainer`` without PyTorch would end in an ImportError traceback; these launchers import the
tool lazily and, when a package of its extra is missing, print the install command and exit with
:data:`EXIT_MISSING_EXTRA`. Nothing heavy is imported here.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

from litseg.runtime.errors import EXIT_MISSING_EXTRA

#: Import names of the packages the ``train`` extra brings (pyproject.toml).
TRAIN_EXTRA_MODULES = frozenset({"torch", "onnx", "h5py", "scipy", "PIL", "tqdm"})


def _launch(prog: str, module: str, argv: Sequence[str] | None) -> int:
    try:
        main: Callable[[Sequence[str] | None], int] = importlib.import_module(module).main
    except ModuleNotFoundError as exc:
        root = (exc.name or "").split(".")[0]
        if root not in TRAIN_EXTRA_MODULES:
            raise
        print(
            f"{prog}: error: this tool needs the 'train' extra (missing Python package {root!r}); install it with "
            "pip install 'litseg[train]' (PyTorch's CPU build: see the README)",
            file=sys.stderr,
        )
        return EXIT_MISSING_EXTRA
    return main(argv)


def train(argv: Sequence[str] | None = None) -> int:
    return _launch("litseg-train", "litseg.train.fit.trainer", argv)


def prepare(argv: Sequence[str] | None = None) -> int:
    return _launch("litseg-prepare", "litseg.train.data.prepare", argv)


def phantom(argv: Sequence[str] | None = None) -> int:
    return _launch("litseg-phantom", "litseg.train.phantom.case", argv)


def evaluate(argv: Sequence[str] | None = None) -> int:
    return _launch("litseg-eval", "litseg.train.evaluate.metrics", argv)


def export(argv: Sequence[str] | None = None) -> int:
    return _launch("litseg-export", "litseg.export.cli", argv)


def prepare_real(argv: Sequence[str] | None = None) -> int:
    return _launch("litseg-prepare-real", "litseg.train.data.prepare_real", argv)


def eval_slices(argv: Sequence[str] | None = None) -> int:
    return _launch("litseg-eval-slices", "litseg.train.evaluate.slices", argv)
