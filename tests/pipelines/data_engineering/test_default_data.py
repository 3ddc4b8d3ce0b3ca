"""The default configuration keeps making the same data: content hashes of every training set
and evaluation set that data_engineering writes (base and sweep environments) against the
hashes of the sets the project made before sources became configuration."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

#: The record fields a training or evaluation set is compared on (a later column is extra).
FIELDS = ("id", "source", "prompt", "completion", "label")

EVAL_HASHES = {
    ("eval", "alpaca"): (40, "a6e88bf93f5267e2bdb5bd430d883bafc0dada347be82b89c582d121d28cc479"),
    ("eval", "out_of_sample"): (10, "e976ac2d7409597f013fd2688141d5d023f47096f155c04e6c933135bcfaa326"),
    ("eval", "sentiment"): (200, "b89b46a17960a6b802257fafff869f2238245b48e2ae6795670803026fc300a9"),
}
CUSTOM_ONLY = (256, "96e2456021e97b4f46844e988b06149041dc3dda50f57afa1c415bfe7c4d1f49")
BOTH = (256, "bdd89d375b78f53693d4541f0df76374f984aaaa61dd288097ca40da8690af38")
EXPECTED = {
    None: {
        **EVAL_HASHES,
        ("custom_only", "training_set"): CUSTOM_ONLY,
        ("both_instructions", "training_set"): BOTH,
    },
    "sweep": {
        **EVAL_HASHES,
        ("alpaca_0", "training_set"): CUSTOM_ONLY,
        ("alpaca_25", "training_set"): (256, "a8204470c93e2300732a0235d20812ef34ebb38c4cd0666091b3ff85e7414748"),
        ("alpaca_50", "training_set"): BOTH,
        ("alpaca_75", "training_set"): (256, "3f432700e358ea8a6bffa1f79f45e53c5ae8ad7eaa1501e700924e87ac7e396b"),
        ("alpaca_100", "training_set"): (256, "9641a5a614d0e21ec8918da02caebdb6d5f09a1e0339d99b8e86fa25c68f2cec"),
    },
}


def _label(value):
    return int(value) if isinstance(value, float) and value.is_integer() else value


def rows_hash(path: Path) -> tuple[int, str]:
    """Row count and SHA-256 of the rows, in order, each as canonical JSON of :data:`FIELDS`."""
    digest = hashlib.sha256()
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for row in rows:
        record = {key: row.get(key) for key in FIELDS}
        record["label"] = _label(record["label"])
        digest.update(json.dumps(record, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n")
    return len(rows), digest.hexdigest()


def written_sets(project: Path) -> dict[tuple[str, str], tuple[int, str]]:
    """(folder, set name) -> rows_hash of every versioned file under 05_model_input."""
    found = {}
    for path in sorted((project / "data" / "05_model_input").rglob("*.jsonl")):
        if path.is_file():
            folder = path.relative_to(project / "data" / "05_model_input").parts[0]
            found[(folder, path.stem)] = rows_hash(path)
    return found


@pytest.mark.parametrize("env", [None, "sweep"], ids=["base", "sweep"])
def test_default_configuration_makes_the_same_sets(kedro_project, env):
    bootstrap_project(kedro_project)
    with KedroSession.create(project_path=kedro_project, env=env) as session:
        session.run(pipeline_names=["data_engineering"])
    assert written_sets(kedro_project) == EXPECTED[env]
