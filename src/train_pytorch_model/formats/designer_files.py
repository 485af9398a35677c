"""Writing files byte-compatible with the designer's own writers (see designer-formats.md section 1)."""

from __future__ import annotations

import json
import math
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
