"""Errors raised by litseg, chosen by what the caller can do about them.

Every error carries the process exit code the CLI returns for it, so a PACS script can tell a bad
series (fix the input) from a bad model (fix the install) without parsing messages.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_MODEL = 4
EXIT_DEVICE = 5
EXIT_OUTPUT = 6
#: A console script of an optional part (training, export) runs without that extra installed.
EXIT_MISSING_EXTRA = 7
EXIT_INTERNAL = 70
#: Interrupted (Ctrl-C, SIGINT): 128 + 2, as shells report it.
EXIT_INTERRUPTED = 130


class LitsegError(Exception):
    """Base of every error litseg raises on purpose.

    ``cli_message`` is the same message in the words of the command line where the fix is a flag (an API
    caller reads ``overwrite=True`` and ``out_dir``, a ``litseg-run`` user ``--overwrite`` and ``--out``).
    """

    exit_code: int = EXIT_INTERNAL

    def __init__(self, message: str = "", cli_message: str | None = None) -> None:
        super().__init__(message)
        self.cli_message = cli_message if cli_message is not None else message


class UsageError(LitsegError):
    """The call itself is wrong (e.g. an output folder that overlaps the input); fix the arguments."""

    exit_code = EXIT_USAGE


class InputError(LitsegError):
    """The input series (or other input data) cannot be used as given; the user must fix the input."""

    exit_code = EXIT_BAD_INPUT


class ModelError(LitsegError):
    """The model file is missing, unreadable, or lacks the metadata litseg needs."""

    exit_code = EXIT_MODEL


class DeviceError(LitsegError):
    """The requested compute device cannot be used."""

    exit_code = EXIT_DEVICE


class OutputError(LitsegError):
    """The results cannot be written where asked."""

    exit_code = EXIT_OUTPUT
