"""The embedding API: Segmenter in memory and shared by threads, and the docs/embedding.md example run as written."""

from __future__ import annotations

import io
import re
import threading
import urllib.error
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from litseg.runtime import RunConfig, segment
from litseg.runtime.segmenter import Segmenter
from tests.factories import SeriesGeometry, make_series, write_series

DOC = Path(__file__).resolve().parents[2] / "docs" / "embedding.md"
GEOMETRY = SeriesGeometry(rows=48, columns=48, slices=5)


@pytest.fixture(scope="module")
def segmenter(tumor_model: Path) -> Segmenter:
    return Segmenter(RunConfig(model=tumor_model, device="cpu"))


def test_segmenter_matches_segment_and_builds_the_seg_in_memory(
    segmenter: Segmenter, tumor_model: Path, tmp_path: Path
) -> None:
    datasets = make_series(GEOMETRY)
    result = segmenter(datasets)
    reference = segment(datasets, RunConfig(model=tumor_model, device="cpu"))
    assert np.array_equal(result.labels.array, reference.labels.array)
    seg = segmenter.seg_dataset(result)
    (series,) = seg.ReferencedSeriesSequence
    assert {i.ReferencedSOPInstanceUID for i in series.ReferencedInstanceSequence} == {
        ds.SOPInstanceUID for ds in datasets
    }
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_one_segmenter_serves_many_threads(segmenter: Segmenter) -> None:
    series = [make_series(GEOMETRY) for _ in range(4)]
    alone = [segmenter(s).labels.array for s in series]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda s: segmenter(s).labels.array, series * 2))
    for k, labels in enumerate(together):
        assert np.array_equal(labels, alone[k % 4])


def _doc_example() -> dict[str, Any]:
    (code,) = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    namespace: dict[str, Any] = {"__name__": "embedding_example"}
    exec(compile(code, str(DOC), "exec"), namespace)
    return namespace


def test_docs_embedding_example_serves_concurrent_requests(segmenter: Segmenter, tmp_path: Path) -> None:
    server = _doc_example()["make_server"](segmenter, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/segment"
    try:
        bodies, expected = [], []
        for n in range(3):
            datasets = make_series(GEOMETRY)
            paths = write_series(datasets, tmp_path / f"s{n}")
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as archive:
                for path in paths:
                    archive.write(path, path.name)
            bodies.append(buffer.getvalue())
            expected.append({ds.SOPInstanceUID for ds in datasets})

        def post(body: bytes) -> tuple[pydicom.Dataset, str]:
            request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/zip"})
            with urllib.request.urlopen(request, timeout=120) as response:
                return pydicom.dcmread(io.BytesIO(response.read())), response.headers["X-Litseg-Report"]

        with ThreadPoolExecutor(max_workers=3) as pool:
            answers = list(pool.map(post, bodies))
        for (seg, report), sops in zip(answers, expected, strict=True):
            (series,) = seg.ReferencedSeriesSequence
            assert {i.ReferencedSOPInstanceUID for i in series.ReferencedInstanceSequence} == sops
            assert '"tumor_count": 1' in report
        bad = urllib.request.Request(url, data=b"not a zip", headers={"Content-Type": "application/zip"})
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(bad, timeout=60)
        assert exc.value.code == 400
    finally:
        server.shutdown()
        server.server_close()
