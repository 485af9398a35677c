"""The one writer of the project's own JSON files (preprocessing.json, training_summary.json,
dataset_summary.json, per_class_metrics.json): UTF-8, 2-space indent, names kept readable, a final newline,
and strictly JSON. The designer's files have a format of their own (designer_files.dump_json)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def finite(value: Any) -> Any:
    """NaN and infinities (a diverged epoch's loss) as null: strict JSON readers refuse bare NaN."""
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, data: Any) -> None:
    text = json.dumps(finite(data), indent=2, ensure_ascii=False, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")
