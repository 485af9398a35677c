"""The resumable training state: every generator's state, the stateful objects, and a checkpoint file that is
written atomically, read weights-only, and ignored when it belongs to another run."""

from __future__ import annotations

import logging
import random
import threading

import numpy as np
import pytest
import torch
from torch import nn

from train_pytorch_model.training import checkpoint as checkpoint_module
from train_pytorch_model.training.checkpoint import (
    CHECKPOINT_FILE,
    Checkpoint,
    FitState,
    restore_rng_state,
    rng_state,
)
from train_pytorch_model.training.early_stopping import EarlyStopping


def draws() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_rng_state_round_trip_repeats_every_generator():
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    saved = rng_state()
    expected = draws()
    draws()  # move every generator on
    restore_rng_state(saved)
    assert draws() == expected


def test_rng_state_holds_only_tensors_and_plain_values(tmp_path):
    """So that the checkpoint loads with weights_only=True (nothing in it can run code)."""
    torch.save(rng_state(), tmp_path / "rng.pt")
    loaded = torch.load(tmp_path / "rng.pt", weights_only=True)
    restore_rng_state(loaded)


def training_objects(seed: int) -> dict:
    torch.manual_seed(seed)
    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = model(torch.randn(8, 4)).sum()
    loss.backward()
    optimizer.step()
    stopper = EarlyStopping(patience=3)
    stopper.update(1, 0.7)
    return {"model": model, "optimizer": optimizer, "early_stopping": stopper}


def momentum_of(objects: dict, index: int) -> torch.Tensor:
    parameter = list(objects["model"].parameters())[index]
    return objects["optimizer"].state[parameter]["momentum_buffer"]


def test_save_then_restore_gives_back_every_object_and_the_fit_state(tmp_path):
    saved_objects = training_objects(seed=1)
    state = FitState(history=[{"epoch": 1, "valid_loss": 0.7}], best_state={"w": torch.ones(2)})
    writer = Checkpoint(tmp_path, "fingerprint-a", writer=True)
    writer.save(1, saved_objects, state, mlflow_run_id="run-1")
    writer.close()
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]  # no partial file left behind

    restored_objects = training_objects(seed=2)  # other weights and momentum, a fresh stopper
    restored = Checkpoint(tmp_path, "fingerprint-a", writer=True).restore(restored_objects)
    assert (restored.next_epoch, restored.resumed_from, restored.resumed_run_id) == (2, 1, "run-1")
    assert restored.history == state.history and torch.equal(restored.best_state["w"], torch.ones(2))
    for key, tensor in saved_objects["model"].state_dict().items():
        assert torch.equal(restored_objects["model"].state_dict()[key], tensor)
    momentum = [
        restored_objects["optimizer"].state[p]["momentum_buffer"] for p in restored_objects["model"].parameters()
    ]
    expected = [saved_objects["optimizer"].state[p]["momentum_buffer"] for p in saved_objects["model"].parameters()]
    assert all(torch.equal(a, b) for a, b in zip(momentum, expected, strict=True))
    assert restored_objects["early_stopping"].best_loss == 0.7


def test_a_checkpoint_of_another_run_is_ignored(tmp_path, caplog):
    writer = Checkpoint(tmp_path, "fingerprint-a", writer=True)
    writer.save(3, training_objects(1), FitState(), None)
    writer.close()
    objects = training_objects(seed=2)
    before = {k: v.clone() for k, v in objects["model"].state_dict().items()}
    with caplog.at_level(logging.WARNING):
        restored = Checkpoint(tmp_path, "fingerprint-b", writer=True).restore(objects)
    assert restored.next_epoch == 1 and restored.resumed_from == 0
    assert all(torch.equal(before[k], v) for k, v in objects["model"].state_dict().items())
    assert "belongs to other data or parameters" in caplog.text


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04 truncated zip"])
def test_an_unreadable_checkpoint_starts_afresh(tmp_path, caplog, content):
    (tmp_path / CHECKPOINT_FILE).write_bytes(content)
    with caplog.at_level(logging.WARNING):
        restored = Checkpoint(tmp_path, "fingerprint-a", writer=True).restore(training_objects(1))
    assert restored.next_epoch == 1
    assert "cannot be read safely" in caplog.text


