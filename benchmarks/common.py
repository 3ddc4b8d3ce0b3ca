"""What every speed benchmark shares: the model, the machine, interleaved repeats, the record.

A benchmark runs each configuration ``repeats`` times, interleaved (the order rotates every
repeat, so a slower or busier moment of the machine does not fall on one configuration), and
writes one JSON record to ``docs/results/bench/<name>.json``:

    {"benchmark", "title", "command", "date", "machine", "repeats", "unit", "project",
     "cases": [{"case", "checks", "rows": [{"config", "values", "min", "median", "max",
                                           "project_speedup": {"values", "min", "median", "max"}}]}],
     "notes": [...]}

``values`` are rates (higher is faster); ``project_speedup`` is the project's rate over this
configuration's, repeat by repeat. The speed tables of docs/benchmarks.md are rendered from these records
by ``python -m mift_kedro.results render-readme`` (blocks ``results:bench:<name>``).
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs/results/bench"
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def model_ref() -> str:
    """The embedded model as the pipeline's prepare_base_model node converts it: once per
    machine (~/.cache/mift_kedro/converted, ~40 s the first time, not timed), then reused."""
    from mift_kedro import models
    from mift_kedro.pipelines.training.nodes import prepare_base_model

    return str(prepare_base_model({"source": "embedded", "name": models.EMBEDDED_GGUF}).directory)


def latest_model_input(relative: str) -> Any:
    """The newest version of a data_engineering output under ``data/05_model_input``, as a frame."""
    import pandas as pd

    name = Path(relative).name
    files = sorted((ROOT / "data/05_model_input").glob(f"{relative}/*/{name}"))
    if not files:
        sys.exit(
            f"No data/05_model_input/{relative}: run `MIFT_DATA_DIR=../shared/data kedro run "
            "--pipelines data_engineering` first."
        )
    return pd.read_json(files[-1], lines=True, dtype=False)


def machine(threads: int | None = None) -> str:
    """CPU model and count (or the GPU), torch version and the threads used."""
    import os

    import torch

    if torch.cuda.is_available():
        where = f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    else:
        from mift_kedro.threads import cpu_model

        where = f"{cpu_model()}, {os.cpu_count()} CPUs"
    used = f", {threads} torch thread(s)" if threads else ""
    return f"{where}; torch {torch.__version__}{used}"


def interleaved(runners: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[Any]]:
    """Each runner ``repeats`` times, the order rotated every repeat."""
    names = list(runners)
    results: dict[str, list[Any]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(runners[name]())
            say(f"  repeat {repeat + 1}/{repeats} {name}: done")
    return results


def spread(values: list[float]) -> dict[str, Any]:
    return {
        "values": [round(v, 4) for v in values],
        "min": round(min(values), 4),
        "median": round(statistics.median(values), 4),
        "max": round(max(values), 4),
    }


def row(config: str, rates: list[float], project_rates: list[float] | None = None, **extra: Any) -> dict[str, Any]:
    """One configuration's rates; with the project's rates of the same repeats, the speed-up."""
    record = {"config": config, **spread(rates), **extra}
    if project_rates is not None:
        record["project_speedup"] = spread([p / r for p, r in zip(project_rates, rates, strict=True)])
    return record


def write_record(name: str, record: dict[str, Any], out: str | None = None) -> Path:
    """Date, command and machine are added here; the file is what docs/benchmarks.md renders."""
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    script = Path(sys.argv[0]).resolve()
    script_name = str(script.relative_to(ROOT)) if script.is_relative_to(ROOT) else sys.argv[0]
    full = {
        "benchmark": name,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python " + shlex.join([script_name, *sys.argv[1:]]),
        **record,
    }
    path.write_text(json.dumps(full, indent=2) + "\n")
    say(f"wrote {path}")
    return path
