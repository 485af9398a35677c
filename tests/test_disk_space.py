"""Disk space: refusing what cannot fit before writing it, and telling a full disk from other write errors."""

from __future__ import annotations

import errno
import shutil

import pytest

from train_pytorch_model.disk_space import (
    disk_full_reported,
    free_bytes,
    is_disk_full,
    require_free_space,
    size_text,
)
from train_pytorch_model.errors import InsufficientDiskSpaceError


def test_free_space_of_a_folder_not_made_yet_is_its_parents(tmp_path):
    assert free_bytes(tmp_path / "not" / "yet") == shutil.disk_usage(tmp_path).free


def test_what_fits_passes_and_what_does_not_is_refused_with_both_sizes(tmp_path):
    require_free_space(tmp_path, 1, "a byte")
    too_much = shutil.disk_usage(tmp_path).free + 10**12
    with pytest.raises(InsufficientDiskSpaceError) as raised:
        require_free_space(tmp_path, too_much, "the checkpoint")
    message = raised.value.message
    assert message.startswith(f"Disk space: the checkpoint needs about {size_text(too_much)} in '{tmp_path}'")
    assert "are free there" in message and raised.value.exit_code == 10


@pytest.mark.parametrize(
    ("error", "full"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
        (OSError(errno.ENOENT, "No such file"), False),
        (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 5376 vs 5264"), True),
        (RuntimeError("[enforce fail at inline_container.cc:626] . file write failed"), True),
        (RuntimeError("CUDA error: device-side assert triggered"), False),
        (ValueError("No space left"), False),
    ],
)
def test_a_full_disk_is_told_from_other_errors(error, full):
    assert is_disk_full(error) is full


def test_a_full_disk_while_writing_becomes_the_clear_error(tmp_path):
    with pytest.raises(InsufficientDiskSpaceError) as raised, disk_full_reported(tmp_path, "the report", 2_000_000):
        raise OSError(errno.ENOSPC, "No space left on device")
    message = raised.value.message
    assert "filled up while writing the report" in message and "it needed about 2.0 MB" in message
    assert isinstance(raised.value.__cause__, OSError)


def test_other_write_errors_pass_through_unchanged(tmp_path):
    with pytest.raises(PermissionError), disk_full_reported(tmp_path, "the report"):
        raise PermissionError(errno.EACCES, "Permission denied")
