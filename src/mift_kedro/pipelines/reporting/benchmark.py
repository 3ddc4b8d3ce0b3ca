"""Standard multiple-choice benchmarks, scored by log-likelihood through lm-evaluation-harness.

Free-text metrics (BLEU, ROUGE, BERTScore) reward wording and have wide intervals; the field
measures what fine-tuning costs elsewhere with benchmarks such as ARC, HellaSwag or MMLU, each
answer choice scored by the log-probability the model gives it. These functions run lm-eval's
own tasks through its Python API, with its ``HFLM`` wrapping the model the node already loaded
(the base model, or base + adapter), so every row is scored on the same checksummed base weights
as generation, and they keep lm-eval's per-sample results (``log_samples``), from which the
reporting pipeline computes bootstrap CIs and paired tests like those of tables A/B/C.

Data: a task named in ``reporting.benchmarks.tasks`` is lm-eval's stock task (its dataset from
the Hugging Face Hub) unless it has ``local_dir``: then it is pointed at local JSON Lines files
in the ``allenai/ai2_arc`` schema (``{id, question, choices: {text, label}, answerKey}``, 3-5
choices, letter or numeric labels) by a task-config override, ARC's prompt and answer mapping
included, so any lm-eval multiple-choice task can be scored offline from such files.
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mift_kedro.config import ParameterError
from mift_kedro.pipelines.reporting.params import BenchmarksParams, BenchmarkTask

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "MIFT_DATA_DIR"
#: Local splits looked for in a task's ``local_dir``: ``<split>.jsonl``.
SPLITS = ("train", "validation", "test")
#: How a question in the ``allenai/ai2_arc`` schema is asked and scored (lm-eval's ``arc_easy``).
ARC_SCHEMA = {
    "output_type": "multiple_choice",
    "doc_to_text": "Question: {{question}}\nAnswer:",
    "doc_to_target": "{{choices.label.index(answerKey)}}",
    "doc_to_choice": "{{choices.text}}",
    "metric_list": [
        {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
        {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
    ],
}
#: Keys of a stock task config that belong to its own dataset schema, dropped for local files.
SCHEMA_KEYS = (
    "dataset_name", "dataset_kwargs", "process_docs", "process_results", "doc_to_decontamination_query",
    "should_decontaminate", "training_split", "validation_split", "test_split", "fewshot_split",
    "tag", "filter_list", "doc_to_image", "doc_to_audio",
)
#: The per-sample metrics kept from lm-eval (every multiple-choice task reports both).
SAMPLE_METRICS = ("acc", "acc_norm")
SAMPLE_COLUMNS = [
    "model", "display_name", "task", "subtask", "doc_id", "id", "target", "n_choices",
    "loglikelihoods", "pred", "acc", "acc_norm", "doc_hash",
    "base_ref", "base_quantization", "base_dtype", "base_checksum",
]


def data_dir() -> Path | None:
    value = os.environ.get(DATA_DIR_ENV)
    return Path(value).expanduser() if value else None


@functools.lru_cache(maxsize=1)
def task_manager() -> Any:
    """lm-eval's index of its tasks (built once per process: it reads every task YAML, ~6 s)."""
    from lm_eval.tasks import TaskManager

    return TaskManager()


def _where(name: str, key: str | None = None) -> str:
    return f"reporting.benchmarks.tasks.{name}" + (f".{key}" if key else "")


def local_files(name: str, task: BenchmarkTask, root: Path | None) -> dict[str, Path] | None:
    """The task's local ``<split>.jsonl`` files, or None for the stock task.

    A relative ``local_dir`` is under ``MIFT_DATA_DIR`` and used only when that is set (else
    the stock task, from the Hub); an absolute one is always used. The scored split must exist.
    """
    if task.local_dir is None:
        return None
    folder = Path(task.local_dir).expanduser()
    if not folder.is_absolute():
        if root is None:
            return None
        folder = root / folder
    files = {split: folder / f"{split}.jsonl" for split in SPLITS if (folder / f"{split}.jsonl").is_file()}
    if (folder / f"{task.split}.jsonl").is_file():
        files[task.split] = folder / f"{task.split}.jsonl"
    if task.split not in files:
        raise ParameterError(
            f"{_where(name, 'local_dir')}: no file {folder / f'{task.split}.jsonl'} (the split "
            f"scored, {_where(name, 'split')}={task.split!r}). Put the task's questions there in the "
            f"allenai/ai2_arc schema, fix local_dir or split, or set local_dir: null for the stock task."
        )
    return files


