"""Sprint 04 scripts: define_cnn, define_resnet_mnist and the integrated MNIST training run."""

from __future__ import annotations

import hashlib
from importlib import import_module as load_script  # as tests/conftest.py does
from pathlib import Path

import pytest
import torch

from llmlab.checkpoint import save_checkpoint
from llmlab.cli import run
from llmlab.data.mnist import default_transform, load_mnist
from llmlab.vision import MNISTCNN, ResNetMNIST

PKG = "sprints.04_advanced_training_mnist.results"
TAGS = {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr", "accuracy/test"}


def _argv(text: str) -> list[str]:
    """A command line as `main` gets it (the temporary paths contain no spaces)."""
    return text.split()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _exit_code(main, argv: list[str]) -> int:
    """`run(main, argv)`'s exit code; argparse rejects bad flags with SystemExit(2) itself."""
    try:
        return run(main, argv)
    except SystemExit as exc:
        return exc.code


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One short CNN run (2 epochs on 1,000 images) that the tests below inspect."""
    out = tmp_path_factory.mktemp("cnn_run")
    mod = load_script(f"{PKG}.train_mnist_cnn")
    result = mod.main(
        _argv(f"--epochs 2 --train-size 1000 --source subset --no-progress --out {out}")
    )
    return {"module": mod, "result": result, "out": out}


def test_define_cnn_reports_shapes_and_parameters() -> None:
    mod = load_script(f"{PKG}.define_cnn")
    result = mod.main(["--channels", "8", "16", "--hidden", "32", "--batch-size", "3"])
    assert mod.main([])["parameters"] == 220_330  # the defaults are MNISTCNN's
    assert result["output_shape"] == (3, 10)
    assert result["parameters"] == (8 * 9 + 16) + (8 * 16 * 9 + 32) + (16 * 49 * 32 + 32) + 330
    pools = [r["output_shape"] for r in result["layers"] if r["type"] == "MaxPool2d"]
    assert pools == [(1, 8, 14, 14), (1, 16, 7, 7)]


def test_define_resnet_reports_shapes_and_identity_block() -> None:
    mod = load_script(f"{PKG}.define_resnet_mnist")
    result = mod.main([])
    assert result["output_shape"] == (2, 10)
    assert result["identity_error"] == 0.0
    blocks = [r["output_shape"] for r in result["layers"] if r["type"] == "BasicBlock"]
    assert blocks == [(1, 16, 28, 28), (1, 32, 14, 14), (1, 64, 7, 7)]


def test_preload_gives_the_same_numbers_as_the_transform_pipeline() -> None:
    mod = load_script(f"{PKG}.train_mnist_cnn")
    raw = load_mnist("train", "subset")
    piped = load_mnist("train", "subset", default_transform(False))
    fast = mod.preload(raw)
    for i in (0, 1, 2, 3999):
        x, y = fast[i]
        torch.testing.assert_close(x, piped[i][0])
        assert int(y) == piped[i][1]


def test_train_val_split_is_deterministic_and_disjoint() -> None:
    mod = load_script(f"{PKG}.train_mnist_cnn")
    train, val = mod.split_train_val(4000, 0.125, 0)
    assert (len(train), len(val)) == (3500, 500)
    assert not set(train) & set(val)
    assert (train, val) == mod.split_train_val(4000, 0.125, 0)
    assert mod.split_train_val(4000, 0.125, 100)[0] == train[:100]


def test_training_run_learns_and_writes_logs_checkpoint_and_figures(trained: dict) -> None:
    result, out = trained["result"], trained["out"]
    assert result["test_accuracy"] > 0.7  # chance is 0.1
    assert result["epochs_run"] == 2 and result["best_epoch"] in (1, 2)
    for key in ("confusion_png", "lr_png", "loss_png", "checkpoint"):
        assert Path(result[key]).is_file() and Path(result[key]).stat().st_size > 0, key
    assert list(out.glob("events.out.tfevents.*"))
    scalars = _scalars(out)
    assert scalars.keys() >= TAGS
    for tag in ("loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr"):
        assert [step for step, _ in scalars[tag]] == [1, 2], tag
    # The logged learning rates follow CosineAnnealingLR with T_max = 2 epochs: lr, lr/2.
    lrs = [v for _, v in scalars["lr"]]
    assert lrs == pytest.approx([2e-3, 1e-3], rel=1e-6)
    assert scalars["accuracy/test"][0][1] == pytest.approx(result["test_accuracy"], rel=1e-6)


def test_eval_checkpoint_reproduces_the_restored_best_weights(trained: dict, tmp_path) -> None:
    mod, result = trained["module"], trained["result"]
    ckpt = result["checkpoint"]
    again = mod.main(
        _argv(f"--eval-checkpoint {ckpt} --source subset --no-progress --out {tmp_path}")
    )
    assert again["test_accuracy"] == result["test_accuracy"]
    assert again["test_loss"] == pytest.approx(result["test_loss"], rel=1e-5)
    assert again["epochs_run"] == 0


def test_resume_continues_after_the_saved_epoch(trained: dict, tmp_path) -> None:
    mod, result = trained["module"], trained["result"]
    before = _digest(Path(result["checkpoint"]))
    ckpt = result["checkpoint"]
    resumed = mod.main(
        _argv(
            f"--resume {ckpt} --epochs 3 --train-size 1000 --source subset --no-progress "
            f"--out {tmp_path}"
        )
    )
    assert resumed["epochs_run"] == 3 - result["best_epoch"]
    steps = [step for step, _ in _scalars(tmp_path)["loss/train"]]
    assert steps == list(range(result["best_epoch"] + 1, 4))
    assert _digest(Path(result["checkpoint"])) == before  # the source checkpoint is untouched


@pytest.mark.parametrize(
    "argv",
    [
        ["--epochs", "0"],
        ["--epochs", "-3"],
        ["--batch-size", "0"],
        ["--lr", "-1"],
        ["--val-fraction", "1.5"],
        ["--val-fraction", "0", "--source", "subset"],
        ["--weight-decay", "-0.1"],
        ["--min-delta", "nan"],
        ["--model", "vgg"],
        ["--resume", "a.pt", "--eval-checkpoint", "b.pt"],
    ],
)
def test_bad_flags_exit_with_code_2(argv: list[str]) -> None:
    assert _exit_code(load_script(f"{PKG}.train_mnist_cnn").main, argv) == 2


def test_full_mnist_absent_offline_is_a_one_line_error(tmp_path, capsys) -> None:
    mod = load_script(f"{PKG}.train_mnist_cnn")
    assert _exit_code(mod.main, ["--source", "full", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--download" in err[0]


@pytest.mark.parametrize("flag", ["--eval-checkpoint", "--resume"])
def test_truncated_checkpoint_is_rejected_and_left_as_is(trained: dict, tmp_path, flag) -> None:
    broken = tmp_path / "broken.pt"
    data = Path(trained["result"]["checkpoint"]).read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    before = _digest(broken)
    code = _exit_code(trained["module"].main, [flag, str(broken), "--out", str(tmp_path / "r")])
    assert code == 2
    assert _digest(broken) == before
    assert not (tmp_path / "r").exists()  # rejected before anything was written


def test_resnet_variant_trains(tmp_path) -> None:
    mod = load_script(f"{PKG}.train_mnist_cnn")
    result = mod.main(
        _argv(
            f"--model resnet --epochs 2 --train-size 1000 --source subset --no-progress "
            f"--out {tmp_path}"
        )
    )
    assert result["test_accuracy"] > 0.3  # chance is 0.1
    assert Path(result["checkpoint"]).is_file()


def test_checkpoint_of_another_model_is_rejected_and_left_as_is(tmp_path, capsys) -> None:
    mod = load_script(f"{PKG}.train_mnist_cnn")
    checkpoint = save_checkpoint(tmp_path / "resnet.pt", ResNetMNIST(), epoch=1)
    before = _digest(checkpoint)
    for flag in ("--eval-checkpoint", "--resume"):
        code = _exit_code(
            mod.main, [flag, str(checkpoint), "--model", "cnn", "--out", str(tmp_path / "cnn")]
        )
        assert code == 2
        assert "ResNetMNIST, not a MNISTCNN" in capsys.readouterr().err
    assert _digest(checkpoint) == before
    assert not (tmp_path / "cnn").exists()
    # Same class, other shape (a CNN half as wide as the default): rejected too, file intact.
    narrow = save_checkpoint(tmp_path / "narrow.pt", MNISTCNN(channels=(16, 32)), epoch=1)
    before = _digest(narrow)
    code = _exit_code(mod.main, ["--eval-checkpoint", str(narrow), "--out", str(tmp_path / "n")])
    assert code == 2
    assert "does not fit" in capsys.readouterr().err
    assert _digest(narrow) == before and not (tmp_path / "n").exists()


@pytest.mark.slow
def test_default_run_reaches_95_percent() -> None:
    """The README's first command, exactly as a learner runs it (~1 min on a 2-core CPU)."""
    result = load_script(f"{PKG}.train_mnist_cnn").main([])
    assert result["test_accuracy"] >= 0.95


@pytest.mark.parametrize("flag", ["--eval-checkpoint", "--resume"])
def test_a_text_file_passed_as_checkpoint_is_a_one_line_error(tmp_path, capsys, flag) -> None:
    # A file that is not a checkpoint at all: torch.load raises an UnpicklingError, which
    # must become the one-line error too (it used to escape as a traceback).
    mod = load_script(f"{PKG}.train_mnist_cnn")
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    code = _exit_code(mod.main, [flag, str(text), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not a checkpoint" in err[0]
    assert text.read_text() == "not a checkpoint\n" and not (tmp_path / "r").exists()
