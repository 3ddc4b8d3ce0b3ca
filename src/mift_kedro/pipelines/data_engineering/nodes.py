"""Data engineering nodes: validate each source's rows, template them as conversations by the
source's kind, build the evaluation sets and mix each variant's training set.

Pure functions of DataFrames and parameter dicts, testable without Kedro. Every row a
filter drops is counted and logged with the reason.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
from typing import Any

import numpy as np
import pandas as pd

from mift_kedro.chat import assistant_message, system_message, user_message
from mift_kedro.config import ParameterError, variant_spec
from mift_kedro.pipelines.data_engineering.params import SourceSpec, source_spec

logger = logging.getLogger(__name__)

#: Columns of every training set and evaluation set.
RECORD_COLUMNS = ["id", "source", "prompt", "completion", "label"]
#: Pools and evaluation sets also keep the example's own text, for the overlap check.
POOL_COLUMNS = [*RECORD_COLUMNS, "text"]


def _require_columns(frame: pd.DataFrame, columns: list[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{name}: missing column(s) {missing}; found {list(frame.columns)}. Map the source's own "
            f"column names in `sources.{name.split('[')[0]}.fields`."
        )


def _drop(frame: pd.DataFrame, bad: pd.Series, reason: str, name: str) -> pd.DataFrame:
    count = int(bad.sum())
    if count:
        logger.warning("%s: dropped %d row(s) with %s", name, count, reason)
    return frame.loc[~bad]


def _normalise_text(series: pd.Series) -> pd.Series:
    """Unescape HTML entities (the tweets have ``&quot;``) and collapse runs of whitespace."""
    return series.map(lambda t: " ".join(html.unescape(t).split()) if isinstance(t, str) else t)


def _is_text(series: pd.Series) -> pd.Series:
    return series.map(lambda t: isinstance(t, str) and bool(t.strip()))


def _stable_id(prefix: str, *parts: str) -> str:
    digest = hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()[:12]
    return f"{prefix}-{digest}"


def overlap_key(text: str) -> str:
    """What "the same text" means for the evaluation-overlap check: case and spacing ignored."""
    return " ".join(str(text).lower().split())


def _label_key(value: Any) -> str | None:
    """A label as the map's key would print (1, 1.0 and "1" are one label); None when missing."""
    if value is None or isinstance(value, bool) or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, float | np.floating) and float(value).is_integer():
        value = int(value)
    return str(value)


# --- sources -> templated pools -------------------------------------------------------------


def prepare_source(
    raw: dict[str, pd.DataFrame], spec: dict[str, Any], name: str, splits: list[str]
) -> dict[str, pd.DataFrame]:
    """The ``splits`` of a source as pools of conversations (``POOL_COLUMNS``), by its kind."""
    parsed = source_spec(spec)
    missing = [s for s in splits if s not in raw]
    if missing:
        raise ParameterError(
            f"sources.{name}: no split(s) {missing} in its data (it has {list(raw)}); add them under "
            "`files`/`hub.splits`, carve one with `holdout`, or change `eval_sets.<name>.split`"
        )
    build = {"classification": classification_pool, "instruction": instruction_pool, "chat": chat_pool}[parsed.kind]
    return {split: build(raw[split], parsed, name, split) for split in splits}


def classification_pool(frame: pd.DataFrame, spec: SourceSpec, name: str, split: str = "") -> pd.DataFrame:
    """Rows with text and a label as a user prompt (the template) and the label's answer word."""
    where = f"{name}[{split}]"
    fields = spec.fields["text"]
    label_field = spec.fields["label"]
    _require_columns(frame, [*fields, label_field], where)
    frame = frame[[*fields, label_field]].copy()
    for field in fields:
        if spec.normalise_text:
            frame[field] = _normalise_text(frame[field])
        frame = _drop(frame, ~_is_text(frame[field]), f"empty or non-string `{field}`", where)
    keys = {str(k): k for k in spec.labels}
    raw_labels = frame[label_field].map(_label_key)
    frame = _drop(frame, raw_labels.isna(), f"no `{label_field}`", where)
    raw_labels = raw_labels.loc[frame.index]
    unknown = sorted(set(raw_labels) - set(keys))
    if unknown:
        raise ParameterError(
            f"sources.{name}.labels: the data has label(s) {unknown[:10]} that the map lacks "
            f"(it has {list(keys)}); add them to `sources.{name}.labels`"
        )
    frame = _drop(frame, frame.duplicated(fields), "duplicate text", where)
    labels = raw_labels.loc[frame.index].map(keys)
    answers = spec.answer_words()
    template = spec.prompt_template()
    label_list = ", ".join(words[0] for words in answers.values())
    columns = [frame[f].tolist() for f in fields]
    texts = list(zip(*columns, strict=True))
    system = system_message(spec.system)
    prompts = [
        system + user_message(template.format_map({"labels": label_list, **dict(zip(fields, t, strict=True))}))
        for t in texts
    ]
    logger.info("%s: %d valid examples", where, len(frame))
    return pd.DataFrame(
        {
            "id": [_stable_id(name, *t) for t in texts],
            "source": name,
            "prompt": prompts,
            "completion": [assistant_message(answers[y][0]) for y in labels],
            "label": labels.to_numpy(),
            "text": ["\n\n".join(t) for t in texts],
        },
        columns=POOL_COLUMNS,
    )


