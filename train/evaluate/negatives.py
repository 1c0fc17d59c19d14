"""``python -m litseg.train.evaluate.negatives``: what a model finds in scans that hold no liver.

Reads the JSON reports ``litseg-run`` wrote for phantom cases of regions without liver (head, neck,
chest, pelvis) and summarises the liver volume and tumors found: the issue's bar is at most 10 mL of
liver and no tumor in any of them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def summarise(reports: Sequence[Path], regions: Sequence[str]) -> dict[str, object]:
    """Per case and overall: liver (parenchyma plus tumor) mL and tumor count."""
    rows = []
    for path, region in zip(reports, regions, strict=True):
        report = json.loads(path.read_text())
        liver_ml = float(report["liver_volume_ml"]) + (
            0.0 if "parenchyma_volume_ml" in report else float(report["tumor_volume_ml"])
        )
        rows.append(
            {
                "report": path.parent.name,
                "region": region,
                "liver_ml": round(liver_ml, 2),
                "tumors": int(report["tumor_count"]),
            }
        )
    liver = np.array([r["liver_ml"] for r in rows], dtype=np.float64)
    tumors = np.array([r["tumors"] for r in rows], dtype=np.int64)
    return {
        "cases": len(rows),
        "regions": sorted(set(regions)),
        "liver_ml_max": float(liver.max()) if rows else float("nan"),
        "liver_ml_mean": float(liver.mean()) if rows else float("nan"),
        "cases_over_10_ml": int((liver > 10.0).sum()),
        "cases_with_tumor": int((tumors > 0).sum()),
        "tumors_total": int(tumors.sum()),
        "per_case": rows,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m litseg.train.evaluate.negatives", description=__doc__)
    parser.add_argument("reports", type=Path, nargs="+", help="report.json files of litseg-run, one per case")
    parser.add_argument(
        "--manifest",
        type=Path,
        default=None,
        help="phantom-manifest.json of the cases, in the order of the reports (names each case's region)",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    regions = ["unknown"] * len(args.reports)
    if args.manifest is not None:
        regions = [str(e.get("region", "unknown")) for e in json.loads(args.manifest.read_text())]
        if len(regions) != len(args.reports):
            parser.error(f"the manifest lists {len(regions)} cases for {len(args.reports)} reports")
    result = summarise(args.reports, regions)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "per_case"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
