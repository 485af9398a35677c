"""The designer's DataFrameDirectory (designer-formats.md section 5), as Score Image Model writes it: the scored
table as Parquet, its schema, samples and the studio's preview, published with '_meta.yaml' last."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..output.publish import staged
from ..output.scoring import probability_columns
from .dataset_listing import ImageTable
from .designer_files import dump_json, dump_yaml, json_safe

SCORED_LABELS = "Scored Labels"
ASSIGNED_LABELS = "Multi Class Assigned Labels"
DATA_FILE = "_data.parquet"
VISUALIZATION_FILE = "_data.visualization"
SAMPLES_FILE = "_samples.json"
SCHEMA_FILE = "schema/_schema.json"
SAMPLE_COUNT = 3
PREVIEW_LIMIT = 100  # rows and columns shown in the designer's preview
STATISTICS = ("Mean", "Median", "Min", "Max", "Standard Deviation", "Unique Values", "Missing Values")


def passthrough_columns(table: ImageTable) -> list[str]:
    """The input's non-feature columns, sorted by name as the designer's Index.difference sorts them."""
    image = table.image_column
    return sorted(c["name"] for c in table.columns if c is not image and not c.get("isFeature", True))


def _column_values(values: list) -> pd.Series:
    """Lists and objects (COCO annotations) as JSON text: Parquet needs one type per column."""
    if any(isinstance(v, (list, dict)) for v in values):
        values = [v if v is None else json.dumps(v) for v in values]
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return pd.Series(values, dtype="int64")
    if all(v is None or isinstance(v, str) for v in values):
        return pd.Series(values, dtype=object)  # object, not pandas' string dtype: the designer's Parquet type
    return pd.Series(values)


def scored_frame(table: ImageTable, probabilities: np.ndarray, classes: list[str], keep: list[bool]) -> pd.DataFrame:
    rows = [record for record, kept in zip(table.records, keep, strict=True) if kept]
    frame = pd.DataFrame(index=pd.RangeIndex(len(rows)))
    for name in passthrough_columns(table):
        frame[name] = _column_values([record.get(name) for record in rows])
    kept_probabilities = probabilities[np.asarray(keep, dtype=bool)]
    for index, name in enumerate(probability_columns(classes)):
        frame[name] = kept_probabilities[:, index].astype(np.float64)
    labels = [classes[i] for i in kept_probabilities.argmax(axis=1)] if len(rows) else []
    frame[SCORED_LABELS] = pd.Series(labels, dtype=object)
    return frame


def _column_type(series: pd.Series) -> tuple[str, str]:
    """(column type, element type) inferred from the pandas dtype, as the designer's schema writer does."""
    if pd.api.types.is_bool_dtype(series):
        return "Binary", "bool"
    if pd.api.types.is_integer_dtype(series):
        return "Numeric", "int64"
    if pd.api.types.is_float_dtype(series):
        return "Numeric", "float64"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "DateTime", "datetime64"
    if all(v is None or isinstance(v, str) for v in series):
        return "String", "str"
    return "Object", "object"


def dataframe_schema(frame: pd.DataFrame, label_column: str | None, score_columns: list[str]) -> dict:
    attributes = []
    for name in frame.columns:
        kind, element = _column_type(frame[name])
        attributes.append(
            {
                "name": name,
                "type": kind,
                # The designer marks every column but the label and scores as a feature (pass-through 'id' too).
                "isFeature": name != label_column and name not in score_columns,
                "elementType": {"typeName": element, "isNullable": False},
            }
        )
    scores = {name: name for name in score_columns if name != SCORED_LABELS}
    scores[ASSIGNED_LABELS] = SCORED_LABELS
    return {
        "columnAttributes": attributes,
        "featureChannels": [],
        "labelColumns": {"True Labels": label_column} if label_column else {},
        "scoreColumns": scores,
    }


def _table_json(records: list, features: list[dict], rows: int, columns: int) -> dict:
    return {"records": records, "features": features, "numberOfRows": rows, "numberOfColumns": columns, "name": None}


def visualization(frame: pd.DataFrame, schema: dict) -> dict:
    """The designer's preview: first 100 rows x 100 columns. Its statistics and layout blocks hold NaN and null
    placeholders (the UI fills them in, see the golden scored_dataset), so they are written the same way."""
    attributes = schema["columnAttributes"][:PREVIEW_LIMIT]
    labels = set(schema["labelColumns"].values())
    scores = set(schema["scoreColumns"].values())
    preview = frame.iloc[:PREVIEW_LIMIT, :PREVIEW_LIMIT]
    records = [json_safe(list(row)) for row in preview.itertuples(index=False, name=None)]
    features = []
    for index, attribute in enumerate(attributes):
        name = attribute["name"]
        role = "Label" if name in labels else "Score" if name in scores else "Feature"
        features.append(
            {
                "name": name,
                "index": index,
                "elementType": attribute["elementType"]["typeName"],
                "featureType": f"{attribute['type']} {role}",
            }
        )
    count = len(attributes)

    def placeholder_features(names: Sequence[str], element: str, kind: str) -> list[dict]:
        return [{"name": n, "index": i, "elementType": element, "featureType": kind} for i, n in enumerate(names)]

    statistics = [[{"isNan": True}] * len(STATISTICS) for _ in range(count)]
    layout = [[None, None] for _ in range(count)]
    return {
        "visualizationType": "default",
        "data": _table_json(records, features, len(frame), len(frame.columns)),
        "statistics": _table_json(
            statistics,
            placeholder_features(STATISTICS, "float64", "Numeric Feature"),
            count,
            len(STATISTICS),
        ),
        "layout": _table_json(
            layout, placeholder_features(("Histogram", "Boxplot"), "object", "Object Feature"), count, 2
        ),
    }


def write_dataframe_directory(frame: pd.DataFrame, schema: dict, destination: Path) -> None:
    """Write aside, then publish with '_meta.yaml' last."""
    with staged(destination, "the scored dataset") as staging:
        _write_staged(frame, schema, staging)


def _write_staged(frame: pd.DataFrame, schema: dict, staging: Path) -> None:
    (staging / Path(SCHEMA_FILE).parent).mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), staging / DATA_FILE)
    dump_json(visualization(frame, schema), staging / VISUALIZATION_FILE)
    samples = [
        json_safe(dict(zip(frame.columns, row, strict=True)))
        for row in frame.head(SAMPLE_COUNT).itertuples(index=False, name=None)
    ]
    dump_json(samples, staging / SAMPLES_FILE)
    dump_json(schema, staging / SCHEMA_FILE)
    meta = {
        "type": "DataFrameDirectory",
        "visualization": [{"type": "Visualization", "path": VISUALIZATION_FILE}],
        "extension": {},
        "format": "Parquet",
        "data": DATA_FILE,
        "samples": SAMPLES_FILE,
        "schema": SCHEMA_FILE,
    }
    dump_yaml(meta, staging / "_meta.yaml")