def kind_of(name: str, manager: Any) -> str:
    """``tag``, ``group`` or ``task``: what lm-eval's public task lists say ``name`` is."""
    if name in manager.all_tags:
        return "tag"
    return "group" if name in manager.all_groups else "task"


def task_spec(name: str, task: BenchmarkTask, num_fewshot: int, manager: Any, root: Path | None) -> str | dict:
    """What lm-eval is asked to run: the stock task's name, or its config over local files
    (``dataset_path: json``, ARC's prompt, answer mapping and metrics; the stock task's
    description, delimiters and version kept). Raises :class:`ParameterError` naming the key."""
    from lm_eval.tasks._yaml_loader import load_yaml  # no public reader resolves `include:`

    entry = manager.task_index.get(name)
    if entry is None:
        close = difflib.get_close_matches(name, manager.all_tasks, n=3)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise ParameterError(
            f"{_where(name)}: lm-eval has no task {name!r}{hint}; list them with `lm_eval ls tasks`."
        )
    files = local_files(name, task, root)
    if files is None:
        return name
    kind = kind_of(name, manager)
    if kind != "task" or entry.yaml_path is None:
        raise ParameterError(
            f"{_where(name, 'local_dir')}: {name!r} is an lm-eval {kind}, not one "
            "task; local files stand for one task: name one of its tasks instead."
        )
    stock = load_yaml(entry.yaml_path, resolve_func=True)
    if stock.get("output_type") != "multiple_choice":
        raise ParameterError(
            f"{_where(name)}: {name!r} is a {stock.get('output_type')} task; only multiple-choice "
            "tasks are scored from local ai2_arc-schema files."
        )
    config = {k: v for k, v in stock.items() if k not in SCHEMA_KEYS}
    fewshot = next((s for s in ("train", "validation") if s in files and s != task.split), None)
    if num_fewshot and fewshot is None:
        raise ParameterError(
            f"reporting.benchmarks.num_fewshot={num_fewshot} needs examples apart from the scored "
            f"split: add train.jsonl or validation.jsonl to {_where(name, 'local_dir')}, or set it to 0."
        )
    config.update(
        ARC_SCHEMA,
        task=name,
        dataset_path="json",
        dataset_kwargs={"data_files": {split: str(path) for split, path in files.items()}},
        test_split=task.split,
        **({"fewshot_split": fewshot} if fewshot else {}),
    )
    return config


def task_specs(cfg: BenchmarksParams, root: Path | None = None, manager: Any = None) -> dict[str, str | dict]:
    """Every configured task's spec (:func:`task_spec`); checks them all before any is run."""
    if not cfg.tasks:
        return {}
    manager = manager or task_manager()
    return {name: task_spec(name, cfg.task(name), cfg.num_fewshot, manager, root) for name in cfg.tasks}


def hub_datasets(cfg: BenchmarksParams, root: Path | None = None, manager: Any = None) -> dict[str, set[tuple[str, str | None]]]:
    """Per task scored from the Hub, the ``(dataset_path, revision)`` its leaf tasks load
    (groups and tags followed down to their tasks), for the Hub preflight."""
    from lm_eval.tasks._yaml_loader import load_yaml  # no public reader resolves `include:`

    manager = manager or task_manager()
    specs = task_specs(cfg, root, manager)

    def leaves(name: str, depth: int = 0) -> set[tuple[str, str | None]]:
        entry = manager.task_index.get(name)
        if entry is None or depth > 5:
            return set()
        kind = kind_of(name, manager)
        if kind == "tag":
            return set().union(*(leaves(t, depth + 1) for t in entry.tags)) if entry.tags else set()
        raw = load_yaml(entry.yaml_path, resolve_func=False) if entry.yaml_path else (entry.cfg or {})
        if kind == "group":
            members = raw.get("task") or []
            names = [m if isinstance(m, str) else m.get("task") for m in members]
            return set().union(*(leaves(n, depth + 1) for n in names if isinstance(n, str))) if names else set()
        path = raw.get("dataset_path")
        revision = (raw.get("dataset_kwargs") or {}).get("revision")
        return {(path, revision)} if path and path not in ("json", "csv", "parquet", "text") else set()

    return {name: leaves(name) for name, spec in specs.items() if isinstance(spec, str)}