def instruction_pool(frame: pd.DataFrame, spec: SourceSpec, name: str, split: str = "") -> pd.DataFrame:
    """Instruction records (Alpaca-style) keep their own instruction, input and output."""
    where = f"{name}[{split}]"
    f = spec.fields
    wanted = [c for c in (f["instruction"], f["input"], f["output"], f["id"], f["group"]) if c]
    _require_columns(frame, wanted, where)
    frame = frame[wanted].copy()
    frame["_input"] = frame[f["input"]].fillna("") if f["input"] else ""
    for field in (f["instruction"], f["output"]):
        frame = _drop(frame, ~_is_text(frame[field]), f"empty `{field}`", where)
    frame = _drop(frame, frame.duplicated([f["instruction"], "_input", f["output"]]), "duplicate record", where)
    instructions, inputs, outputs = frame[f["instruction"]], frame["_input"], frame[f["output"]]
    ids = (
        frame[f["id"]].astype(str).tolist() if f["id"]
        else [_stable_id(name, i, x, o) for i, x, o in zip(instructions, inputs, outputs, strict=True)]
    )
    logger.info("%s: %d valid records", where, len(frame))
    return pd.DataFrame(
        {
            "id": ids,
            "source": (name + ":" + frame[f["group"]].astype(str)).to_numpy() if f["group"] else name,
            "prompt": [system_message(spec.system) + user_message(i, x) for i, x in zip(instructions, inputs, strict=True)],
            "completion": [assistant_message(o) for o in outputs],
            "label": None,
            "text": [f"{i}\n\n{x}" if x else i for i, x in zip(instructions, inputs, strict=True)],
        },
        columns=POOL_COLUMNS,
    )


def _conversation(messages: Any, fields: dict[str, str]) -> tuple[list[dict], list[dict]] | str:
    """(prompt, completion) of one conversation, or why it is unusable."""
    if isinstance(messages, np.ndarray):
        messages = messages.tolist()
    if not isinstance(messages, list) or not messages:
        return "no messages"
    roles = {fields["user"]: "user", fields["assistant"]: "assistant", fields["system"]: "system"}
    turns = []
    for message in messages:
        if not isinstance(message, dict):
            return "a message that is not an object"
        role = roles.get(message.get(fields["role"]))
        content = message.get(fields["content"])
        if role is None:
            return f"a role outside {sorted(roles)} (field `{fields['role']}`)"
        if not isinstance(content, str) or not content.strip():
            return "an empty message"
        turns.append({"role": role, "content": content})
    if turns[-1]["role"] != "assistant" or not any(t["role"] == "user" for t in turns[:-1]):
        return "no user turn followed by a final assistant turn"
    return turns[:-1], turns[-1:]


def chat_pool(frame: pd.DataFrame, spec: SourceSpec, name: str, split: str = "") -> pd.DataFrame:
    """Conversations: the final assistant turn is the completion (the loss), the turns before it
    the prompt. ShareGPT (``from``/``value``, ``human``/``gpt``) and OpenAI (``role``/``content``)
    layouts differ only in the field mapping."""
    where = f"{name}[{split}]"
    fields = spec.fields
    _require_columns(frame, [fields["messages"]], where)
    parsed = [_conversation(m, fields) for m in frame[fields["messages"]]]
    reasons = pd.Series([p if isinstance(p, str) else None for p in parsed], index=frame.index)
    for reason, count in reasons.value_counts().items():
        logger.warning("%s: dropped %d conversation(s) with %s", where, count, reason)
    kept = [p for p in parsed if not isinstance(p, str)]
    keys = [json.dumps(p, sort_keys=True, ensure_ascii=False) for p in kept]
    seen: set[str] = set()
    rows = []
    for key, (prompt, completion) in zip(keys, kept, strict=True):
        if key in seen:
            continue
        seen.add(key)
        rows.append({
            "id": _stable_id(name, key), "source": name, "prompt": prompt, "completion": completion,
            "label": None, "text": "\n\n".join(t["content"] for t in prompt if t["role"] == "user"),
        })
    if len(kept) > len(rows):
        logger.warning("%s: dropped %d duplicate conversation(s)", where, len(kept) - len(rows))
    logger.info("%s: %d valid conversations", where, len(rows))
    return pd.DataFrame(rows, columns=POOL_COLUMNS)


# --- sampling -------------------------------------------------------------------------------


def _take(pool: pd.DataFrame, count: int, rng: np.random.Generator, what: str, fix: str) -> pd.DataFrame:
    """``count`` rows drawn without replacement; when the pool is smaller, an error naming ``fix``
    (the parameter to change)."""
    if count > len(pool):
        raise ParameterError(f"{what}: needs {count} examples but only {len(pool)} are available; {fix}.")
    return pool.iloc[rng.permutation(len(pool))[:count]]


