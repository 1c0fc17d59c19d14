from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from tests.factories import SeriesGeometry, SeriesOptions, make_series, write_series

from .peers import NodeProcess, StoreSCP

#: Tiny series keep the node tests fast; the liver and tumor of the phantom are inside 64x64 at 4 mm.
SMALL = SeriesGeometry(rows=64, columns=64, slices=6)


class SeriesFolder:
    """A synthetic CT series written as DICOM files, with its UIDs."""

    def __init__(self, folder: Path, datasets: list[Dataset]) -> None:
        self.folder = folder
        self.datasets = datasets
        self.series_uid = str(datasets[0].SeriesInstanceUID)
        self.sop_uids = {str(ds.SOPInstanceUID) for ds in datasets}
        self.paths = write_series(datasets, folder)


@pytest.fixture
def make_ct(tmp_path: Path) -> Callable[..., SeriesFolder]:
    counter = iter(range(10_000))

    def make(geometry: SeriesGeometry = SMALL, name: str | None = None, study_uid: str | None = None) -> SeriesFolder:
        datasets = make_series(geometry, SeriesOptions(study_uid=study_uid))
        return SeriesFolder(tmp_path / "series" / (name or f"s{next(counter)}"), datasets)

    return make


@pytest.fixture
def processes() -> Iterator[list[NodeProcess | StoreSCP]]:
    """Processes a test starts; whatever is still running at the end is killed."""
    started: list[NodeProcess | StoreSCP] = []
    yield started
    for proc in started:
        if isinstance(proc, NodeProcess):
            proc.stop_quietly()
        else:
            proc.stop()
