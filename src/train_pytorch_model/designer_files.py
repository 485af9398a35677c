"""Writing files byte-compatible with the designer's own writers (see designer-formats.md section 1)."""

from __future__ import annotations

import json
import math
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f%z"


def dump_yaml(data: dict, path: Path) -> None:
    """Block style, insertion order, '{}' for empty maps, sequences not indented, non-ASCII escaped."""
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=False)
    path.write_text(text, encoding="utf-8")


def dump_json(data: Any, path: Path) -> None:
    """2-space indent, insertion order, non-ASCII escaped, no trailing newline."""
    path.write_text(json.dumps(data, indent=2, ensure_ascii=True), encoding="utf-8")


def json_safe(value: Any) -> Any:
    """A value as the designer's sample and visualization writers encode it: NaN as {"isNan": true},
    infinities as "inf"/"-inf", numpy scalars as plain numbers (json.dumps would write NaN, which is not JSON)."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy scalar
    if isinstance(value, float):
        if math.isnan(value):
            return {"isNan": True}
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value


def now_timestamp() -> str:
    """The designer's time_created: UTC with microseconds and a +HHMM offset."""
    return datetime.now(timezone.utc).strftime(TIME_FORMAT)


def publish(staging: Path, destination: Path, keep: tuple[str, ...] = ()) -> None:
    """Move a fully written folder into destination so that it only ever looks valid when it is complete.

    Readers need '_meta.yaml', so it is removed first and moved in last: a crash in between leaves a folder
    without it, which every reader refuses. Entries named in keep (the checkpoint folder) are left alone.
    """
    destination.mkdir(parents=True, exist_ok=True)
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
