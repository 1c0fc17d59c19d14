"""Losses, safe checkpoints, train -> export -> run end to end, and DDP on CPU with 2 processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from litseg.export.cli import main as export_main
from litseg.runtime import Model, RunConfig, segment
from litseg.train.data.prepare import PrepareConfig, prepare
from litseg.train.evaluate.metrics import main as eval_main
from litseg.train.evaluate.model_card import card, case_order, hardware
from litseg.train.fit.dataset import Crop
from litseg.train.fit.losses import class_weights, compute_loss, weighted_bce, weighted_dice
from litseg.train.fit.trainer import (
    EpochPlan,
    TrainConfig,
    autocast_dtype,
    init_from,
    load_checkpoint,
    scheduled_lr,
    train,
    write_logs,
)
from litseg.train.fit.unet import UNet
from litseg.train.phantom.case import PhantomOptions, generate_case, write_case


def test_unet_matches_the_seed_diagram() -> None:
    model = UNet(num_classes=3, base=64)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(31.03e6, rel=1e-3)
    small = UNet(num_classes=2, base=4)
    out = small(torch.rand(2, 1, 64, 64))
    assert out.shape == (2, 2, 64, 64)
    torch.testing.assert_close(out.sum(1), torch.ones(2, 64, 64))


def test_class_weights_follow_class_balance() -> None:
    w = class_weights([1000, 100, 10], max_ratio=1000)
    assert w[0] < w[1] < w[2]
    assert float(w[1] / w[0]) == pytest.approx(10.0)
    assert float(class_weights([1000, 1], max_ratio=50)[1] / class_weights([1000, 1], max_ratio=50)[0]) == 50
    with pytest.raises(ValueError, match="positive"):
        class_weights([10, 0])


def test_losses_reward_correct_predictions() -> None:
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, 2:6, 2:6] = 1
    good = torch.stack([(target == 0).float(), (target == 1).float()], 1) * 10
    bad = good.flip(1)
    w = torch.tensor([0.5, 1.5])
    for name in ("bce", "ce", "dice", "bce+dice", "ce+dice"):
        assert compute_loss(name, good, target, w) < compute_loss(name, bad, target, w), name
    assert weighted_dice(good, target, w) < 0.01
    with pytest.raises(ValueError, match="2 classes"):
        weighted_bce(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long), torch.ones(3))


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tinylits")
    for n in range(3):
        write_case(generate_case(40 + n, PhantomOptions(slices=12, rows=96, tumors=2)), folder, n)
    config = PrepareConfig(folder, folder / "set.h5", "liver-tumor", empty_fraction=0.2)
    from litseg.runtime.spec import PreprocessSpec

    config = PrepareConfig(
        folder,
        folder / "set.h5",
        "liver-tumor",
        0.2,
        spec=PreprocessSpec.for_task("liver-tumor", target_shape_yx=(64, 64)),
    )
    return prepare(config)


def _tiny_config(data: Path, out: Path, **overrides: object) -> TrainConfig:
    """A few steps of a base-4 U-Net: enough to exercise every part of training."""
    settings: dict[str, object] = {"epochs": 2, "batch_size": 4, "base": 4, "slices_per_epoch": 8, "val_fraction": 0.34}
    settings.update(overrides)
    return TrainConfig(str(data), str(out), **settings)  # type: ignore[arg-type]


def test_train_export_run_end_to_end(tiny_set: Path, tmp_path: Path) -> None:
    config = _tiny_config(tiny_set, tmp_path / "run")
    best = train(config)
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert [r["epoch"] for r in log] == [1, 2]
    assert {"val_dice_liver", "val_dice_tumor", "train_loss"} <= set(log[0])
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0
    ckpt = load_checkpoint(best)
    assert ckpt.spec.target_shape_yx == (64, 64) and ckpt.model.base == 4
    # resume continues from the last epoch
    resumed = TrainConfig(**{**config.__dict__, "epochs": 3, "resume": str(tmp_path / "run" / "checkpoint-last.pt")})
    train(resumed)
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert [r["epoch"] for r in log] == [1, 2, 3]
    scores = [np.nanmean([r["val_dice_liver"], r["val_dice_tumor"]]) for r in log]
    assert load_checkpoint(best).epoch == 1 + int(np.argmax(scores))  # the best of the whole run, resumed or not
    onnx_path = tmp_path / "model.onnx"
    flags = ["--version", "9.9.9", "--fp16", "--tumor-margin-mm", "1.5", "--tta-shift-px", "8"]
    assert export_main([str(best), "--out", str(onnx_path), *flags]) == 0
    model = Model(onnx_path, device="cpu")
    assert model.info.version == "9.9.9" and model.spec.task == "liver-tumor"
    assert model.info.tumor_margin_mm == 1.5 and model.info.tta_shifts_px == ((0, 0), (8, 8))
    with pytest.raises(SystemExit) as usage:  # argparse: exit 2 with the message on stderr
        export_main([str(best), "--out", str(tmp_path / "bad.onnx"), "--tta-shift-px", "65"])
    assert usage.value.code == 2 and not (tmp_path / "bad.onnx").exists()
    assert "val_dice_liver" in model.info.metadata["litseg.validation_metrics"]
    data = json.loads(model.info.metadata["litseg.training_data"])
    assert data["file"] == "set.h5" and data["task"] == "liver-tumor"
    assert (data["cases"], data["train_cases"], data["val_cases"]) == (3, 2, 1)
    assert data["train_slices"] > 0 and data["val_slices"] > 0
    assert sum(data["class_voxel_fraction"].values()) == pytest.approx(1.0, abs=1e-5)
    assert data["class_voxel_fraction"]["tumor"] < data["class_voxel_fraction"]["liver"]
    assert (tmp_path / "model-fp16.onnx").is_file()
    from tests.factories import SeriesGeometry, make_series

    result = segment(make_series(SeriesGeometry(rows=64, columns=64, slices=4)), RunConfig(), model=model)
    assert result.labels.shape_zyx == (4, 64, 64)


def test_an_interrupted_run_resumed_ends_where_the_uninterrupted_one_does(tiny_set: Path, tmp_path: Path) -> None:
    """A training process SIGKILLed after its first epoch and resumed gives the uninterrupted run's weights and
    losses (poly schedule, patches, augmentation: everything drawn from the seed and the epoch)."""
    flags = [
        *("--data", str(tiny_set), "--epochs", "3", "--batch-size", "4", "--base", "4", "--threads", "1"),
        *("--slices-per-epoch", "96", "--val-fraction", "0.34", "--lr", "1e-3", "--lr-schedule", "poly"),
        *("--crop", "32", "--crop-foreground", "0.5", "--augment-scale", "0.8,1.3"),
    ]
    trainer = [sys.executable, "-m", "litseg.train.fit.trainer", *flags]
    subprocess.run([*trainer, "--out", str(tmp_path / "whole")], check=True, capture_output=True, timeout=300)
    cut = tmp_path / "cut"
    proc = subprocess.Popen([*trainer, "--out", str(cut)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None and not (cut / "log.json").is_file():
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    assert len(json.loads((cut / "log.json").read_text())) < 3, "the run finished before it could be killed"
    resume = ["--out", str(cut), "--resume", str(cut / "checkpoint-last.pt")]
    subprocess.run([*trainer, *resume], check=True, capture_output=True, timeout=300)
    # --stop-after: the same interruption, asked for (a budget for one sitting)
    stopped = tmp_path / "stopped"
    subprocess.run([*trainer, "--out", str(stopped), "--stop-after", "2"], check=True, capture_output=True, timeout=300)
    assert load_checkpoint(stopped / "checkpoint-last.pt").epoch == 2
    resume = ["--out", str(stopped), "--resume", str(stopped / "checkpoint-last.pt")]
    subprocess.run([*trainer, *resume], check=True, capture_output=True, timeout=300)
    whole = load_checkpoint(tmp_path / "whole" / "checkpoint-last.pt")
    for other in (cut, stopped):
        resumed = load_checkpoint(other / "checkpoint-last.pt")
        assert whole.epoch == resumed.epoch == 3
        for name, tensor in whole.model.state_dict().items():
            assert torch.equal(tensor, resumed.model.state_dict()[name]), (other.name, name)
        losses = [[row["train_loss"] for row in c.metrics["history"]] for c in (whole, resumed)]
        assert losses[0] == losses[1]


def test_checkpoints_refuse_arbitrary_pickles(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "payload": Evil()}, path)
    with pytest.raises(Exception, match=r"(?i)weights_only|unsupported|global"):
        load_checkpoint(path)


def test_export_refuses_what_is_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "x.pt").write_bytes(b"junk")
    assert export_main([str(tmp_path / "x.pt"), "--out", str(tmp_path / "m.onnx")]) == 3
    assert not (tmp_path / "m.onnx").exists()


def test_ddp_with_two_cpu_processes(tiny_set: Path, tmp_path: Path) -> None:
    """Two processes draw one epoch sample and shard it: --slices-per-epoch, --rare-class-boost and --mix
    hold under torchrun (they used to be ignored there: every process ran over the whole set)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "litseg.train.fit.trainer",
        "--data",
        str(tiny_set),
        "--data",
        str(tiny_set),
        "--mix",
        "0.5,0.5",
        "--slices-per-epoch",
        "12",
        "--rare-class-boost",
        "3",
        "--out",
        str(tmp_path / "ddp"),
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--base",
        "4",
        "--val-fraction",
        "0.34",
        "--threads",
        "1",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = json.loads((tmp_path / "ddp" / "log.json").read_text())
    assert len(log) == 1 and np.isfinite(log[0]["train_loss"])
    assert log[0]["hardware"] == "2 processes x CPU, 1 threads"
    assert log[0]["samples"] == 12  # 6 per process in 3 batches of 2, not the whole training split
    assert {"val_set_dice_tumor", "val_set+_dice_tumor"} <= set(log[0])  # one column group per --data


