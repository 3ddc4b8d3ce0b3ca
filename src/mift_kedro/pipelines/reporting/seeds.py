"""Training-seed variance: each variant's metrics over the seeds it was trained with.

The bootstrap CIs of ``metrics`` measure how much a model's score would move with another
sample of evaluation examples; they say nothing about how much it would move with another
training run. With several ``training_seeds`` every variant is trained once per seed on the
same data, and :func:`seed_summary` gives, per variant, evaluation set and metric, the mean,
sample standard deviation, minimum and maximum of the per-seed values, so a difference between
variants can be held against training noise. Tables A/B/C, the forgetting curve and the
report show it beside the per-seed columns; with one seed they look as without this module.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mift_kedro.config import TrainedModel, trained_models
from mift_kedro.pipelines.reporting.stats import format_value

SUMMARY_COLUMNS = [
    "eval_set", "metric", "variant", "display_name", "n_seeds", "seeds", "models",
    "mean", "sd", "min", "max", "base_value", "mean_delta_vs_base", "higher_is_better",
]


def seed_summary(
    metrics: pd.DataFrame, variants: dict[str, Any], seeds: list[int] | None, base_model: str = "base"
) -> pd.DataFrame:
    """One row per (eval set, metric, variant): the variant's per-seed values aggregated.

    ``sd`` is the sample standard deviation (n - 1 in the denominator), NaN for one seed;
    ``seeds`` and ``models`` list, comma-separated, the seeds and model names that entered
    (a model missing from ``metrics`` is left out and ``n_seeds`` says how many remain);
    ``base_value`` is the base model's value and ``mean_delta_vs_base`` the mean of the seeds'
    paired differences from it.
    """
    by_variant: dict[str, list[TrainedModel]] = {}
    for model in trained_models(variants, seeds):
        by_variant.setdefault(model.variant, []).append(model)
    indexed = metrics.set_index(["eval_set", "metric", "model"])
    rows = []
    for eval_set, metric in dict.fromkeys(zip(metrics["eval_set"], metrics["metric"], strict=True)):
        base = (eval_set, metric, base_model)
        base_value = indexed.loc[base, "value"] if base in indexed.index else np.nan
        for variant, members in by_variant.items():
            present = [m for m in members if (eval_set, metric, m.name) in indexed.index]
            if not present:
                continue
            points = indexed.loc[[(eval_set, metric, m.name) for m in present]]
            values = points["value"].to_numpy(dtype=float)
            deltas = points["delta_vs_base"].to_numpy(dtype=float) if "delta_vs_base" in points else values * np.nan
            rows.append({
                "eval_set": eval_set, "metric": metric, "variant": variant,
                "display_name": (variants[variant] or {}).get("display_name", variant),
                "n_seeds": len(present),
                "seeds": ",".join(str(m.seed) for m in present),
                "models": ",".join(m.name for m in present),
                "mean": values.mean(),
                "sd": values.std(ddof=1) if len(values) > 1 else np.nan,
                "min": values.min(), "max": values.max(),
                "base_value": base_value,
                "mean_delta_vs_base": np.nan if np.isnan(deltas).all() else np.nanmean(deltas),
                "higher_is_better": points["higher_is_better"].iloc[0] if "higher_is_better" in points else np.nan,
            })
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def several_seeds(summary: pd.DataFrame | None) -> bool:
    """True when some variant was trained with more than one seed (else nothing to show)."""
    return summary is not None and not summary.empty and int(summary["n_seeds"].max()) > 1


def spread_text(row: pd.Series, metric: str) -> str:
    """``mean ± sd (min–max)`` of one summary row, numbers as in tables A/B/C."""
    return (
        f"{format_value(row['mean'], metric)} ± {format_value(row['sd'], metric)} "
        f"({format_value(row['min'], metric)}–{format_value(row['max'], metric)})"
    )


def spread_header(row: pd.Series) -> str:
    """The column title of a variant's spread: ``FT-CustomOnly over 3 seeds``."""
    return f"{row['display_name']} over {int(row['n_seeds'])} seeds"


def variants_of(summary: pd.DataFrame, eval_set: str) -> list[pd.Series]:
    """One summary row per variant of ``eval_set`` (the first metric's), for layout."""
    part = summary[summary["eval_set"] == eval_set]
    return [rows.iloc[0] for _, rows in part.groupby("variant", sort=False)]


def lookup(summary: pd.DataFrame, eval_set: str, metric: str, variant: str) -> pd.Series | None:
    hit = summary[(summary["eval_set"] == eval_set) & (summary["metric"] == metric) & (summary["variant"] == variant)]
    return None if hit.empty else hit.iloc[0]


SPREAD_NOTE = (
    "Over seeds: each variant trained once per training seed on the same data; mean ± sample "
    "standard deviation (min–max) of the per-seed values, i.e. training noise, beside the "
    "bootstrap CIs, which measure the sampling of evaluation examples only."
)
