"""``litseg-serve --status``: the node's state read from its spool alone (no server needed), and the
one-line summary logged per series. Neither holds patient identifiers: UIDs, counts, timings, outcomes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .spool import ERROR_FILE, SUMMARY_FILE, iter_incoming, list_jobs, read_json

#: Report timings shown in the per-series line, in pipeline order; ``model_*`` are the model stage's parts,
#: summed over its overlapped batches.
STAGES = ("read", "model_focus", "model_preprocess", "model_inference", "postprocess", "write", "send")
NODE_FILE = "node.json"


def _node_alive(pid: int) -> bool:
    """Whether ``pid`` is a running litseg-serve (not a process that reused the pid after a crash)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # no /proc (not Linux): the pid alone
        return True
    return b"litseg" in cmdline


def spool_status(root: Path, recent: int = 10) -> dict[str, Any]:
    """Counts per state and the most recent finished or failed series of the spool at ``root``."""
    root = Path(root)
    node = read_json(root / NODE_FILE)
    pid = node.get("pid")
    running = isinstance(pid, int) and _node_alive(pid)
    incoming = list(iter_incoming(root))
    done, failed, held = list_jobs(root, "done"), list_jobs(root, "failed"), list_jobs(root, "held")
    finished = sorted([(j, "done") for j in done[-recent:]] + [(j, "failed") for j in failed[-recent:]])[-recent:]
    recent_rows = []
    for job, state in reversed(finished):
        if state == "done":
            recent_rows.append(read_json(root / "done" / job / SUMMARY_FILE) or {"job": job, "state": "done"})
        else:
            error = read_json(root / "failed" / job / ERROR_FILE)
            recent_rows.append({"job": job, "state": "failed", "error": error})
    return {
        "spool": str(root),
        "node": {**node, "running": running} if node else {"running": False},
        "receiving": {"series": len(incoming), "instances": sum(n for _, n in incoming)},
        "queue_depth": len(list_jobs(root, "queue")),
        "awaiting_delivery": len(list_jobs(root, "outbox")),
        "done": len(done),
        "held": len(held),
        "failed": len(failed),
        "recent": recent_rows,
    }


def format_status(status: dict[str, Any]) -> str:
    """The human-readable ``--status`` text."""
    node = status["node"]
    where = f"{node.get('ae_title')}@{node.get('host')}:{node.get('port')}" if "port" in node else "unknown"
    state = f"running (pid {node.get('pid')}, {where})" if node.get("running") else "not running"
    lines = [
        f"spool {status['spool']}: node {state}",
        f"receiving: {status['receiving']['series']} series ({status['receiving']['instances']} instances)",
        f"queue depth: {status['queue_depth']} series",
        f"awaiting delivery: {status['awaiting_delivery']}",
        f"done: {status['done']}  held: {status.get('held', 0)}  failed: {status['failed']}",
    ]
    if status["recent"]:
        lines.append("recent series (newest first):")
        lines += [f"  {format_series_line(row)}" for row in status["recent"]]
    return "\n".join(lines)


def format_series_line(summary: dict[str, Any]) -> str:
    """One line per series: instances, seconds per stage, result, destination status."""
    uid = summary.get("series_instance_uid") or str(summary.get("job", "")).split("-", 1)[-1]
    head = f"series {uid} ({summary.get('instances', '?')} instances)"
    if summary.get("state") == "failed":
        error = summary.get("error", {})
        return (
            f"{head}: FAILED {error.get('type', 'error')} (exit {error.get('exit_code', '?')}): "
            f"{error.get('message', '')}; kept in failed/"
        )
    if summary.get("state") == "superseded":
        return f"{head}: superseded before delivery by job {summary.get('superseded_by')} (late instances)"
    timings = summary.get("timings_s", {})
    stages = ", ".join(
        f"{s.removeprefix('model_')} {timings[s]:.2f} s" for s in STAGES if isinstance(timings.get(s), int | float)
    )
    result = summary.get("result") or {}
    outcome = (
        f"liver {result.get('liver_volume_ml')} mL incl. {result.get('tumor_count')} tumor(s) "
        f"{result.get('tumor_volume_ml')} mL"
    )
    if summary.get("warnings"):
        outcome = f"CHECK: {', '.join(summary['warnings'])}; {outcome}"
    late = summary.get("late")
    if isinstance(late, dict):
        outcome += (
            f"; re-segmented for {late.get('late_instances')} late instance(s), replacing the SEG of series "
            f"{late.get('replaces_seg_series_instance_uid')}"
        )
    dest = []
    forward = summary.get("forward")
    if forward:
        dest.append(
            f"forward {forward.get('destination')} status {forward.get('status')} "
            f"after {forward.get('attempts')} attempt(s)"
        )
    if summary.get("out"):
        dest.append(f"out {summary['out']}")
    return f"{head}: {stages}; {outcome}; {'; '.join(dest) or 'no destination'}"


def main_status(spool: Path, as_json: bool = False) -> str:
    status = spool_status(spool)
    return json.dumps(status, indent=2) if as_json else format_status(status)