def evaluate(
    model: Any,
    tokenizer: Any,
    cfg: BenchmarksParams,
    *,
    model_name: str,
    display_name: str,
    seed: int = 0,
    root: Path | None = None,
) -> pd.DataFrame:
    """One row per (task, question) for ``model`` (a transformers model or a PeftModel):
    lm-eval's per-sample log-likelihoods, target, acc and acc_norm, and the base weights."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    from mift_kedro import models

    specs = task_specs(cfg, root)
    if not specs:
        return pd.DataFrame(columns=SAMPLE_COLUMNS)
    base_weights = models.base_weights_signature(model)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=cfg.batch_size)
    rows = []
    for name, spec in specs.items():
        start = time.perf_counter()
        out = simple_evaluate(
            model=lm, tasks=[spec], num_fewshot=cfg.num_fewshot, limit=cfg.limit, log_samples=True,
            apply_chat_template=cfg.apply_chat_template, task_manager=task_manager(),
            bootstrap_iters=0, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
        count = 0
        for subtask, samples in out["samples"].items():
            count += len(samples)
            rows += [
                sample_row(s, task=name, subtask=subtask, model_name=model_name, display_name=display_name,
                           base_weights=base_weights)
                for s in samples
            ]
        logger.info(
            "%s on %s: %d questions scored in %.1f s (%s)", model_name, name, count,
            time.perf_counter() - start, "local files" if isinstance(spec, dict) else "stock task",
        )
    return pd.DataFrame(rows, columns=SAMPLE_COLUMNS)


def sample_row(
    sample: dict[str, Any], *, task: str, subtask: str, model_name: str, display_name: str,
    base_weights: dict[str, str],
) -> dict[str, Any]:
    """One of lm-eval's logged samples as a flat row; ``pred`` is the argmax of the choices'
    summed log-likelihoods (lm-eval's ``acc`` is ``pred == target``)."""
    lls = [float(r[0]) for r in sample["filtered_resps"]]
    doc = sample.get("doc") or {}
    return {
        "model": model_name, "display_name": display_name, "task": task, "subtask": subtask,
        "doc_id": int(sample["doc_id"]),
        "id": str(doc.get("id", sample["doc_id"])) if isinstance(doc, dict) else str(sample["doc_id"]),
        "target": _target(sample["target"]), "n_choices": len(lls), "loglikelihoods": lls,
        "pred": int(np.argmax(lls)),
        **{m: float(sample[m]) for m in SAMPLE_METRICS},
        "doc_hash": sample.get("doc_hash"),
        **base_weights,
    }


def _target(value: Any) -> int | str:
    try:
        return int(value)
    except (TypeError, ValueError):
        return str(value)


def paired_samples(samples: pd.DataFrame, task: str) -> dict[str, pd.DataFrame]:
    """Per model, the task's questions that every model answered, in one order (paired).

    The same question must be the same document for every model (``doc_hash``): a file that
    changed between runs would pair different questions."""
    subset = samples[samples["task"] == task].assign(key=lambda f: f["subtask"] + "/" + f["doc_id"].astype(str))
    common = set.intersection(*(set(g["key"]) for _, g in subset.groupby("model")))
    dropped = subset["key"].nunique() - len(common)
    if dropped:
        logger.warning("%s: %d question(s) not answered by every model are left out", task, dropped)
    kept = subset[subset["key"].isin(common)]
    if kept.groupby("key")["doc_hash"].nunique().max() > 1:
        raise ValueError(
            f"Benchmark {task!r}: the models were scored on different questions under the same ids "
            "(the task's data changed between their runs). Score them again in one run: "
            "`kedro run --pipelines reporting`."
        )
    return {
        m: g.sort_values("key").reset_index(drop=True) for m, g in kept.groupby("model", sort=False)
    }
