"""Progress: a bar in a terminal, periodic lines in a log file."""

from __future__ import annotations

import torch


def test_progress_lines_when_not_a_terminal(capsys, monkeypatch):
    from train_pytorch_model.training import progress

    monkeypatch.setattr(progress, "LOG_INTERVAL_SECONDS", 0.0)
    show = progress.EpochProgress(epoch=2, epochs=5, steps=4, batch_size=8, tty=False)
    for step in range(1, 5):
        show(step, torch.tensor(step * 8 * 0.5, dtype=torch.float64), torch.tensor(step * 6), step * 8)
    show.close()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3  # the last step is reported by the epoch line instead
    assert lines[0].startswith("  epoch 2/5 batch 1/4 (25%)") and "loss 0.5000" in lines[0]
    assert "accuracy 0.750" in lines[0] and "img/s" in lines[0] and "s left" in lines[0]


def test_progress_bar_in_a_terminal(capsys):
    from train_pytorch_model.training import progress

    show = progress.EpochProgress(epoch=1, epochs=1, steps=3, batch_size=4, tty=True)
    for step in range(1, 4):
        show(step, torch.tensor(1.0 * step * 4), torch.tensor(step * 4), step * 4)
    show.close()
    out = capsys.readouterr().out
    assert "epoch 1/1" in out and "loss=1.0000" in out and "acc=1.000" in out
