"""Issue 15's targets from a pytest-benchmark JSON: ``python -m benchmarks.report build/benchmarks.json``.

Prints the machine, one row per target (measured figures, their ratio, the goal, met or not) and the
per-stage times of every end-to-end run. End-to-end figures come from each run's ``extra_info`` (one run
each, start-up included); stage benchmarks use the minimum over rounds, the figure least disturbed by a
shared, noisy machine. ``--strict`` exits 1 when a target present in the file is missed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PREPROCESS_GROUP = "preprocess 64x512x512 (mirrored)"
NUMBA_PREPROCESS = "test_bench_preprocess_full"
MiB = 1024 * 1024


@dataclass(frozen=True)
class Target:
    """One row: ``ratio = numerator / denominator`` against ``goal`` (``<=`` or ``>=``)."""

    name: str
    numerator: str
    denominator: str
    ratio: float
    goal: str

    @property
    def met(self) -> bool:
        op, bound = self.goal.split()
        return self.ratio <= float(bound) if op == "<=" else self.ratio >= float(bound)


def _inference_s(timings: dict[str, float]) -> float | None:
    values = [v for k, v in timings.items() if "infer" in k]
    return sum(values) if values else None


def end_to_end_runs(data: dict[str, Any]) -> dict[tuple[int, str], dict[str, Any]]:
    """``(slices, variant) -> extra_info`` of every end-to-end benchmark in the file."""
    runs = {}
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if "variant" in info and "wall_s" in info:
            runs[(int(info["slices"]), str(info["variant"]))] = info
    return runs


def _stat_min(data: dict[str, Any], group: str, prefix: str) -> float | None:
    for bench in data.get("benchmarks", []):
        if bench.get("group") == group and str(bench.get("name", "")).startswith(prefix):
            return float(bench["stats"]["min"])
    return None


def end_to_end_targets(runs: dict[tuple[int, str], dict[str, Any]]) -> list[Target]:
    targets = []
    for slices in sorted({s for s, _ in runs}):
        naive = runs.get((slices, "naive"))
        for variant in ("litseg", "litseg --no-tta"):
            run = runs.get((slices, variant))
            if run is None:
                continue
            wall = float(run["wall_s"])
            tag = f"512x512x{slices} {variant}"
            if naive is not None:
                targets.append(
                    Target(
                        f"{tag}: wall / naive script",
                        f"{wall:.2f} s",
                        f"{naive['wall_s']:.2f} s",
                        wall / float(naive["wall_s"]),
                        "<= 0.6",
                    )
                )
            inference = _inference_s(run.get("timings_s", {}))
            if inference:
                targets.append(
                    Target(
                        f"{tag}: wall outside inference / inference",
                        f"{wall - inference:.2f} s",
                        f"{inference:.2f} s",
                        (wall - inference) / inference,
                        "<= 0.15",
                    )
                )
            peak = max(int(run["peak_rss_bytes"]), int(run.get("tree_peak_rss_bytes", 0)))
            budget = int(run["rss_budget_bytes"])
            targets.append(
                Target(
                    f"{tag}: peak RSS / (3x int16 + model)",
                    f"{peak / MiB:.0f} MiB",
                    f"{budget / MiB:.0f} MiB",
                    peak / budget,
                    "<= 1.0",
                )
            )
    return targets


def preprocess_targets(data: dict[str, Any]) -> list[Target]:
    numba = _stat_min(data, PREPROCESS_GROUP, NUMBA_PREPROCESS)
    if numba is None:
        return []
    rows = []
    for label, prefix, goal, numba_first in (
        ("scipy.ndimage.zoom / numba", "test_bench_preprocess_scipy_zoom", ">= 20", False),
        ("OpenCV INTER_AREA / numba", "test_bench_preprocess_opencv_area", ">= 1.2", False),
        ("OpenCV INTER_LINEAR / numba", "test_bench_preprocess_opencv_linear", ">= 1.2", False),
        ("numba / memory copy", "test_bench_preprocess_memcopy", "<= 1.5", True),
    ):
        other = _stat_min(data, PREPROCESS_GROUP, prefix)
        if other is None:
            continue
        num, den = (numba, other) if numba_first else (other, numba)
        rows.append(Target(f"preprocess: {label}", f"{num * 1e3:.1f} ms", f"{den * 1e3:.1f} ms", num / den, goal))
    return rows


def read_targets(data: dict[str, Any]) -> list[Target]:
    """Decoding in parallel (issue 15: "decode slices in parallel ... measure"): the reader on a JPEG-LS series,
    and on an uncompressed one from a cold page cache (the reader asks the kernel for every file ahead), against
    a bare pydicom loop with pydicom's default decoders. (Uncompressed from the page cache, the reader's checks
    and header copies weigh as much as reading: its group in the JSON, no target.)"""
    rows = []
    for group, prefix, label in (
        ("read 64x512x512 JPEG-LS series", "test_bench_read_jpegls", "JPEG-LS"),
        ("read 64x512x512 series, cold page cache", "test_bench_read_cold", "uncompressed, cold page cache"),
    ):
        ours = _stat_min(data, group, f"{prefix}_series")
        bare = _stat_min(data, group, f"{prefix}_bare_pydicom")
        if ours is not None and bare is not None:
            name = f"read 64 slices, {label}: bare pydicom / litseg"
            rows.append(Target(name, f"{bare * 1e3:.0f} ms", f"{ours * 1e3:.0f} ms", bare / ours, ">= 1.0"))
    return rows


def machine_line(data: dict[str, Any]) -> str:
    info = data.get("machine_info", {})
    facts = info.get("litseg", {})
    cpu = facts.get("cpu_model") or info.get("cpu", {}).get("brand_raw") or info.get("processor", "?")
    cores = facts.get("cpus_usable") or info.get("cpu", {}).get("count", "?")
    ort = facts.get("onnxruntime")
    providers = ", ".join(facts.get("onnxruntime_providers", [])) or "?"
    return (
        f"machine: {cpu}, {cores} usable cores (of {facts.get('cpu_count', '?')}), python "
        f"{info.get('python_version', '?')}; onnxruntime {ort} [{providers}]; numba {facts.get('numba')} "
        f"({facts.get('numba_threads')} threads); opencv {facts.get('opencv')}; run {data.get('datetime', '?')}"
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def stage_table(runs: dict[tuple[int, str], dict[str, Any]]) -> str:
    stages: list[str] = []
    for info in runs.values():
        stages += [k for k in info.get("timings_s", {}) if k not in stages]
    rows = []
    for (slices, variant), info in sorted(runs.items()):
        timings = info.get("timings_s", {})
        rows.append(
            [
                f"512x512x{slices}",
                variant,
                f"{info['wall_s']:.2f}",
                f"{info['peak_rss_bytes'] / MiB:.0f}",
                f"{info.get('tree_peak_rss_bytes', 0) / MiB:.0f}",
            ]
            + [f"{timings[s]:.2f}" if s in timings else "" for s in stages]
        )
    return _table(["series", "run", "wall s", "peak RSS MiB", "tree RSS MiB", *stages], rows)


def render(data: dict[str, Any], source: str) -> tuple[str, list[Target]]:
    runs = end_to_end_runs(data)
    targets = end_to_end_targets(runs) + preprocess_targets(data) + read_targets(data)
    parts = [f"litseg benchmarks ({source})", machine_line(data), ""]
    rows = [[t.name, t.numerator, t.denominator, f"{t.ratio:.2f}", t.goal, "yes" if t.met else "NO"] for t in targets]
    parts.append(_table(["target (issue 15)", "measured", "against", "ratio", "goal", "met"], rows))
    if runs:
        parts += ["", "end-to-end runs (one each, start-up included; seconds per stage from the JSON report):"]
        parts.append(stage_table(runs))
    if not targets:
        parts.append("(no end-to-end or preprocessing benchmarks in this file: run `make bench`)")
    return "\n".join(parts), targets


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n")[0])
    parser.add_argument("json", type=Path, nargs="?", default=Path("build/benchmarks.json"))
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    try:
        data = json.loads(args.json.read_text())
    except (OSError, ValueError) as exc:
        print(f"benchmarks.report: error: cannot read {args.json}: {exc}", file=sys.stderr)
        return 3
    text, targets = render(data, str(args.json))
    print(text)
    return 1 if args.strict and not all(t.met for t in targets) else 0


if __name__ == "__main__":
    sys.exit(main())
