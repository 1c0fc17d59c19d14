"""The bad-input matrix (tests/runtime/bad_inputs.py) through ``litseg-run``'s ``main``: for every case the
exit code, one error line without a traceback, no output left behind, and the input unchanged."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from litseg.runtime import model as model_module
from litseg.runtime.cli import main
from litseg.runtime.model import NAME_METADATA_KEY, VERSION_METADATA_KEY
from litseg.runtime.onnxruntime_check import BrokenOnnxruntime
from litseg.runtime.output_folder import commit_folder
from litseg.runtime.spec import SPEC_METADATA_KEY, PreprocessSpec
from tests.factories import make_intensity_model
from tests.runtime.bad_inputs import CASES

DOC = Path(__file__).resolve().parents[2] / "docs" / "bad-input.md"


def _digest(folder: Path) -> dict[str, str]:
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def _model(kind: str, folder: Path, good: Path) -> Path:
    path = folder / f"{kind}.onnx"
    if kind == "missing":
        return path
    if kind == "junk":
        path.write_bytes(b"not an onnx model")
    elif kind == "no-metadata":
        make_intensity_model(path, PreprocessSpec(target_shape_yx=(64, 64)), metadata=False)
    elif kind == "fixed-128":  # the graph takes 128x128 only; its spec says 64x64
        proto = onnx.load(str(good))
        dims = proto.graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_value, dims[3].dim_value = 128, 128
        onnx.save(proto, str(path))
    elif kind == "two-classes":  # the graph outputs 2 channels (liver task); its metadata names 3 classes
        make_intensity_model(path, PreprocessSpec.for_task("liver", target_shape_yx=(64, 64)))
        proto = onnx.load(str(path))
        for entry in proto.metadata_props:
            if entry.key == SPEC_METADATA_KEY:
                entry.value = PreprocessSpec(target_shape_yx=(64, 64)).to_json()
        onnx.save(proto, str(path))
    elif kind == "run-fails":  # loads fine, but its Reshape to one 64x64 slice fails on a batch of 5
        graph = helper.make_graph(
            [
                helper.make_node("Reshape", ["x", "shape"], ["y"]),
                helper.make_node("Concat", ["y", "y", "y"], ["logits"], axis=1),
                helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
            ],
            "fails",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, "h", "w"])],
            [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 3, "h", "w"])],
            [helper.make_tensor("shape", TensorProto.INT64, [4], [1, 1, 64, 64])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        spec = PreprocessSpec(target_shape_yx=(64, 64))
        helper.set_model_props(
            model, {SPEC_METADATA_KEY: spec.to_json(), NAME_METADATA_KEY: "fails", VERSION_METADATA_KEY: "0"}
        )
        onnx.save(model, str(path))
    return path


def _arguments(extra: list[str], src: Path, out: Path, tmp: Path, model: Path) -> list[str]:
    args = [str(src), "--model", str(model), "--out", str(out), "--quiet"]
    for item in extra:
        if item == "@file":
            args[0] = str(sorted(p for p in src.rglob("*") if p.is_file())[0])
        elif item.startswith("@model:"):
            args[2] = str(_model(item.split(":")[1], tmp, model))
        elif item.startswith("@ort:"):  # applied by the test (the subprocess test fakes a real broken package)
            continue
        elif item.startswith("@out:"):
            kind = item.split(":")[1]
            target = {
                "same": src,
                "same-overwrite": src,
                "inside": src / "results",
                "around": tmp,
                "busy": tmp / "busy",
                "earlier": tmp / "earlier",
                "earlier-plus": tmp / "earlier",
                "file": tmp / "a-file",
                "under-file": tmp / "a-file" / "out",
            }[kind]
            if kind == "busy":
                target.mkdir()
                (target / "keep.txt").write_text("earlier results")
            if kind in ("earlier", "earlier-plus"):  # a results folder litseg wrote before (its marker)
                commit_folder(target, lambda t: (t / "report.json").write_text('{"litseg_version": "0"}'), marked=True)
                if kind == "earlier-plus":
                    (target / "notes.txt").write_text("a reader's notes beside the results")
            if kind in ("file", "under-file"):
                (tmp / "a-file").write_text("a file, not a folder")
            args[4] = str(target)
            if kind == "same-overwrite":
                args.append("--overwrite")
        else:
            args.append(item)
    return args


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_case(
    name: str,
    tmp_path: Path,
    tumor_model: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    case = CASES[name]
    src, out = tmp_path / "in", tmp_path / "out"
    extra = case.build(src)
    if "@ort:broken" in extra:  # what a half-removed onnxruntime imports as (see litseg.runtime.onnxruntime_check)
        broken = BrokenOnnxruntime(AttributeError("module 'onnxruntime' has no attribute 'InferenceSession'"))
        monkeypatch.setattr(model_module, "ort", broken)
    args = _arguments(extra, src, out, tmp_path, tumor_model)
    out = Path(args[4])
    before = _digest(src)
    leftovers_before = {p.name for p in out.parent.iterdir()} if out.parent.is_dir() else set()
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert _digest(src) == before, "the input was modified"
    assert code == case.code, captured.err
    if case.code == 0:
        report = json.loads((out / "report.json").read_text())
        assert (out / "segmentation.dcm").is_file() and report["slices"] >= 2
        return
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert lines[-1].startswith("litseg-run: error:"), captured.err
    assert case.phrase is not None and case.phrase in lines[-1], lines[-1]
    if not lines[0].startswith("usage:"):
        assert len(lines) == 1, captured.err  # one error line
    # nothing left behind: no new output folder, no temporary folders
    leftovers = {p.name for p in out.parent.iterdir()} - leftovers_before if out.parent.is_dir() else set()
    assert not {n for n in leftovers if n.startswith(".")}, leftovers
    if not out.exists() or out == src:
        return
    if name in ("out-not-empty", "out-foreign-overwrite"):
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
        assert "--overwrite" not in lines[-1].replace("even with --overwrite", "")
    if name == "out-earlier-results-plus-file":
        assert sorted(p.name for p in out.iterdir()) == [".litseg", "notes.txt", "report.json"]


def test_the_matrix_is_documented_case_by_case() -> None:
    text = DOC.read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `([a-z0-9-]+)` \| (\d+) \|", text, flags=re.MULTILINE))
    assert {name: int(code) for name, code in rows.items()} == {name: case.code for name, case in CASES.items()}
    assert len(CASES) >= 40
