"""The human summary of the GPU check's results (:mod:`benchmarks.gpu_check`): what ran, on what, and
each target met or not, in a few lines (the JSON beside it holds everything)."""

from __future__ import annotations

from typing import Any


def summary(results: dict[str, Any], target_slices_per_s: float, target_end_to_end_s: float) -> str:
    env = results.get("environment", {})
    lines = [
        f"litseg GPU check ({'DRY RUN ON THE CPU: figures mean nothing' if results['dry_run_on_cpu'] else 'GPU'})",
        f"GPU: {env.get('nvidia_smi', '?')}; PyTorch device: {env.get('torch_device', 'none')}",
        f"onnxruntime providers: {env.get('onnxruntime_providers')}",
    ]
    if env.get("note"):
        lines.append(f"NOTE: {env['note']}")
    lines.append(f"litseg runtime: {env.get('litseg_runtime', '?')}")
    for name in ("standin_model", "throughput", "end_to_end"):
        section = results.get(name, {})
        if section.get("status") != "ok":
            lines.append(f"{name}: {section.get('status')}: {section.get('reason') or section.get('error')}")
            continue
        if name == "standin_model":
            lines.append(f"PyTorch rebuild vs onnxruntime CPU: max |diff| {section.get('parity_max_abs_diff', 'n/a')}")
        elif name == "throughput":
            best = section["best"]
            met = "met" if section["target_met"] else "NOT met"
            lines.append(
                f"model throughput ({section['engine']}): best {best['slices_per_s']:.0f} slices/s ({best['mode']}, "
                f"batch {best['batch']}); target >= {target_slices_per_s:.0f}: {met}"
            )
            for provider, row in section.get("onnxruntime_cuda", {}).items():
                lines.append(f"  onnxruntime {provider}: {row}")
        else:
            size = f"{results['rows']}x{results['rows']}x{results['slices']}"
            lines.append(f"end to end {size} (segment + write_results, default outputs):")
            lines += [_end_to_end_row(key, row) for key, row in section.items() if _is_run(row)]
            lines.append(
                f"  target <= {target_end_to_end_s:.0f} s: {'met' if section.get('target_met') else 'NOT met'}"
            )
    return "\n".join(lines)


def _is_run(row: Any) -> bool:
    return isinstance(row, dict) and ("wall_s" in row or "status" in row)


def _end_to_end_row(key: str, row: dict[str, Any]) -> str:
    if "wall_s" not in row:
        return f"  {key}: {row['status']}"
    text = f"  {key}: {row['wall_s']:.2f} s"
    if row.get("model_s") is not None:
        text += f" (model {row['model_s']:.2f} s)"
    if row.get("estimate_from_cpu_run_s") is not None:
        text += f"; the CPU run with its inference swapped for this model time: {row['estimate_from_cpu_run_s']:.2f} s"
    if "dice" in row:
        dice = ", ".join(f"{name} {value:.5f}" for name, value in row["dice"].items())
        text += f"; Dice vs CPU labels: {dice} ({'agree' if row['agree'] else 'DISAGREE'})"
    stages = ", ".join(f"{k} {v:.2f}" for k, v in row.get("timings_s", {}).items())
    return f"{text}\n      stages: {stages}" if stages else text