def test_rare_class_boost_samples_tumor_slices_more_often(tiny_set: Path, tmp_path: Path) -> None:
    config = _tiny_config(tiny_set, tmp_path / "boost", epochs=1, rare_class_boost=4.0)
    assert train(config).is_file()
    rare = np.zeros(100, dtype=bool)
    rare[:10] = True  # 10 % of the slices show tumor
    uniform = EpochPlan((0,), (rare,), (4000,), boost=1.0).indices(epoch=0)
    boosted = EpochPlan((0,), (rare,), (4000,), boost=9.0).indices(epoch=0)
    assert rare[uniform].mean() == pytest.approx(0.1, abs=0.03)
    assert rare[boosted].mean() == pytest.approx(0.5, abs=0.05)  # 10 x 9 / (10 x 9 + 90)
    with pytest.raises(ValueError, match="rare_class_boost"):
        TrainConfig("d", "o", rare_class_boost=0.5)
    with pytest.raises(ValueError, match="weight_cap"):
        TrainConfig("d", "o", weight_cap=0.5)


def test_crops_follow_the_rarest_class_and_keep_image_and_mask_aligned() -> None:
    mask = torch.zeros(64, 64, dtype=torch.int64)
    mask[10:40, 30:60] = 1  # liver
    mask[12:16, 50:54] = 2  # a small tumor in a corner of it
    image = torch.arange(64 * 64, dtype=torch.float32).reshape(1, 64, 64)  # every pixel unique
    hits = {0: 0, 1: 0}
    for seed in range(200):
        for fg, key in ((1.0, 1), (0.0, 0)):
            crop_image, crop_mask = Crop(32, fg)(image, mask, torch.Generator().manual_seed(seed))
            assert crop_image.shape == (1, 32, 32) and crop_mask.shape == (32, 32)
            y0, x0 = divmod(int(crop_image[0, 0, 0]), 64)  # where the patch came from
            assert torch.equal(crop_mask, mask[y0 : y0 + 32, x0 : x0 + 32])
            hits[key] += int((crop_mask == 2).any())
    assert hits[1] == 200  # every foreground patch shows the tumor
    assert hits[0] < 150  # uniform patches often miss it
    with pytest.raises(ValueError, match="multiple of 16"):
        TrainConfig("d", "o", crop=40)
    with pytest.raises(ValueError, match="exceeds the slice size"):
        Crop(128)(image, mask, torch.Generator())


