"""llmlab.training: train_one_epoch, evaluate, EarlyStopping, confusion_matrix."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from llmlab.errors import LLMLabError
from llmlab.training import EarlyStopping, confusion_matrix, evaluate, train_one_epoch


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_state_equal(model: nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


def _blobs(n: int = 200, seed: int = 0) -> TensorDataset:
    """Two well separated Gaussian blobs: a linearly separable 2-class problem."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 2, generator=g) + (y.float() * 2 - 1).unsqueeze(1) * 2.0
    return TensorDataset(x, y)


def _model_with_buffers() -> nn.Module:
    # BatchNorm brings buffers (running mean/var, num_batches_tracked) that restore must copy too.
    return nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


# --- EarlyStopping -------------------------------------------------------------------------


def test_early_stopping_scripted_sequence_stops_and_restores_best_exactly() -> None:
    torch.manual_seed(0)
    model = _model_with_buffers()
    val_losses = [1.0, 0.8, 0.6, 0.7, 0.65, 0.9, 0.1]  # best at epoch 3, then 3 bad epochs
    stopper = EarlyStopping(patience=3)
    snapshots, stopped_at = {}, None
    for epoch, loss in enumerate(val_losses, start=1):
        with torch.no_grad():  # "training" changes every tensor in place, buffers included
            for tensor in model.state_dict().values():
                tensor.add_(epoch) if tensor.is_floating_point() else tensor.fill_(epoch)
        snapshots[epoch] = _snapshot(model)
        if stopper.step(loss, model):
            stopped_at = epoch
            break
    assert stopped_at == 6  # epochs 4, 5, 6 did not beat 0.6; epoch 7 never ran
    assert stopper.best_epoch == 3 and stopper.best_value == 0.6
    assert stopper.bad_epochs == 3 and stopper.should_stop
    # The live weights are epoch 6's; restore brings back epoch 3's, bit for bit.
    _assert_state_equal(model, snapshots[6])
    stopper.restore(model)
    _assert_state_equal(model, snapshots[3])
    # The stored copy is not aliased to the model: changing the model keeps the best intact.
    with torch.no_grad():
        model[0].weight.add_(1.0)
    stopper.restore(model)
    _assert_state_equal(model, snapshots[3])


def test_early_stopping_on_a_run_whose_validation_loss_turns_up() -> None:
    """A wide MLP on 64 examples with 40% noisy labels: it learns, then memorises the noise."""
    torch.manual_seed(0)
    teacher = torch.randn(20, 4)

    def noisy(n: int) -> TensorDataset:
        x = torch.randn(n, 20)
        flip = torch.rand(n) < 0.4
        return TensorDataset(
            x, torch.where(flip, torch.randint(0, 4, (n,)), (x @ teacher).argmax(1))
        )

    train = DataLoader(noisy(64), batch_size=32)
    val = DataLoader(noisy(256), batch_size=256)
    model = nn.Sequential(nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 4))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    stopper = EarlyStopping(patience=4)
    history, snapshots = [], {}
    for epoch in range(1, 201):
        train_one_epoch(model, train, optimizer, loss_fn, "cpu", progress=False)
        val_loss = evaluate(model, val, loss_fn, "cpu")["loss"]
        history.append(val_loss)
        snapshots[epoch] = _snapshot(model)
        if stopper.step(val_loss, model):
            break
    assert epoch < 200, "the validation loss never turned up"
    assert stopper.best_epoch > 1 and history[stopper.best_epoch - 1] < history[0]  # it fell first
    assert epoch == stopper.best_epoch + 4  # exactly `patience` bad epochs
    assert stopper.best_value == min(history)
    assert all(v >= stopper.best_value for v in history[stopper.best_epoch :])
    stopper.restore(model)
    _assert_state_equal(model, snapshots[stopper.best_epoch])
    assert evaluate(model, val, loss_fn, "cpu")["loss"] == pytest.approx(stopper.best_value, abs=0)


def test_early_stopping_max_mode_min_delta_and_nan() -> None:
    model = nn.Linear(1, 1)
    stopper = EarlyStopping(patience=2, min_delta=0.01, mode="max")
    assert not stopper.step(0.90, model)
    assert not stopper.step(0.905, model)  # +0.005 is within min_delta: a bad epoch
    assert not stopper.step(0.95, model)  # a real improvement resets the counter
    assert stopper.best_epoch == 3 and stopper.bad_epochs == 0
    assert not stopper.step(math.nan, model)  # NaN never improves
    assert stopper.step(0.2, model)


