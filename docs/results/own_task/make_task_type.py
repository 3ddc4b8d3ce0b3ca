"""Builds the six-class task of docs/own_task.md ("Training budget") from the Alpaca files.

The label is the kind of request, named by the noun of the instruction's first word:
generate -> generation, create -> creation, write -> writing, describe -> description,
explain -> explanation, find -> search. Instructions starting with any other word are left
out. Writes ``data/01_raw/task_type/{train,test}.csv`` (columns ``request``, ``task_type``)
from ``$MIFT_DATA_DIR/alpaca/{train,test}.jsonl``, in file order; the run then uses
``parameters.yml`` of this folder as ``conf/own_task/parameters.yml``:

    MIFT_DATA_DIR=../shared/data python docs/results/own_task/make_task_type.py
    mkdir -p conf/own_task && cp docs/results/own_task/parameters.yml conf/own_task/
    MIFT_DATA_DIR=../shared/data kedro run --env own_task
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from collections import Counter
from pathlib import Path

KINDS = {
    "generate": "generation", "create": "creation", "write": "writing",
    "describe": "description", "explain": "explanation", "find": "search",
}


def task_type(instruction: str) -> str | None:
    words = re.findall(r"[a-z]+", instruction.lower())
    return KINDS.get(words[0]) if words else None


def main() -> None:
    data_dir = os.environ.get("MIFT_DATA_DIR")
    if not data_dir:
        sys.exit("Set MIFT_DATA_DIR to the folder holding alpaca/{train,test}.jsonl.")
    out = Path("data/01_raw/task_type")
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        with open(Path(data_dir) / "alpaca" / f"{split}.jsonl", encoding="utf-8") as lines:
            records = [json.loads(line) for line in lines if line.strip()]
        rows = [(r["instruction"], kind) for r in records if (kind := task_type(r["instruction"]))]
        with open(out / f"{split}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["request", "task_type"])
            writer.writerows(rows)
        print(f"{out / f'{split}.csv'}: {len(rows)} rows of {len(records)}, {dict(Counter(k for _, k in rows))}")


if __name__ == "__main__":
    main()