def test_poly_schedule_decays_to_zero_over_the_run(tiny_set: Path, tmp_path: Path) -> None:
    assert scheduled_lr(1e-3, "poly", 0.0) == pytest.approx(1e-3)
    assert scheduled_lr(1e-3, "poly", 0.5) == pytest.approx(1e-3 * 0.5**0.9)
    assert scheduled_lr(1e-3, "poly", 1.0) == 0.0
    assert scheduled_lr(1e-3, "constant", 0.9) == 1e-3
    config = _tiny_config(tiny_set, tmp_path / "crop", epochs=1, crop=32, lr_schedule="poly")
    best = train(config)
    assert load_checkpoint(best).config.crop == 32
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig("d", "o", lr_schedule="cosine")


def test_init_carries_every_layer_but_a_head_of_another_task(tiny_set: Path, tmp_path: Path) -> None:
    tumor_net, liver_net = UNet(3, base=4), UNet(2, base=4)
    kept_new = init_from(liver_net, tumor_net)
    assert kept_new == ["head.bias", "head.weight"]
    for name, tensor in liver_net.state_dict().items():
        if not name.startswith("head."):
            assert torch.equal(tensor, tumor_net.state_dict()[name]), name
    with pytest.raises(ValueError, match="no weights"):
        init_from(UNet(2, base=8), tumor_net)
    first = train(_tiny_config(tiny_set, tmp_path / "a", epochs=1))
    second = train(_tiny_config(tiny_set, tmp_path / "b", epochs=1, init=str(first)))
    assert load_checkpoint(second).config.init == str(first)


