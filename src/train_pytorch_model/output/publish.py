"""Outputs that only ever look valid when complete: written into a staging folder, then published with
'_meta.yaml' (what every reader needs) moved in last; and the guard that refuses, before any work, an output
folder whose writing would destroy data.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from ..disk_space import disk_full_reported
from ..errors import InvalidParameterError
from ..settings import CHECKPOINT_DIR

STAGING_DIR = ".staging"


REPLACING_MARKER = ".replacing"
# Hidden entries that only these components write: a folder holding one is an earlier output, finished or not.
OWN_MARKERS = (CHECKPOINT_DIR, STAGING_DIR, REPLACING_MARKER)


def check_output_folder(destination: Path, inputs: dict[str, Path], subject: str, kind: str) -> None:
    """Refuse, before any work, an output folder whose writing would destroy data: one that is, holds or lies
    inside an input, or one that already holds files and is not an earlier output of these components (its
    contents would be replaced). On Azure ML outputs are fresh folders; this guards local and custom runs."""
    out = os.path.realpath(destination)
    for name, path in inputs.items():
        real = os.path.realpath(path)
        if out == real or out.startswith(real + os.sep) or real.startswith(out + os.sep):
            raise InvalidParameterError(
                f"the output folder '{destination}' overlaps the input {name} ('{path}'); writing the output "
                "would replace that input.",
                "Choose an output folder outside every input folder.",
                subject=subject,
            )
    foreign = _foreign_entries(destination, kind)
    if foreign:
        shown = ", ".join(sorted(foreign)[:5]) + (", ..." if len(foreign) > 5 else "")
        raise InvalidParameterError(
            f"the output folder '{destination}' already holds files ({shown}) and is not an earlier output of "
            "this component; writing the output would delete them.",
            "Choose a new or empty output folder.",
            subject=subject,
        )


def _foreign_entries(destination: Path, kind: str | None, ignore: tuple[str, ...] = ()) -> list[str]:
    """Visible entries of a folder that is not an earlier output of a writer of kind (none when it is one, or
    is empty). An earlier output holds a checkpoint or a staging folder, or a '_meta.yaml' of that type: a
    designer folder of another type (an ImageDirectory given as a model's output) is not one."""
    if not destination.is_dir():
        return []
    names = [entry.name for entry in destination.iterdir() if entry.name not in ignore]
    visible = [name for name in names if not name.startswith(".")]
    if any(marker in names for marker in OWN_MARKERS):
        return []
    if "_meta.yaml" in names:
        try:
            meta = yaml.safe_load((destination / "_meta.yaml").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            meta = None
        if kind is None or (isinstance(meta, dict) and meta.get("type") == kind):
            return []
    return visible


def invalidate_earlier_output(destination: Path) -> bool:
    """Make an earlier output stop looking valid while a new run replaces it (so that a failure cannot leave the
    old model looking like the new run's result), marking the folder as still ours. True when there was one."""
    meta = destination / "_meta.yaml"
    if not meta.is_file():
        return False
    (destination / REPLACING_MARKER).touch()
    meta.unlink()
    return True


@contextmanager
def staged(destination: Path, what: str, keep: tuple[str, ...] = ()) -> Iterator[Path]:
    """A fresh staging folder inside destination to write an output into, published when the block ends well.
    On any error it goes, so that nothing half-written stays behind, and a full disk is reported as such."""
    staging = fresh_staging(destination)
    try:
        with disk_full_reported(destination, what):
            yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish(staging, destination, keep=keep)


def fresh_staging(destination: Path) -> Path:
    """An empty staging folder inside destination (what a crashed earlier attempt left there is dropped)."""
    staging = destination / STAGING_DIR
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def publish(staging: Path, destination: Path, keep: tuple[str, ...] = ()) -> None:
    """Move a fully written folder into destination so that it only ever looks valid when it is complete.

    Readers need '_meta.yaml', so it is removed first and moved in last: a crash in between leaves a folder
    without it, which every reader refuses. Entries named in keep (the checkpoint folder) are left alone.
    """
    destination.mkdir(parents=True, exist_ok=True)
    foreign = _foreign_entries(destination, None, ignore=(staging.name,))
    if foreign:  # the last line of defence: never delete what these components did not write
        raise InvalidParameterError(
            f"the output folder '{destination}' holds files that are not an earlier output ({', '.join(foreign[:5])}).",
            "Choose a new or empty output folder.",
            subject="Output",
        )
    meta = destination / "_meta.yaml"
    if meta.exists():
        meta.unlink()
    for entry in destination.iterdir():
        if entry.name in keep or entry.resolve() == staging.resolve():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    for entry in sorted(staging.iterdir(), key=lambda e: e.name == "_meta.yaml"):
        os.replace(entry, destination / entry.name)
    staging.rmdir()
    _fsync_dir(destination)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
