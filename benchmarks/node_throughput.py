"""litseg-serve throughput and memory: 100-slice 512x512 synthetic CT series through a real node.

Not collected by pytest (it takes minutes); run it by hand::

    .venv/bin/python -m benchmarks.node_throughput [--series 4] [--workers 1] [--json build/node_throughput.json]

What it does, all on 127.0.0.1 with real processes: starts dcmtk ``storescp`` as the destination and
``litseg-serve`` with the bundled default model (``--model`` omitted), measures the node's resident memory
idle (VmRSS after start-up), sends the series with one ``storescu``, waits for every SEG, and reports
series per minute from the first C-STORE to the last SEG received, with the node's VmRSS sampled while
busy and its peak (VmHWM). Then it starts a second node with a spool limit smaller than one series and
records what the sender and the node see when the spool is full.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from tests.factories import SeriesGeometry, make_series, write_series
from tests.runtime.node.peers import NodeProcess, StoreSCP, echo, segs_by_series, send, storescu, wait_for

GEOMETRY = SeriesGeometry(rows=512, columns=512, slices=100, pixel_spacing_mm=(0.78, 0.78), slice_spacing_mm=2.5)


def proc_status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def make_series_folders(root: Path, count: int) -> list[tuple[Path, str]]:
    rng = np.random.default_rng(0)
    folders = []
    for n in range(count):
        datasets = make_series(GEOMETRY)
        for ds in datasets:  # scanner-like noise so the files are not trivially regular
            pixels = np.frombuffer(ds.PixelData, dtype=np.uint16).astype(np.int32)
            noisy = np.clip(pixels + rng.normal(0, 10, pixels.shape).round(), 0, 65535).astype(np.uint16)
            ds.PixelData = noisy.tobytes()
        folder = root / f"series{n}"
        write_series(datasets, folder)
        folders.append((folder, str(datasets[0].SeriesInstanceUID)))
    return folders


def throughput(root: Path, series: list[tuple[Path, str]], workers: int) -> dict[str, object]:
    scp = StoreSCP(root / "received").start()
    node = NodeProcess(
        root / "spool",
        ["--forward", scp.destination, "--idle-seconds", "2", "--workers", str(workers)],
        root / "node.log",
    )
    try:
        node.start(timeout=300)
        assert node.proc is not None
        pid = node.proc.pid
        time.sleep(2)
        idle_rss = proc_status_kib(pid, "VmRSS")
        samples: list[int] = []
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.5):
                try:
                    samples.append(proc_status_kib(pid, "VmRSS"))
                except (OSError, KeyError):
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.perf_counter()
        sender = storescu(node.port, [folder for folder, _ in series])
        output, _ = sender.communicate(timeout=3600)
        sent_s = time.perf_counter() - start
        assert sender.returncode == 0, output
        wanted = {uid for _, uid in series}
        wait_for(lambda: wanted <= segs_by_series(scp.folder).keys(), 3600, "every SEG", node.log)
        elapsed = time.perf_counter() - start
        done.set()
        peak = proc_status_kib(pid, "VmHWM")
        lines = [line.split(": ", 2)[-1] for line in node.log().splitlines() if "instances):" in line]
        return {
            "series": len(series),
            "slices_per_series": GEOMETRY.slices,
            "workers": workers,
            "send_seconds": round(sent_s, 1),
            "seconds_first_store_to_last_seg": round(elapsed, 1),
            "series_per_minute": round(len(series) * 60 / elapsed, 2),
            "idle_seconds_per_series_close": 2,
            "rss_idle_mib": round(idle_rss / 1024, 1),
            "rss_busy_median_mib": round(float(np.median(samples)) / 1024, 1) if samples else None,
            "rss_peak_mib": round(peak / 1024, 1),
            "series_log_lines": lines,
        }
    finally:
        node.stop_quietly()
        scp.stop()


def spool_full(root: Path, folder: Path) -> dict[str, object]:
    scp = StoreSCP(root / "received-full").start()
    args = ["--forward", scp.destination, "--idle-seconds", "2", "--max-spool-mb", "20"]
    node = NodeProcess(root / "spool-full", args, root / "full.log")
    try:
        node.start(timeout=300)
        code, output = send(node.port, [folder], extra=["--no-halt"])
        alive = echo(node.port).returncode == 0
        wait_for(lambda: any((root / "spool-full" / "failed").iterdir()), 60, "the incomplete series in failed/")
        (job,) = (root / "spool-full" / "failed").iterdir()
        wait_for(lambda: not (job / "instances").exists(), 60, "the incomplete series' instances to be dropped")
        return {
            "max_spool_mb": 20,
            "instances_sent": GEOMETRY.slices,
            "stored": output.count("Received Store Response (Success)"),
            "refused_out_of_resources": output.count("Received Store Response (Refused: OutOfResources)"),
            "storescu_exit_code": code,
            "node_answers_echo_after": alive,
            "failed_error": json.loads((job / "error.json").read_text())["message"],
            "instances_left_in_spool": sum(1 for _ in (root / "spool-full").rglob("*.dcm")),
        }
    finally:
        node.stop_quietly()
        scp.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", type=Path, default=Path("build/node_throughput.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="litseg-node-bench-") as tmp:
        root = Path(tmp)
        series = make_series_folders(root / "series", args.series)
        results = {"throughput": throughput(root, series, args.workers), "spool_full": spool_full(root, series[0][0])}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
