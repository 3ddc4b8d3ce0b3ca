"""Wall time of the data_engineering pipeline on large generated sources.

Writes a classification source (6 string classes, two renamed text columns, CSV), an
instruction source (JSONL) and a chat source (ShareGPT layout, Parquet) of ``--rows`` rows
each, configures them as a project environment, and times ``kedro run --pipelines
data_engineering`` (the real pipeline through the real catalog) ``--repeats`` times in a
fresh process each. Prints min / median / max of the process's wall time and of the pipeline's own (the
hooks' ``pipeline_timings``, without imports and session start), and checks every repeat wrote the same training
sets (content hashes).

    python benchmarks/bench_sources.py --rows 100000 --repeats 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["billing", "delivery", "returns", "account", "technical issue", "other"]


def _texts(rng: np.random.Generator, words: np.ndarray, n: int, length: int) -> list[str]:
    picks = rng.integers(0, len(words), size=(n, length))
    return [" ".join(row) for row in words[picks]]


def write_sources(out: Path, rows: int, seed: int = 0) -> dict[str, dict[str, str]]:
    """Three generated sources of ``rows`` rows per train split (a tenth for test)."""
    rng = np.random.default_rng(seed)
    alpaca = pd.read_json(ROOT.parent / "shared" / "data" / "alpaca" / "train.jsonl", lines=True) \
        if (ROOT.parent / "shared" / "data").is_dir() else None
    vocabulary = " ".join(alpaca["output"]).split() if alpaca is not None else [f"w{i}" for i in range(5000)]
    words = np.array(sorted(set(vocabulary)))
    files: dict[str, dict[str, str]] = {"tickets": {}, "notes": {}, "chats": {}}
    for split, n in (("train", rows), ("test", rows // 10)):
        subject, body = _texts(rng, words, n, 6), _texts(rng, words, n, 30)
        labels = np.array(CLASSES)[rng.integers(0, len(CLASSES), n)]
        pd.DataFrame({"subject": subject, "body": body, "queue": labels}).to_csv(out / f"tickets_{split}.csv", index=False)
        instructions, outputs = _texts(rng, words, n, 12), _texts(rng, words, n, 40)
        pd.DataFrame({"task": instructions, "context": "", "answer": outputs}).to_json(
            out / f"notes_{split}.jsonl", orient="records", lines=True)
        chats = [[{"from": "human", "value": q}, {"from": "gpt", "value": a}] for q, a in zip(instructions, outputs, strict=True)]
        pd.DataFrame({"conversations": chats}).to_parquet(out / f"chats_{split}.parquet")
        files["tickets"][split] = str(out / f"tickets_{split}.csv")
        files["notes"][split] = str(out / f"notes_{split}.jsonl")
        files["chats"][split] = str(out / f"chats_{split}.parquet")
    return files


def parameters(files: dict[str, dict[str, str]], budget: int, eval_size: int) -> dict:
    return {
        "sources": {
            "tickets": {"kind": "classification", "files": files["tickets"],
                        "fields": {"text": ["subject", "body"], "label": "queue"},
                        "labels": {c: c for c in CLASSES},
                        "template": "Route this ticket to one of: {labels}.\n\nSubject: {subject}\n\n{body}"},
            "notes": {"kind": "instruction", "files": files["notes"],
                      "fields": {"instruction": "task", "input": "context", "output": "answer"}},
            "chats": {"kind": "chat", "files": files["chats"],
                      "fields": {"messages": "conversations", "role": "from", "content": "value",
                                 "user": "human", "assistant": "gpt"}},
        },
        "eval_sets": {"tickets": {"size": eval_size, "max_new_tokens": 8},
                      "notes": {"size": eval_size, "max_new_tokens": 64},
                      "chats": {"size": eval_size, "max_new_tokens": 64}},
        "variants": {
            "tickets_only": {"display_name": "FT-Tickets", "budget": budget, "mix": {"tickets": 1.0}},
            "mixed": {"display_name": "FT-Mixed", "budget": budget,
                      "mix": {"tickets": 0.5, "notes": 0.25, "chats": 0.25}},
        },
    }


def _hashes(project: Path) -> dict[str, str]:
    out = {}
    for path in sorted((project / "data" / "05_model_input").rglob("*.jsonl")):
        if path.is_file():
            out[str(path.relative_to(project / "data" / "05_model_input").parts[0]) + "/" + path.stem] = \
                hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=int, default=8000)
    args = parser.parse_args()
    import yaml

    work = Path(tempfile.mkdtemp(prefix="bench_sources_"))
    (work / "data").mkdir()
    files = write_sources(work / "data", args.rows)
    seconds, pipeline_seconds, hashes, load_before = [], [], [], []
    for repeat in range(args.repeats):
        project = work / f"project{repeat}"
        project.mkdir()
        for name in ("pyproject.toml", ".telemetry"):
            if (ROOT / name).exists():
                shutil.copy(ROOT / name, project / name)
        shutil.copytree(ROOT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
        (project / "conf" / "local").mkdir()
        (project / "conf" / "bench").mkdir()
        (project / "conf" / "bench" / "parameters.yml").write_text(yaml.safe_dump(parameters(files, args.budget, min(1200, args.rows // 25))))
        (project / "src").mkdir()
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        load_before.append(round(os.getloadavg()[0], 2))
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "kedro", "run", "--env", "bench", "--pipelines", "data_engineering"],
            cwd=project, env=env, capture_output=True, text=True,
        )
        seconds.append(time.perf_counter() - start)
        if result.returncode:
            sys.exit(result.stdout[-3000:] + result.stderr[-3000:])
        hashes.append(_hashes(project))
        timings = next((project / "data" / "08_reporting").rglob("pipeline_timings.json/*/pipeline_timings.json"))
        pipeline_seconds.append(json.loads(timings.read_text())["pipeline_wall_s"])
        shutil.rmtree(project)
    assert all(h == hashes[0] for h in hashes), "repeats wrote different training or evaluation sets"
    record = {
        "rows_per_source": args.rows, "eval_size": min(1200, args.rows // 25), "sources": 3, "variants": 2, "budget": args.budget,
        "repeats": args.repeats, "seconds": [round(s, 2) for s in seconds],
        "min_s": round(min(seconds), 2), "median_s": round(statistics.median(seconds), 2),
        "max_s": round(max(seconds), 2),
        # the run without the process start (imports, Kedro session): the hooks' pipeline_timings
        "pipeline_seconds": pipeline_seconds, "pipeline_min_s": min(pipeline_seconds),
        "pipeline_median_s": statistics.median(pipeline_seconds), "pipeline_max_s": max(pipeline_seconds),
        "outputs_equal": True, "cpu_count": os.cpu_count(),
        # the 1-minute load average before each repeat: other work on the same cores slows it
        "load_average_before": load_before,
    }
    sys.stdout.write(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
