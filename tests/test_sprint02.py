"""Smoke tests for sprint 02: Dataset/DataLoader, workers, MNIST, transforms, augmentation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmlab.cli import run
from llmlab.errors import LLMLabError
from tests.conftest import load_script

S = "sprints.02_datasets_and_dataloaders.results."


def test_batches_and_shuffling() -> None:
    mod = load_script(S + "01_simple_dataset")
    out = mod.main(["--size", "50", "--batch-size", "16"])
    assert out["num_batches"] == 4 and out["last_batch_size"] == 2
    assert out["num_batches_drop_last"] == 3
    assert (out["batch_rows"], out["batch_features"]) == (16, 1)
    assert out["order_changed"] == 1.0 and out["epochs_differ"] == 1.0  # order changes ...
    assert out["same_content"] == 1.0  # ... content does not
    ds = mod.NoisySquares(10, seed=1)
    assert len(ds) == 10 and torch.equal(ds[3][0], mod.NoisySquares(10, seed=1)[3][0])


def test_workers_load_every_item_once() -> None:
    out = load_script(S + "02_dataloader_features").main(
        ["--size", "24", "--batch-size", "8", "--item-ms", "1", "--workers", "2"]
    )
    for label in ("slow", "cheap"):
        assert out[f"{label}_complete_w0"] == 1.0 and out[f"{label}_complete_w2"] == 1.0
        assert out[f"{label}_seconds_w0"] > 0 and out[f"{label}_seconds_w2"] > 0


def test_mnist_loads_offline_with_right_shapes_and_counts() -> None:
    out = load_script(S + "03_builtin_datasets").main(["--source", "subset", "--batch-size", "64"])
    assert (out["train_size"], out["test_size"]) == (4000, 1000)
    assert (out["image_channels"], out["image_height"], out["image_width"]) == (1, 28, 28)
    assert out["num_classes"] == 10 and out["min_train_class_count"] == 400
    assert out["raw_min"] == 0.0 and out["raw_max"] == 1.0
    assert out["batch_size"] == 64
    assert abs(out["batch_mean"]) < 0.2 and abs(out["batch_std"] - 1.0) < 0.2  # normalised
    assert Path(out["digits_png"]).is_file()


def test_full_mnist_without_download_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    mod = load_script(S + "03_builtin_datasets")
    with pytest.raises(LLMLabError, match="pass --download"):
        mod.main(["--source", "full"])
    assert run(mod.main, ["--source", "full"]) == 2
    assert "error: full MNIST is not under data/mnist" in capsys.readouterr().err


def test_custom_transform_adds_the_noise_it_says() -> None:
    mod = load_script(S + "04_custom_transform")
    out = mod.main(["--std", "0.3", "--mean", "0.1", "--images", "32"])
    assert out["noise_std_measured"] == pytest.approx(0.3, rel=0.05)
    assert out["noise_mean_measured"] == pytest.approx(0.1, abs=0.01)
    assert out["labels_unchanged"] == 1.0 and Path(out["noise_png"]).is_file()
    noise = mod.AddGaussianNoise(0.0, 0.5, clamp=True)
    x = torch.full((1, 28, 28), 0.5)
    y = noise(x)
    assert y.shape == x.shape and not torch.equal(x, y)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert "AddGaussianNoise(mean=0.0, std=0.5" in repr(noise)


def test_augmentation_grid_png() -> None:
    out = load_script(S + "03_load_mnist_with_augmentation").main(
        ["--source", "subset", "--images", "4", "--rows", "2", "--degrees", "30"]
    )
    assert out["grid_rows"] == 3 and Path(out["grid_png"]).stat().st_size > 1000
    assert out["mean_abs_pixel_change"] > 0.01  # rotated digits differ from the originals
    assert out["test_transform_deterministic"] == 1.0 and out["train_transform_random"] == 1.0


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("01_simple_dataset", ["--batch-size", "0"]),
        ("02_dataloader_features", ["--size", "-3"]),
        ("04_custom_transform", ["--std", "0"]),
        ("03_load_mnist_with_augmentation", ["--degrees", "-5"]),
    ],
)
def test_bad_input_is_rejected(name: str, bad: list[str]) -> None:
    with pytest.raises(SystemExit):
        load_script(S + name).main(bad)
