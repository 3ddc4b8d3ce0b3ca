"""Strict JSON Lines reading: a malformed line is an error that names file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def read_jsonl(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a JSONL file into a DataFrame; raise on a malformed line or a missing column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"{path}:{lineno}: malformed JSON line ({exc.msg}); fix or delete that line"
                ) from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    frame = pd.DataFrame(rows)
    if columns:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {missing}; expected {columns} "
                f"(found {list(frame.columns)})"
            )
    return frame
