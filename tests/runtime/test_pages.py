"""The command-line tools turn numpy's huge-page advice off for their own process, unless the user chose."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

MULTIARRAY = "try:\n    from numpy._core import multiarray\nexcept ImportError:\n    from numpy.core import multiarray"
# Prints the advice in force after the tool's main() ran (numpy's setter returns the previous value).
PROBE = """
import sys
{multiarray}
from litseg.runtime.{module} import main
try:
    main(["--version"])
except SystemExit:
    pass
print(multiarray._set_madvise_hugepage(True))
"""


def _advice_after(probe: str, env: str | None) -> str:
    """Run ``probe`` (ending in printing the advice) in a fresh interpreter with ``NUMPY_MADVISE_HUGEPAGE``
    set to ``env`` (None: unset); the advice it printed."""
    environ = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    if env is not None:
        environ["NUMPY_MADVISE_HUGEPAGE"] = env
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=environ, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("module", ["cli", "node.cli"])
@pytest.mark.parametrize(("env", "expected"), [(None, "False"), ("1", "True"), ("0", "False")])
def test_cli_turns_huge_pages_off_unless_the_environment_says(module: str, env: str | None, expected: str) -> None:
    assert _advice_after(PROBE.format(module=module, multiarray=MULTIARRAY), env) == expected


def test_the_library_leaves_an_embedding_process_alone() -> None:
    probe = f"{MULTIARRAY}\nimport litseg.runtime\nprint(multiarray._set_madvise_hugepage(True))"
    assert _advice_after(probe, None) == "True"  # numpy's default, untouched by importing litseg
