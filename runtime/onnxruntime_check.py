"""onnxruntime, imported once and checked: a broken install becomes a :class:`ModelError`, not a traceback.

``onnxruntime`` and ``onnxruntime-gpu`` are two distributions of one import package: installed together they
overwrite each other's files, and removing one (``pip uninstall onnxruntime`` beside the GPU build) deletes
files the other needs. Python then imports a half package (a namespace package without ``InferenceSession``)
or fails inside its native module. :data:`onnxruntime` is the real module when it imports whole, else a
stand-in whose every attribute raises :class:`ModelError` (exit 4) naming the installed distributions and
the commands that repair them; the runtime's other modules import onnxruntime only from here.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from typing import TYPE_CHECKING, Any, NoReturn

from .errors import ModelError

#: Distributions that provide the ``onnxruntime`` import package.
DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino", "ort-nightly")
#: What the runtime uses of it; one missing means a partial install.
REQUIRED = ("InferenceSession", "SessionOptions", "GraphOptimizationLevel", "get_available_providers")


def installed_distributions() -> dict[str, str]:
    """Installed distributions of the ``onnxruntime`` package, name -> version."""
    found = {}
    for name in DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def wanted_distribution() -> str:
    """The one litseg depends on here (pyproject.toml): the GPU build on Linux x86-64, else the CPU build."""
    linux_x86 = sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")
    return "onnxruntime-gpu" if linux_x86 else "onnxruntime"


def broken_install_message(exc: BaseException) -> str:
    """One line: what failed, which distributions are installed, and the commands that repair them."""
    found = installed_distributions()
    listed = ", ".join(f"{n} {v}" for n, v in found.items()) or "none"
    doubled = " (several at once: they overwrite each other's files)" if len(found) > 1 else ""
    wanted = wanted_distribution()
    remove = " ".join(found) or wanted
    return (
        f"onnxruntime is installed but broken ({type(exc).__name__}: {exc}); installed: {listed}{doubled}; "
        f"reinstall exactly one: pip uninstall -y {remove} && pip install --force-reinstall {wanted}"
    )


class BrokenOnnxruntime:
    """Stands in for a broken onnxruntime: any use raises :class:`ModelError` with the repair."""

    def __init__(self, exc: BaseException) -> None:
        self._message = broken_install_message(exc)

    def __getattr__(self, name: str) -> NoReturn:
        raise ModelError(self._message)


def load(module_name: str = "onnxruntime") -> Any:
    """Import ``module_name`` and check that it is whole; a :class:`BrokenOnnxruntime` when it is not."""
    try:
        module = __import__(module_name)
        missing = [name for name in REQUIRED if not hasattr(module, name)]
        if missing:
            raise AttributeError(f"module {module_name!r} has no attribute {missing[0]!r} (a partial install)")
    except (ImportError, AttributeError, OSError, RuntimeError) as exc:  # OSError: a native library
        return BrokenOnnxruntime(exc)
    return module


if TYPE_CHECKING:
    import onnxruntime as onnxruntime  # re-exported: the runtime's one import of it
else:
    onnxruntime = load()
