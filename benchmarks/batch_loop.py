"""The baseline of ``bench_batch``: a plain sequential loop over ``segment()`` in one process, one model loaded
once, each series written as litseg-batch writes it. Prints JSON: model load and loop seconds, series count.

    python -m benchmarks.batch_loop OUT_DIR MODEL SERIES_FOLDER...
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from litseg.runtime import Model, RunConfig, release_pixels, segment, write_results
from litseg.runtime.pages import prefer_small_pages


def main(argv: list[str]) -> int:
    out, model_path, folders = Path(argv[0]), Path(argv[1]), argv[2:]
    prefer_small_pages()  # as litseg-run and the batch workers do
    start = time.perf_counter()
    model = Model(model_path, device="cpu")
    loaded = time.perf_counter()
    config = RunConfig(model=model_path, device="cpu")
    for n, folder in enumerate(folders):
        result = release_pixels(segment(folder, config, model=model))
        write_results(result, out / f"s{n}", overwrite=True)
    done = time.perf_counter()
    print(json.dumps({"series": len(folders), "load_s": loaded - start, "loop_s": done - loaded}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
