"""The Makefile's set-up: the opt-in CPU index for PyTorch reaches pip, and only when asked for.

``make -n -W pyproject.toml install`` prints the install commands without running them (``-W`` makes the venv's
stamp look out of date), so this checks the commands a fresh clone would run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


#: make's own variables: under ``make test`` a child make would inherit them and print "Entering directory".
MAKE_ENV = ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PIP_EXTRA_INDEX_URL", "TORCH_INDEX", *MAKE_ENV)}


def _install_commands(*variables: str) -> list[str]:
    env = _env()
    printed = subprocess.run(
        ["make", "-n", "--no-print-directory", "-W", "pyproject.toml", "install", *variables],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [line for line in printed.splitlines() if "pip install" in line and "-c constraints.txt" in line]


def test_torch_cpu_index_is_opt_in() -> None:
    (default,) = _install_commands()
    assert "PIP_EXTRA_INDEX_URL" not in default  # pip's own configuration decides (offline here)
    (cpu,) = _install_commands("TORCH_INDEX=cpu")
    assert cpu.startswith(f'PIP_EXTRA_INDEX_URL="{CPU_INDEX}" ')
    (other,) = _install_commands("TORCH_INDEX=https://example.org/simple")
    assert other.startswith('PIP_EXTRA_INDEX_URL="https://example.org/simple" ')


def test_make_demo_ends_with_the_activation_line() -> None:
    printed = subprocess.run(
        ["make", "-n", "--no-print-directory", "demo"],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert ". .venv/bin/activate" in printed.splitlines()[-2]
    assert "/usr/bin/storescp" in printed.splitlines()[-1]