def test_mixed_precision_follows_the_device(tiny_set: Path, tmp_path: Path) -> None:
    assert autocast_dtype(torch.device("cuda"), True) == torch.float16
    assert autocast_dtype(torch.device("cuda"), False) is None
    assert autocast_dtype(torch.device("cpu"), False) is None
    native_bf16 = torch.cpu._is_avx512_bf16_supported()
    assert autocast_dtype(torch.device("cpu"), True) == (torch.bfloat16 if native_bf16 else None)
    for amp, expected in ((True, "bfloat16" if native_bf16 else "float32"), (False, "float32")):
        out = tmp_path / f"amp-{amp}"
        best = train(_tiny_config(tiny_set, out, epochs=1, amp=amp))
        row = json.loads((out / "log.json").read_text())[0]
        assert row["precision"] == expected and np.isfinite(row["train_loss"])
        assert row["hardware"] == f"CPU, {torch.get_num_threads()} threads"
        # channels-last is a training-time layout: checkpoints hold plain contiguous fp32 tensors
        state = torch.load(best, map_location="cpu", weights_only=True)["model"]
        assert all(t.is_contiguous() and t.dtype == torch.float32 for t in state.values())


def test_logs_take_rows_of_an_older_run_without_newer_columns(tmp_path: Path) -> None:
    history = [
        {"epoch": 1, "train_loss": 0.5, "val_dice_liver": 0.8},
        {"epoch": 2, "train_loss": 0.4, "precision": "bfloat16", "val_dice_liver": 0.9},
    ]
    write_logs(tmp_path, history)
    header, first, second = (tmp_path / "log.csv").read_text().splitlines()
    assert header == "epoch,train_loss,val_dice_liver,precision"
    assert first == "1,0.5,0.8," and second == "2,0.4,0.9,bfloat16"


def test_export_recomputes_the_data_summary_of_an_older_checkpoint(tiny_set: Path, tmp_path: Path) -> None:
    best = train(_tiny_config(tiny_set, tmp_path / "run", epochs=1))
    state = torch.load(best, map_location="cpu", weights_only=True)
    metrics = json.loads(state["metrics"])
    summary = metrics.pop("data")
    old = tmp_path / "old.pt"
    torch.save({**state, "metrics": json.dumps(metrics)}, old)  # as litseg < 0.2 wrote it
    assert export_main([str(old), "--out", str(tmp_path / "old.onnx")]) == 0
    assert json.loads(Model(tmp_path / "old.onnx", device="cpu").info.metadata["litseg.training_data"]) == summary
    tiny_set.rename(tiny_set.with_suffix(".moved"))  # the set is gone: no summary rather than a guess
    try:
        assert export_main([str(old), "--out", str(tmp_path / "gone.onnx")]) == 0
        assert "litseg.training_data" not in Model(tmp_path / "gone.onnx", device="cpu").info.metadata
    finally:
        tiny_set.with_suffix(".moved").rename(tiny_set)