def test_early_stopping_counters_round_trip_and_bad_arguments() -> None:
    model = nn.Linear(1, 1)
    a = EarlyStopping(patience=3)
    for v in (1.0, 0.5, 0.7):
        a.step(v, model)
    b = EarlyStopping(patience=3)
    b.load_state_dict(a.state_dict(), model)
    assert (b.best_value, b.best_epoch, b.epoch, b.bad_epochs) == (0.5, 2, 3, 1)
    assert not b.step(0.9, model) and b.step(0.9, model)
    with pytest.raises(LLMLabError):
        EarlyStopping(patience=0)
    with pytest.raises(LLMLabError):
        EarlyStopping(patience=1, mode="median")
    with pytest.raises(LLMLabError, match="before any epoch improved"):
        EarlyStopping(patience=1).restore(model)


# --- train_one_epoch / evaluate ------------------------------------------------------------


def test_train_one_epoch_lowers_the_loss_on_a_toy_problem() -> None:
    torch.manual_seed(0)
    loader = DataLoader(_blobs(), batch_size=16, shuffle=True)
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    before = evaluate(model, loader, loss_fn, "cpu")
    results = [
        train_one_epoch(model, loader, optimizer, loss_fn, "cpu", progress=False) for _ in range(5)
    ]
    after = evaluate(model, loader, loss_fn, "cpu")
    assert results[-1]["loss"] < results[0]["loss"]
    assert after["loss"] < 0.5 * before["loss"]
    assert after["accuracy"] > 0.95 and results[-1]["accuracy"] > 0.9
    assert model.training  # train_one_epoch leaves the model in training mode


def test_train_one_epoch_regression_grad_clip_and_per_batch_scheduler() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 3)
    loader = DataLoader(TensorDataset(x, x @ torch.tensor([[1.0], [-2.0], [0.5]])), batch_size=8)
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.9)
    out = train_one_epoch(
        model,
        loader,
        optimizer,
        nn.MSELoss(),
        "cpu",
        scheduler=scheduler,
        grad_clip=0.5,
        progress=False,
    )
    assert "accuracy" not in out  # no class logits, no accuracy
    assert out["grad_norm"] > 0.5  # the mean norm *before* clipping: clipping was active
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * 0.9**8)  # 8 batches


def test_train_one_epoch_stops_on_a_non_finite_loss() -> None:
    loader = DataLoader(TensorDataset(torch.ones(4, 1), torch.ones(4, 1)), batch_size=2)
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(math.inf)
    with pytest.raises(LLMLabError, match="lower the learning rate"):
        train_one_epoch(
            model,
            loader,
            torch.optim.SGD(model.parameters(), lr=0.1),
            nn.MSELoss(),
            "cpu",
            progress=False,
        )


@pytest.mark.parametrize("training", [True, False])
def test_evaluate_leaves_weights_grads_buffers_and_mode_alone(training: bool) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2))
    loader = DataLoader(_blobs(64), batch_size=16)
    loss_fn = nn.CrossEntropyLoss()
    # Give every parameter a gradient, as if the caller were mid-step.
    loss_fn(model(torch.randn(4, 2)), torch.tensor([0, 1, 0, 1])).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    state = _snapshot(model)  # includes BatchNorm's running statistics
    model.train(training)
    first = evaluate(model, loader, loss_fn, "cpu", return_predictions=True)
    second = evaluate(model, loader, loss_fn, "cpu")
    assert model.training is training
    _assert_state_equal(model, state)
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, grads[n]), n
    assert first["loss"] == second["loss"]  # eval mode: dropout off, so deterministic
    assert first["predictions"].shape == first["targets"].shape == (64,)
    expected = (first["predictions"] == first["targets"]).float().mean().item()
    assert first["accuracy"] == pytest.approx(expected)


def test_evaluate_rejects_an_empty_loader() -> None:
    empty = DataLoader(TensorDataset(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(LLMLabError, match="no batches"):
        evaluate(nn.Linear(2, 2), empty, nn.CrossEntropyLoss(), "cpu")


def test_confusion_matrix_matches_scikit_learn() -> None:
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix  # slow import: only here

    g = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 5, (300,), generator=g)
    predictions = torch.where(
        torch.rand(300, generator=g) < 0.7, targets, torch.randint(0, 5, (300,), generator=g)
    )
    ours = confusion_matrix(targets, predictions, 5).numpy()
    reference = sk_confusion_matrix(targets.numpy(), predictions.numpy(), labels=range(5))
    np.testing.assert_array_equal(ours, reference)
    assert ours.sum() == 300
