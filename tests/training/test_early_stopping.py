"""Early stopping and divergence, decided by one object from each epoch's losses."""

from __future__ import annotations

from train_pytorch_model.training.early_stopping import EarlyStopping


def test_early_stopping_counts_epochs_without_a_new_best():
    stopper = EarlyStopping(patience=2)
    assert stopper.update(1, 1.0) and not stopper.should_stop
    assert not stopper.update(2, 1.1)  # worse than the best
    assert stopper.update(3, 0.9)  # new best resets the count
    assert not stopper.update(4, 0.95)  # better than epoch 4's predecessor but not the best
    assert not stopper.should_stop
    assert not stopper.update(5, 0.9)  # equal is not a decrease
    assert stopper.should_stop and stopper.best_epoch == 3


def test_a_loss_that_is_not_a_number_is_a_divergence_not_a_new_best():
    stopper = EarlyStopping(patience=3)
    stopper.update(1, 0.5)
    assert not stopper.update(2, float("nan"))
    assert stopper.diverged and stopper.should_stop and stopper.diverged_epoch == 2
    assert stopper.best_epoch == 1 and stopper.best_loss == 0.5
    assert stopper.stop_reason == "loss diverged at epoch 2"


def test_an_infinite_training_loss_diverges_even_when_validation_looks_fine():
    stopper = EarlyStopping(patience=3)
    assert not stopper.update(1, 0.4, train_loss=float("inf"))
    assert stopper.diverged and stopper.best_epoch == 0


def test_stop_reasons_say_why():
    stopper = EarlyStopping(patience=1)
    assert stopper.stop_reason == "completed all epochs"
    stopper.update(1, 1.0)
    stopper.update(2, 2.0)
    assert stopper.stop_reason == "early stop: no lower validation loss for 1 epochs after epoch 1"


def test_state_round_trip_continues_the_count():
    """What a checkpoint saves is all it takes to go on deciding as the interrupted run would have."""
    first = EarlyStopping(patience=2)
    first.update(1, 1.0)
    first.update(2, 1.5)
    resumed = EarlyStopping(patience=2)
    resumed.load_state_dict(first.state_dict())
    assert (resumed.best_loss, resumed.best_epoch, resumed.bad_epochs) == (1.0, 1, 1)
    resumed.update(3, 1.2)
    assert resumed.should_stop and resumed.best_epoch == 1
