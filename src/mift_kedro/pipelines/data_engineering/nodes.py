"""Data engineering nodes: validate raw rows, template them as conversations, mix variants.

Pure functions of DataFrames and parameter dicts, testable without Kedro. Every row a
filter drops is counted and logged with the reason.
"""

from __future__ import annotations

import hashlib
import html
import logging
from typing import Any

import numpy as np
import pandas as pd

from mift_kedro.chat import assistant_message, system_message, user_message
from mift_kedro.config import variant_spec
from mift_kedro.pipelines.data_engineering.params import SentimentTemplate

logger = logging.getLogger(__name__)

TWEET_COLUMNS = ["text", "feeling"]
ALPACA_COLUMNS = ["instruction", "input", "output"]
OUT_OF_SAMPLE_COLUMNS = ["id", "task_type", "instruction", "input", "output"]
#: Columns of every templated pool, training set and evaluation set.
RECORD_COLUMNS = ["id", "source", "prompt", "completion", "label"]


def _require_columns(frame: pd.DataFrame, columns: list[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{name}: missing column(s) {missing}; expected {columns}, found {list(frame.columns)}. "
            "Point the catalog entry at data in the Hub dataset's schema."
        )


def _drop(frame: pd.DataFrame, bad: pd.Series, reason: str, name: str) -> pd.DataFrame:
    count = int(bad.sum())
    if count:
        logger.warning("%s: dropped %d row(s) with %s", name, count, reason)
    return frame.loc[~bad]


def _normalise_text(series: pd.Series) -> pd.Series:
    """Unescape HTML entities (the corpus has ``&quot;``) and collapse runs of whitespace."""
    return series.map(lambda t: " ".join(html.unescape(t).split()) if isinstance(t, str) else t)


def _stable_id(prefix: str, *parts: str) -> str:
    digest = hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()[:12]
    return f"{prefix}-{digest}"


def clean_tweets(raw: pd.DataFrame, name: str = "tweets") -> pd.DataFrame:
    """Validated tweets: text non-empty, ``feeling`` in {0, 1}, each text once."""
    _require_columns(raw, TWEET_COLUMNS, name)
    frame = raw[TWEET_COLUMNS].copy()
    frame["text"] = _normalise_text(frame["text"])
    empty = ~frame["text"].map(lambda t: isinstance(t, str) and bool(t.strip()))
    frame = _drop(frame, empty, "empty or non-string text", name)
    valid_label = frame["feeling"].map(
        lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v in (0, 1)
    )
    frame = _drop(frame, ~valid_label, "a label not in {0, 1}", name)
    frame = _drop(frame, frame.duplicated("text"), "duplicate text", name)
    logger.info("%s: %d valid tweets", name, len(frame))
    return frame.astype({"feeling": int}).reset_index(drop=True)


def clean_alpaca(raw: pd.DataFrame, name: str = "alpaca") -> pd.DataFrame:
    """Validated Alpaca records: instruction and output non-empty, each record once."""
    _require_columns(raw, ALPACA_COLUMNS, name)
    frame = raw[ALPACA_COLUMNS].copy()
    frame["input"] = frame["input"].fillna("")
    for column in ("instruction", "output"):
        empty = ~frame[column].map(lambda t: isinstance(t, str) and bool(t.strip()))
        frame = _drop(frame, empty, f"empty {column}", name)
    frame = _drop(frame, frame.duplicated(ALPACA_COLUMNS), "duplicate record", name)
    logger.info("%s: %d valid records", name, len(frame))
    return frame.reset_index(drop=True)


def template_sentiment(tweets: pd.DataFrame, template: dict[str, Any]) -> pd.DataFrame:
    """Each tweet as the custom instruction: a user prompt (after the template's system prompt,
    if it has one) and the one-word answer."""
    spec = SentimentTemplate.model_validate(template)
    return pd.DataFrame(
        {
            "id": [_stable_id("sentiment", t) for t in tweets["text"]],
            "source": "sentiment",
            "prompt": [system_message(spec.system) + user_message(spec.instruction, t) for t in tweets["text"]],
            "completion": [assistant_message(spec.labels[int(y)]) for y in tweets["feeling"]],
            "label": tweets["feeling"].astype(int).to_numpy(),
        },
        columns=RECORD_COLUMNS,
    )


def template_alpaca(records: pd.DataFrame) -> pd.DataFrame:
    """Alpaca records keep their own instruction, input and output."""
    rows = records.itertuples(index=False)
    return pd.DataFrame(
        [
            {
                "id": _stable_id("alpaca", r.instruction, r.input, r.output),
                "source": "alpaca",
                "prompt": user_message(r.instruction, r.input),
                "completion": assistant_message(r.output),
                "label": None,
            }
            for r in rows
        ],
        columns=RECORD_COLUMNS,
    )


def _take(pool: pd.DataFrame, count: int, rng: np.random.Generator, what: str, fix: str) -> pd.DataFrame:
    """``count`` rows drawn without replacement; when the pool is smaller, an error naming ``fix``
    (the parameter to change)."""
    if count > len(pool):
        raise ValueError(f"{what}: needs {count} examples but only {len(pool)} are available; {fix}.")
    return pool.iloc[rng.permutation(len(pool))[:count]]


def _budget_fix(display_name: str) -> str:
    return (
        f"lower the `budget` of variant {display_name!r} (`variants.<name>.budget`), change its "
        "`mix`, or provide more data"
    )


def _balanced_sentiment(pool: pd.DataFrame, count: int, seed: int, what: str, fix: str) -> pd.DataFrame:
    """``count`` tweets, half per label (the odd one to a seeded label).

    Each label's rows are drawn from one seeded permutation, so variants with the same seed
    get nested sentiment subsets: a smaller share is a prefix of a larger one.
    """
    rng = np.random.default_rng(seed)
    per_label = {0: count // 2, 1: count // 2}
    if count % 2:
        per_label[int(rng.integers(2))] += 1
    parts = [
        _take(pool[pool["label"] == label], n, np.random.default_rng([seed, label]), f"{what} (label {label})", fix)
        for label, n in per_label.items()
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


def mix_training_set(
    sentiment_pool: pd.DataFrame, alpaca_pool: pd.DataFrame, variant: dict[str, Any], seed: int
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The variant's training set and its composition report, deterministic under ``seed``."""
    spec = variant_spec(variant)
    counts = _source_counts(variant)
    parts = []
    if counts.get("sentiment"):
        parts.append(_balanced_sentiment(
            sentiment_pool, counts["sentiment"], seed, spec.display_name, _budget_fix(spec.display_name)
        ))
    if counts.get("alpaca"):
        parts.append(
            _take(alpaca_pool, counts["alpaca"], np.random.default_rng(seed), f"{spec.display_name} (alpaca)",
                  _budget_fix(spec.display_name))
        )
    mixed = pd.concat(parts)
    mixed = mixed.iloc[np.random.default_rng(seed).permutation(len(mixed))].reset_index(drop=True)
    composition = {
        "variant": spec.display_name,
        "seed": seed,
        "budget": spec.budget,
        "mix": spec.mix,
        "examples": len(mixed),
        "by_source": mixed["source"].value_counts().sort_index().to_dict(),
        "sentiment_by_label": {
            str(k): int(v)
            for k, v in mixed.loc[mixed["source"] == "sentiment", "label"].value_counts().sort_index().items()
        },
    }
    logger.info("%s: %d examples %s", spec.display_name, len(mixed), composition["by_source"])
    return mixed, composition


def _check_eval_size(pool: pd.DataFrame, spec: dict[str, Any] | None, name: str) -> int | None:
    """The requested size of an evaluation set, after checking the pool can give it."""
    if pool.empty:
        raise ValueError(f"evaluation set {name!r} is empty: check its source data")
    size = (spec or {}).get("size")
    if size is not None and size > len(pool):
        raise ValueError(
            f"evaluation set {name!r}: size {size} exceeds the {len(pool)} rows available; "
            f"lower `eval_sets.{name}.size`"
        )
    return size


def build_sentiment_eval(test_pool: pd.DataFrame, spec: dict[str, Any] | None, seed: int) -> pd.DataFrame:
    """(A) Held-out tweets, balanced across labels when sampled."""
    size = _check_eval_size(test_pool, spec, "sentiment")
    fix = "half of `eval_sets.sentiment.size` comes from each label: lower `eval_sets.sentiment.size`"
    pool = test_pool if size is None else _balanced_sentiment(test_pool, size, seed, "eval set 'sentiment'", fix)
    return pool.sort_values("id").reset_index(drop=True)


def build_alpaca_eval(test_pool: pd.DataFrame, spec: dict[str, Any] | None, seed: int) -> pd.DataFrame:
    """(C) Held-out Alpaca records."""
    size = _check_eval_size(test_pool, spec, "alpaca")
    fix = "lower `eval_sets.alpaca.size`"
    pool = test_pool if size is None else _take(test_pool, size, np.random.default_rng(seed), "eval set 'alpaca'", fix)
    return pool.sort_values("id").reset_index(drop=True)


def build_out_of_sample_eval(instructions: pd.DataFrame) -> pd.DataFrame:
    """(B) The project's own instructions of other task types, each with a reference answer."""
    _require_columns(instructions, OUT_OF_SAMPLE_COLUMNS, "out_of_sample_instructions")
    _check_eval_size(instructions, None, "out_of_sample")
    frame = instructions.copy()
    frame["input"] = frame["input"].fillna("")
    for column in ("instruction", "output"):
        empty = ~frame[column].map(lambda t: isinstance(t, str) and bool(t.strip()))
        frame = _drop(frame, empty, f"empty {column}", "out_of_sample_instructions")
    _check_eval_size(frame, None, "out_of_sample")
    return pd.DataFrame(
        {
            "id": frame["id"].astype(str),
            "source": "out_of_sample:" + frame["task_type"].astype(str),
            "prompt": [user_message(i, x) for i, x in zip(frame["instruction"], frame["input"])],
            "completion": [assistant_message(o) for o in frame["output"]],
            "label": None,
        },
        columns=RECORD_COLUMNS,
    )
