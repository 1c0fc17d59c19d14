"""litseg-batch without Ray: finding entries, manifests, ids, the ledger's decisions and appends, --out checks,
--dry-run; and the runtime's API and CLI import and run with Ray hidden."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from litseg.runtime.api import RunConfig
from litseg.runtime.batch.cli import main as batch_main
from litseg.runtime.batch.driver import BatchOptions, run_batch
from litseg.runtime.batch.inputs import plan_inputs
from litseg.runtime.batch.ledger import Ledger, ModelIdentity, decide, exclusive
from litseg.runtime.errors import EXIT_MISSING_EXTRA, EXIT_OUTPUT, EXIT_USAGE, OutputError, UsageError
from tests.factories import SeriesGeometry, SeriesOptions, make_series, write_series

SMALL = SeriesGeometry(rows=24, columns=24, slices=4)


def test_a_root_folder_yields_every_ct_series_and_nifti_volume_and_says_what_it_left_out(tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = make_series(SMALL, SeriesOptions(series_uid="1.2.3.1"))
    second = make_series(SMALL, SeriesOptions(series_uid="1.2.3.2"))
    write_series(first, root / "a")
    write_series(second, root / "a" / "deeper")  # a folder holding another series beneath it
    (root / "a" / "notes.txt").write_text("not DICOM")
    (root / "b").mkdir()
    (root / "b" / "volume-0.nii.gz").write_bytes(b"")  # a volume is taken by name; its reader judges it
    (root / "c").mkdir()
    (root / "c" / "volume-0.nii").write_bytes(b"")  # the same name elsewhere: ids must stay unique
    mask = nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4))
    nib.save(mask, str(root / "c" / "segmentation-0.nii"))  # LiTS keeps its masks beside the volumes
    plan = plan_inputs([root])
    by_source = {Path(e.source).relative_to(root).as_posix(): e for e in plan.entries}
    assert set(by_source) == {"a", "a/deeper", "b/volume-0.nii.gz", "c/volume-0.nii"}
    assert by_source["a"].series_uid == "1.2.3.1" and by_source["a"].id == "1.2.3.1"
    assert by_source["a/deeper"].series_uid == "1.2.3.2"
    nifti_ids = {by_source["b/volume-0.nii.gz"].id, by_source["c/volume-0.nii"].id}
    assert len(nifti_ids) == 2 and all(i.startswith("volume-0-") for i in nifti_ids)
    assert plan.left_out == {"not DICOM": 1, "NIfTI mask (8-bit voxels, no rescale)": 1}
    assert plan_inputs([root]).entries == plan.entries  # the same ids on every run


def test_manifests_csv_and_jsonl_resolve_paths_and_check_ids(tmp_path: Path) -> None:
    (tmp_path / "s1").mkdir()
    (tmp_path / "m.csv").write_text("path,id\ns1,case-1\n/abs/vol.nii.gz,\n")
    (tmp_path / "m.jsonl").write_text('{"path": "s1", "id": "again"}\n\n{"path": "x.nii", "series_uid": "1.2"}\n')
    entries = plan_inputs([tmp_path / "m.csv"]).entries
    assert [(e.id, e.source) for e in entries] == [("case-1", str(tmp_path / "s1")), ("vol", "/abs/vol.nii.gz")]
    jsonl = plan_inputs([tmp_path / "m.jsonl"]).entries
    assert [e.id for e in jsonl] == ["again", "x"] and jsonl[1].series_uid == "1.2"
    # the same input twice (two manifests) runs once, under its first id
    assert [e.id for e in plan_inputs([tmp_path / "m.csv", tmp_path / "m.jsonl"]).entries] == ["case-1", "vol", "x"]
    for text, message in [
        ("path,id\na,../escape\n", "letters, digits"),
        ("path,id\na,same\nb,same\n", "same id"),
        ("file\na\n", "'path' column"),
        ("path,id\na,ledger.jsonl\n", "letters, digits"),
    ]:
        (tmp_path / "bad.csv").write_text(text)
        with pytest.raises(UsageError, match=message):
            plan_inputs([tmp_path / "bad.csv"])
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(UsageError, match="line 1 is not JSON"):
        plan_inputs([tmp_path / "bad.jsonl"])
    with pytest.raises(UsageError, match="input not found"):
        plan_inputs([tmp_path / "missing"])


MODEL = ModelIdentity("liver-tumor", "1.0", "a" * 64)
SAME = MODEL.as_dict()


@pytest.mark.parametrize(
    ("record", "flags", "run", "kind"),
    [
        (None, (False, False), True, "new"),
        ({"status": "done", "model": MODEL.as_dict()}, (True, True), False, "done"),
        ({"status": "done", "model": {**MODEL.as_dict(), "sha256": "b" * 64}}, (False, False), True, "other_model"),
        (
            {"status": "failed", "model": MODEL.as_dict(), "error": {"class": "OutputError"}},
            (False, True),
            False,
            "failed",
        ),
        ({"status": "failed", "model": MODEL.as_dict()}, (True, False), True, "retry"),
        (
            {"status": "refused", "model": MODEL.as_dict(), "error": {"class": "InputError"}},
            (True, False),
            False,
            "refused",
        ),
        ({"status": "refused", "model": MODEL.as_dict()}, (False, True), True, "retry"),
    ],
)
def test_the_ledger_decides_what_runs(record, flags, run: bool, kind: str) -> None:  # type: ignore[no-untyped-def]
    decision = decide(record, MODEL, *flags)
    assert (decision.run, decision.kind) == (run, kind)


def test_ledger_lines_later_win_and_a_torn_line_is_skipped_not_fatal(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.append({"key": "k1", "status": "failed"})
    with open(ledger.path, "a") as f:
        f.write('{"key": "k2", "sta')  # a write cut short by a crash
    ledger.append({"key": "k1", "status": "done"})
    lines = ledger.path.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2]) == {"key": "k1", "status": "done"}
    assert ledger.latest() == {"k1": {"key": "k1", "status": "done"}}


def test_one_batch_per_out_folder(tmp_path: Path) -> None:
    with exclusive(tmp_path), pytest.raises(OutputError, match="another litseg-batch"), exclusive(tmp_path):
        pass
    with exclusive(tmp_path):  # released: the next run takes it
        pass


def test_out_must_be_a_batch_folder_outside_the_inputs(tmp_path: Path, tumor_model: Path) -> None:
    write_series(make_series(SMALL), tmp_path / "root" / "a")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "thesis.docx").write_text("precious")
    args = [str(tmp_path / "root"), "--model", str(tumor_model)]
    assert batch_main([*args, "--out", str(tmp_path / "root" / "out")]) == EXIT_OUTPUT
    assert batch_main([*args, "--out", str(tmp_path / "other")]) == EXIT_OUTPUT
    assert (tmp_path / "other" / "thesis.docx").read_text() == "precious"
    assert not (tmp_path / "root" / "out").exists()
    assert batch_main([*args, "--out", str(tmp_path / "o"), "--formats", "png"]) == EXIT_OUTPUT
    with pytest.raises(SystemExit) as usage:
        batch_main([*args, "--out", str(tmp_path / "o"), "--workers", "0"])
    assert usage.value.code == EXIT_USAGE


def test_dry_run_lists_every_entry_with_its_reason_and_writes_nothing(
    tmp_path: Path, tumor_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_series(make_series(SMALL, SeriesOptions(series_uid="1.2.3.7")), tmp_path / "root" / "a")
    write_series(make_series(SMALL, SeriesOptions(series_uid="1.2.3.8")), tmp_path / "root" / "b")
    out = tmp_path / "out"
    out.mkdir()
    first = run_batch(BatchOptions((tmp_path / "root",), out, RunConfig(model=tumor_model), dry_run=True))
    assert first.model is not None and [d.kind for _, d in first.decisions] == ["new", "new"]
    record = {"key": first.decisions[0][0].key, "id": "1.2.3.7", "status": "done", "model": first.model.as_dict()}
    Ledger(out).append(record)
    (out / "1.2.3.7").mkdir()
    args = [str(tmp_path / "root"), "--out", str(out), "--model", str(tumor_model), "--dry-run"]
    assert batch_main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"skip  1.2.3.7  {tmp_path / 'root' / 'a'}  (done with this model)",
        f"run   1.2.3.8  {tmp_path / 'root' / 'b'}  (new)",
    ]
    assert sorted(p.name for p in out.iterdir()) == ["1.2.3.7", "ledger.jsonl"]
    (out / "1.2.3.7").rmdir()  # results deleted by hand: the ledger's "done" no longer holds
    assert batch_main(args) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("(done earlier, but its output folder is gone: run again)")
    assert batch_main([*args, "--limit", "1"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["run", "skip"]


def test_an_output_folder_stays_with_the_input_that_wrote_it(tmp_path: Path, tumor_model: Path) -> None:
    (tmp_path / "out").mkdir()
    Ledger(tmp_path / "out").append({"key": "/elsewhere/a", "id": "case-1", "status": "done", "model": SAME})
    (tmp_path / "in" / "b").mkdir(parents=True)
    (tmp_path / "in" / "m.csv").write_text("path,id\nb,case-1\n")
    options = BatchOptions((tmp_path / "in" / "m.csv",), tmp_path / "out", RunConfig(model=tumor_model), dry_run=True)
    with pytest.raises(UsageError, match=r"another input's results, e\.g\. 'case-1'"):
        run_batch(options)


HIDE_RAY = textwrap.dedent(
    """
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "ray":
                raise ImportError(f"{name} is hidden for this test")
    sys.meta_path.insert(0, Block())
    import litseg.runtime, litseg.runtime.api, litseg.runtime.cli, litseg.runtime.batch
    from litseg.runtime.cli import main
    code = main(sys.argv[1:])
    from litseg.runtime.batch.cli import main as batch
    batch_code = batch([sys.argv[1], "--out", sys.argv[5] + "-batch", "--model", sys.argv[3], "--quiet"])
    print("LEAKED", sorted(m for m in sys.modules if m.split(".")[0] == "ray"), "BATCH", batch_code)
    sys.exit(code)
    """
)


def test_the_runtime_and_its_cli_run_with_ray_hidden_and_the_batch_says_what_is_missing(
    tmp_path: Path, tumor_model: Path
) -> None:
    write_series(make_series(SMALL), tmp_path / "in")
    args = [str(tmp_path / "in"), "--model", str(tumor_model), "--out", str(tmp_path / "out"), "--quiet"]
    proc = subprocess.run(
        [sys.executable, "-c", HIDE_RAY, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"LEAKED [] BATCH {EXIT_MISSING_EXTRA}" in proc.stdout
    assert "pip install 'litseg[batch]'" in proc.stderr
    assert (tmp_path / "out" / "segmentation.dcm").is_file()


def test_a_worker_records_every_outcome_and_writes_what_litseg_run_writes(tmp_path: Path, tumor_model: Path) -> None:
    from litseg.runtime.batch.inputs import Entry
    from litseg.runtime.batch.worker import SeriesWorker, WorkSettings

    write_series(make_series(SMALL), tmp_path / "in" / "a")
    (tmp_path / "out").mkdir()
    worker = SeriesWorker(WorkSettings(RunConfig(model=tumor_model), None, str(tmp_path / "out")))
    assert worker.identity()["model"]["name"] == "test-intensity"
    done = worker.run(Entry("k-a", "a", str(tmp_path / "in" / "a")))
    assert done["status"] == "done" and done["exit_class"] == "ok" and done["worker"]["peak_rss_mb"] > 0
    assert sorted(p.name for p in (tmp_path / "out" / "a").iterdir()) == [
        ".litseg",  # the marker of a litseg results folder, as litseg-run writes it
        "labels.nii.gz",
        "report.json",
        "segmentation.dcm",
    ]
    missing = worker.run(Entry("k-m", "m", str(tmp_path / "in" / "missing.nii.gz")))
    assert (missing["status"], missing["error"]["class"], missing["exit_code"]) == ("refused", "InputError", 3)
    nifti = tmp_path / "in" / "v.nii.gz"
    nifti.write_bytes(b"")
    seg_worker = SeriesWorker(WorkSettings(RunConfig(model=tumor_model), ("seg",), str(tmp_path / "out")))
    refused = seg_worker.run(Entry("k-v", "v", str(nifti)))
    assert (refused["status"], refused["error"]["class"]) == ("refused", "UsageError")
    assert "need a DICOM input" in refused["error"]["message"]
    assert not (tmp_path / "out" / "m").exists() and not (tmp_path / "out" / "v").exists()


def test_workers_are_sized_to_what_the_cluster_can_place() -> None:
    from litseg.runtime.batch.engine import EngineOptions, _check_capacity
    from litseg.runtime.errors import DeviceError

    assert _check_capacity({"CPU": 16.0}, EngineOptions(threads=2)) == 8
    assert _check_capacity({"CPU": 16.0, "GPU": 2.0}, EngineOptions(gpu_share=0.25)) == 8
    assert _check_capacity({"CPU": 4.0, "GPU": 2.0}, EngineOptions(gpu_share=0.25)) == 4
    with pytest.raises(UsageError, match="ask for at most 2"):
        _check_capacity({"CPU": 2.0}, EngineOptions(workers=3))
    with pytest.raises(DeviceError, match="no GPU"):
        _check_capacity({"CPU": 8.0}, EngineOptions(gpu_share=1.0))