def test_only_the_writer_writes_and_remove_clears_the_folder(tmp_path):
    folder = tmp_path / ".checkpoint"
    Checkpoint(folder, "f", writer=False).save(1, training_objects(1), FitState(), None)
    assert not folder.exists()
    writer = Checkpoint(folder, "f", writer=True)
    writer.save(1, training_objects(1), FitState(), None)
    writer.wait()
    assert (folder / CHECKPOINT_FILE).is_file()
    writer.remove()
    assert not folder.exists()


def test_what_is_saved_is_the_state_at_save_time_not_what_training_did_next(tmp_path):
    """The write happens in the background while the next epoch changes the weights and momentum in place."""
    objects = training_objects(seed=1)
    expected = {k: v.clone() for k, v in objects["model"].state_dict().items()}
    writer = Checkpoint(tmp_path, "f", writer=True)
    writer.save(1, objects, FitState(), None)
    with torch.no_grad():
        for parameter in objects["model"].parameters():
            parameter.add_(100.0)  # the next epoch's steps, before the write may have run
    writer.close()
    restored = training_objects(seed=2)
    Checkpoint(tmp_path, "f", writer=True).restore(restored)
    assert all(torch.equal(restored["model"].state_dict()[k], v) for k, v in expected.items())


def test_a_failed_write_is_raised_on_the_training_thread(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the checkpoint folder should go", encoding="utf-8")
    writer = Checkpoint(blocker / ".checkpoint", "f", writer=True)
    writer.save(1, training_objects(1), FitState(), None)
    with pytest.raises(OSError):
        writer.wait()
    writer.close()  # nothing left in flight


def test_the_best_epochs_weights_are_stored_once_when_they_are_the_models(tmp_path):
    """In an epoch that is the best so far the best weights are the model's: the file holds them once, and a
    resume gets them back as the best weights."""
    objects = training_objects(seed=1)
    weights = {k: v.clone() for k, v in objects["model"].state_dict().items()}
    sizes = {}
    for best_is_current in (False, True):
        folder = tmp_path / str(best_is_current)
        writer = Checkpoint(folder, "f", writer=True)
        writer.save(1, objects, FitState(best_state=weights), None, best_is_current=best_is_current)
        writer.close()
        sizes[best_is_current] = (folder / CHECKPOINT_FILE).stat().st_size
        restored = Checkpoint(folder, "f", writer=True).restore(training_objects(seed=2))
        assert all(torch.equal(restored.best_state[k], v) for k, v in weights.items())
    assert sizes[True] < sizes[False]


def test_an_epoch_is_not_saved_while_the_previous_write_runs(tmp_path, monkeypatch):
    """A large model with short epochs: the training thread never waits for the disk; the epoch whose save
    would have waited is skipped, and a resume starts from the one that was being written."""
    release = threading.Event()
    write = checkpoint_module.save_checkpoint

    def slow_write(folder, snapshot):
        release.wait(timeout=60)
        write(folder, snapshot)

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", slow_write)
    objects = training_objects(seed=1)
    writer = Checkpoint(tmp_path, "f", writer=True)
    assert writer.save(1, objects, FitState(), None) is True
    assert writer.save(2, objects, FitState(), None) is False  # epoch 1 is still being written
    release.set()
    writer.wait()
    assert writer.save(3, objects, FitState(), None) is True
    writer.close()
    assert writer.skipped == [2]
    assert Checkpoint(tmp_path, "f", writer=True).restore(training_objects(seed=2)).next_epoch == 4


def test_a_last_write_that_fails_after_the_output_is_written_does_not_fail_the_job(tmp_path, monkeypatch):
    def full_disk(folder, snapshot):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", full_disk)
    writer = Checkpoint(tmp_path / ".checkpoint", "f", writer=True)
    writer.save(3, training_objects(seed=1), FitState(), None)
    writer.remove()  # the run is over: the obsolete checkpoint's failure is not the job's
    assert not (tmp_path / ".checkpoint").exists()