def _stratified(
    pool: pd.DataFrame, labels: list[Any], count: int, seed: int, what: str, fix: str
) -> pd.DataFrame:
    """``count`` examples, the same number per label (the remainder to seeded labels).

    Each label's rows are drawn from one seeded permutation, so budgets with the same seed are
    nested: a smaller budget's examples of a label are a prefix of a larger one's.
    """
    rng = np.random.default_rng(seed)
    per_label = [count // len(labels)] * len(labels)
    for i in rng.permutation(len(labels))[: count % len(labels)]:
        per_label[i] += 1
    keys = pool["label"].map(_label_key)
    parts = [
        _take(pool[keys == str(label)], n, np.random.default_rng([seed, i]), f"{what} (label {label!r})", fix)
        for i, (label, n) in enumerate(zip(labels, per_label, strict=True))
    ]
    return pd.concat(parts)


def _source_counts(variant: dict[str, Any]) -> dict[str, int]:
    """Examples per source: rounded shares of the budget that add up to the budget exactly."""
    spec = variant_spec(variant)
    shares = {s: f * spec.budget for s, f in spec.mix.items() if f > 0}
    counts = {s: int(np.floor(v)) for s, v in shares.items()}
    remainder = spec.budget - sum(counts.values())
    for source in sorted(shares, key=lambda s: shares[s] - counts[s], reverse=True)[:remainder]:
        counts[source] += 1
    return counts


def _sample(
    pool: pd.DataFrame, spec: SourceSpec, count: int, seed: int, what: str, fix: str
) -> pd.DataFrame:
    """Stratified by label for a classification source, else a seeded draw; both nested."""
    if spec.kind == "classification":
        return _stratified(pool, list(spec.labels), count, seed, what, fix)
    return _take(pool, count, np.random.default_rng(seed), what, fix)


def without_eval_overlap(
    pool: pd.DataFrame, eval_sets: dict[str, pd.DataFrame], name: str
) -> tuple[pd.DataFrame, int]:
    """The pool without examples whose text appears in an evaluation set, and how many those were."""
    seen = {overlap_key(t) for frame in eval_sets.values() for t in frame["text"]}
    overlapping = pool["text"].map(overlap_key).isin(seen)
    if overlapping.any():
        logger.warning("%s: %d training example(s) left out: their text is in an evaluation set",
                       name, int(overlapping.sum()))
    return pool.loc[~overlapping], int(overlapping.sum())


def mix_training_set(
    variant: dict[str, Any],
    seed: int,
    sources: dict[str, Any],
    *frames: pd.DataFrame,
    pools: list[str],
    evals: list[str],
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The variant's training set and its composition report, deterministic under ``seed``.

    ``frames`` are the train pools of ``pools`` (sources) and then the evaluation sets of
    ``evals``; no training example's text is in an evaluation set (the removals are counted).
    """
    spec = variant_spec(variant)
    fix = (
        f"lower the `budget` of variant {spec.display_name!r} (`variants.<name>.budget`), change its "
        "`mix`, or provide more data"
    )
    train = dict(zip(pools, frames[: len(pools)], strict=True))
    eval_sets = dict(zip(evals, frames[len(pools):], strict=True))
    counts = _source_counts(variant)
    parts, removed, by_label = [], {}, {}
    for name in [s for s in sources if counts.get(s)]:
        source = source_spec(sources[name])
        pool, removed[name] = without_eval_overlap(train[name], eval_sets, f"{spec.display_name} ({name})")
        part = _sample(pool, source, counts[name], seed, f"{spec.display_name} ({name})", fix)
        parts.append(part)
        if source.kind == "classification":
            by_label[name] = {str(k): int(v) for k, v in part["label"].value_counts().sort_index().items()}
    mixed = pd.concat(parts)[RECORD_COLUMNS]
    mixed = mixed.iloc[np.random.default_rng(seed).permutation(len(mixed))].reset_index(drop=True)
    composition = {
        "variant": spec.display_name,
        "seed": seed,
        "budget": spec.budget,
        "mix": spec.mix,
        "examples": len(mixed),
        "by_source": mixed["source"].value_counts().sort_index().to_dict(),
        "by_label": by_label,
        "removed_eval_overlap": removed,
    }
    logger.info("%s: %d examples %s", spec.display_name, len(mixed), composition["by_source"])
    return mixed, composition


def build_eval_set(
    pool: pd.DataFrame, spec: dict[str, Any], source: dict[str, Any], seed: int, name: str
) -> pd.DataFrame:
    """An evaluation set: the split's rows, or ``size`` of them (balanced across labels for a
    classification source), ordered by id."""
    if pool.empty:
        raise ValueError(f"evaluation set {name!r} is empty: check its source data")
    size = (spec or {}).get("size")
    if size is not None and size > len(pool):
        raise ParameterError(
            f"eval_sets.{name}.size: {size} exceeds the {len(pool)} rows available; lower it"
        )
    if size is not None:
        fix = f"lower `eval_sets.{name}.size`"
        pool = _sample(pool, source_spec(source), size, seed, f"eval set {name!r}", fix)
    return pool.sort_values("id").reset_index(drop=True)