def test_export_of_several_checkpoints_is_the_mean_of_their_probabilities(
    tiny_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    members = [train(_tiny_config(tiny_set, tmp_path / f"run{seed}", epochs=1, seed=seed)) for seed in (0, 1)]
    singles = []
    for n, ckpt in enumerate(members):
        assert export_main([str(ckpt), "--out", str(tmp_path / f"m{n}.onnx")]) == 0
        singles.append(Model(tmp_path / f"m{n}.onnx", device="cpu"))
    capsys.readouterr()
    assert export_main([*map(str, members), "--out", str(tmp_path / "ens.onnx"), "--fp16"]) == 0
    assert json.loads(capsys.readouterr().out)["members"] == 2
    ensemble = Model(tmp_path / "ens.onnx", device="cpu")
    batch = np.random.default_rng(0).random((3, 1, 64, 64), dtype=np.float32)
    expected = (singles[0].predict(batch) + singles[1].predict(batch)) / 2
    assert not np.allclose(singles[0].predict(batch), singles[1].predict(batch), atol=1e-3)  # two networks
    np.testing.assert_allclose(ensemble.predict(batch), expected, atol=1e-5)
    meta = ensemble.info.metadata
    assert json.loads(meta["litseg.architecture"]) == {
        "name": "unet2d",
        "base": 4,
        "members": 2,
        "combine": "mean of softmax probabilities",
    }
    listed = json.loads(meta["litseg.members"])
    assert [m["training"]["seed"] for m in listed] == [0, 1]
    assert all("val_dice_tumor" in m["validation_metrics"] and m["training_data"]["cases"] == 3 for m in listed)
    assert json.loads(meta["litseg.training"])["seed"] == 0  # the top-level keys describe the first member
    assert "litseg.members" not in singles[0].info.metadata
    # the model card lists both members' training (run folders named as train/recipe.sh names them)
    work = tmp_path / "work"
    work.mkdir()
    for run, name in zip(members, ("run-liver-tumor", "run-liver-tumor-2"), strict=True):
        run.parent.rename(work / name)
    ref = sorted(tiny_set.parent.glob("segmentation-0.nii*"))[0]
    assert eval_main([str(ref), str(ref), "--json", str(work / "eval-liver-tumor.json")]) == 0
    text = card("liver-tumor", work, tmp_path / "ens.onnx")
    assert "ensemble of 2 2-D U-Nets" in text and "seeds [0, 1]" in text
    assert [line[:10] for line in text.splitlines() if line[:4] in ("| 1 ", "| 2 ")] == ["| 1 | 1 | ", "| 2 | 1 | "]
    assert f"- Hardware: CPU, {torch.get_num_threads()} threads; " in text  # as the members' logs name it


def test_export_refuses_members_with_different_preprocessing(
    tiny_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = train(_tiny_config(tiny_set, tmp_path / "run", epochs=1))
    state = torch.load(first, map_location="cpu", weights_only=True)
    spec = json.loads(state["spec"])
    spec["window_hu"] = [-100.0, 200.0]
    other = tmp_path / "other-window.pt"
    torch.save({**state, "spec": json.dumps(spec)}, other)
    capsys.readouterr()
    assert export_main([str(first), str(other), "--out", str(tmp_path / "ens.onnx")]) == 3
    err = capsys.readouterr().err
    assert "other-window.pt has a different preprocessing spec" in err and "-100.0" in err
    assert not (tmp_path / "ens.onnx").exists()


def test_model_card_names_the_logged_hardware_and_never_guesses() -> None:
    gpu = {"epoch": 1, "hardware": "1 x NVIDIA H100 80GB HBM3"}
    cpu = {"epoch": 2, "hardware": "CPU, 2 threads"}
    assert hardware([[gpu, cpu], [dict(cpu, epoch=1)]]) == "1 x NVIDIA H100 80GB HBM3; CPU, 2 threads"
    assert hardware([[{"epoch": 1}], [gpu]]) == "not recorded in the training log; 1 x NVIDIA H100 80GB HBM3"


def test_model_card_lists_cases_in_numeric_order() -> None:
    names = ["segmentation-10.nii.gz", "segmentation-2.nii.gz", "segmentation-0.nii.gz"]
    assert sorted(names, key=case_order) == ["segmentation-0.nii.gz", "segmentation-2.nii.gz", "segmentation-10.nii.gz"]
