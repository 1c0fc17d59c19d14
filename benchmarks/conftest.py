"""Benchmarks: fixed synthetic inputs, each stage timed next to a baseline measured in the same run.

``make bench`` times them (JSON in build/benchmarks.json, then ``python -m benchmarks.report`` prints the
table of issue 15's targets); the test command runs each once, untimed and on small inputs, so none can
rot. Compare ratios, not absolute numbers: the machines are noisy.
"""

from __future__ import annotations

import os
import platform
from typing import Any


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts() -> dict[str, Any]:
    """What the ratios depend on: CPU, cores this process may use, onnxruntime and numba."""
    facts: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }
    try:
        import onnxruntime as ort

        facts["onnxruntime"] = ort.__version__
        facts["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        facts["onnxruntime"] = None
    try:
        import numba

        facts["numba"] = numba.__version__
        facts["numba_threads"] = numba.config.NUMBA_NUM_THREADS
    except ImportError:
        facts["numba"] = None
    try:
        import cv2

        facts["opencv"] = cv2.__version__
        facts["opencv_threads"] = cv2.getNumThreads()
    except ImportError:
        facts["opencv"] = None
    return facts


def pytest_benchmark_update_machine_info(config: Any, machine_info: dict[str, Any]) -> None:
    machine_info["litseg"] = machine_facts()
