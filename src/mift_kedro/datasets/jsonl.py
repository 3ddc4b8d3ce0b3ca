"""Strict JSON Lines reading: a malformed line is an error that names file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from mift_kedro.config import DataError


def read_jsonl(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a JSONL file into a DataFrame; raise on a malformed line or a missing column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    rows = []
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}:{lineno}: not UTF-8 (byte {raw[exc.start]:#04x} at column {exc.start + 1}); "
                    "save the file as UTF-8 or delete that line"
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}:{lineno}: malformed JSON line ({exc.msg}); fix or delete that line"
                ) from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    frame = pd.DataFrame(rows)
    if columns:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {missing}; expected {columns} "
                f"(found {list(frame.columns)})"
            )
    return frame
