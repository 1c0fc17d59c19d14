"""The installed litseg version (one definition for the reports, the CLIs and the training sets)."""

from importlib import metadata


def litseg_version() -> str:
    try:
        return metadata.version("litseg")
    except metadata.PackageNotFoundError:  # running from a source tree without install
        return "0+unknown"
