"""The forgetting curve: how in-domain and general skill move with the share of general
instructions in a fixed training budget (issue: mixing-ratio sweep).

Pure functions of the ``metrics`` table and the ``variants`` parameters; every variant is a
point at its Alpaca fraction, the base model a horizontal reference line.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from mift_kedro.pipelines.reporting import stats

#: (eval_set, metric) pairs on the curve: in-domain skill, then general skill.
DEFAULT_CURVE_METRICS = [
    ("sentiment", "accuracy"),
    ("sentiment", "macro_f1"),
    ("out_of_sample", "rougeL"),
    ("out_of_sample", "bertscore_f1"),
    ("alpaca", "rougeL"),
    ("alpaca", "bertscore_f1"),
]
CURVE_COLUMNS = [
    "eval_set", "metric", "model", "display_name", "alpaca_fraction",
    "value", "ci_low", "ci_high", "delta_vs_base", "p_value_vs_base", "p_holm_vs_base",
    "bootstrap_resamples", "base_value", "base_ci_low", "base_ci_high",
]


def forgetting_curve(
    metrics: pd.DataFrame,
    variants: dict[str, dict[str, Any]],
    curve_metrics: list[tuple[str, str]] | None = None,
    base_model: str = "base",
) -> pd.DataFrame:
    """One row per (eval_set, metric, variant): its Alpaca fraction, value and 95% CI, its paired
    difference from the base model, p-value and Holm-adjusted p-value (the family: every test on
    the curve), and the base model's value and CI. Metrics in the order asked for (in-domain
    first), variants by their fraction."""
    rows = []
    indexed = metrics.set_index(["eval_set", "metric", "model"])
    for eval_set, metric in curve_metrics or DEFAULT_CURVE_METRICS:
        if (eval_set, metric, base_model) not in indexed.index:
            continue  # e.g. an evaluation set this run did not score
        base = indexed.loc[(eval_set, metric, base_model)]
        for name, spec in sorted(variants.items(), key=lambda item: _alpaca_fraction(item[1])):
            if (eval_set, metric, name) not in indexed.index:
                continue
            point = indexed.loc[(eval_set, metric, name)]
            rows.append(
                {
                    "eval_set": eval_set, "metric": metric, "model": name,
                    "display_name": spec.get("display_name", name),
                    "alpaca_fraction": _alpaca_fraction(spec),
                    "value": point["value"], "ci_low": point["ci_low"], "ci_high": point["ci_high"],
                    # the paired comparison with the base model on the same items, when scored
                    "delta_vs_base": point.get("delta_vs_base"),
                    "p_value_vs_base": point.get("p_value_vs_base"),
                    "bootstrap_resamples": point.get("bootstrap_resamples"),
                    "base_value": base["value"], "base_ci_low": base["ci_low"], "base_ci_high": base["ci_high"],
                }
            )
    curve = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    curve["p_holm_vs_base"] = stats.holm(curve["p_value_vs_base"].astype(float))
    return curve


def _alpaca_fraction(spec: dict[str, Any]) -> float:
    return float(spec.get("mix", {}).get("alpaca", 0.0))


def curve_table(curve: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and rows: the base model, then one row per variant by Alpaca fraction; one column
    per metric, cells ``value [95% CI]``, for variants followed by ``(p, Holm p)`` against the
    base model (Holm over every test on the curve)."""
    keys = list(dict.fromkeys(curve["eval_set"] + " " + curve["metric"]))
    header = ["Alpaca fraction", "model", *keys]
    if curve.empty:
        return header, []
    cell = curve.assign(key=curve["eval_set"] + " " + curve["metric"], p_text=stats.comparison_texts(curve))
    base = cell.drop_duplicates("key").set_index("key")
    rows = [["—", "base", *(_interval(base.loc[k], "base_") for k in keys)]]
    for (fraction, name), part in cell.groupby(["alpaca_fraction", "display_name"], sort=True):
        values = part.set_index("key")
        rows.append([f"{fraction:.2f}", name, *(_interval(values.loc[k]) if k in values.index else "" for k in keys)])
    return header, rows


def _interval(point: pd.Series, prefix: str = "") -> str:
    """``value [ci_low, ci_high]`` of a curve row (``prefix="base_"``: the base model's), with
    ``(p, Holm p)`` for a variant's row that has a test."""
    text = f"{point[prefix + 'value']:.3f} [{point[prefix + 'ci_low']:.3f}, {point[prefix + 'ci_high']:.3f}]"
    p_text = "" if prefix else point.get("p_text", "")
    return f"{text} ({p_text})" if p_text else text


def curve_note(curve: pd.DataFrame) -> str:
    """The family statement of the curve's p-values."""
    return stats.family_note(curve, "on this curve (every variant on every metric)")


def forgetting_curve_markdown(curve: pd.DataFrame) -> str:
    """The curve as a Markdown table (see :func:`curve_table`), with its family statement."""
    if curve.empty:
        return "_No forgetting curve: no variant was scored._\n"
    header, rows = curve_table(curve)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", curve_note(curve)]
    return "\n".join(lines) + "\n"


def plot_forgetting_curve(curve: pd.DataFrame):
    """One panel per metric: the variants' values with 95% CI error bars against the Alpaca
    fraction, the base model as a horizontal line with its CI band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys(zip(curve["eval_set"], curve["metric"]))) or [("", "")]
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (eval_set, metric) in zip(axes.flat, panels):
        part = curve[(curve["eval_set"] == eval_set) & (curve["metric"] == metric)]
        if part.empty:
            continue
        ax.errorbar(
            part["alpaca_fraction"], part["value"],
            yerr=[part["value"] - part["ci_low"], part["ci_high"] - part["value"]],
            marker="o", capsize=3, label="fine-tuned",
        )
        base = part.iloc[0]
        ax.axhline(base["base_value"], color="grey", linestyle="--", label="base model")
        ax.axhspan(base["base_ci_low"], base["base_ci_high"], color="grey", alpha=0.15)
        ax.set_title(f"{eval_set}: {metric}")
        ax.set_xlabel("Alpaca fraction of the training budget")
        ax.set_xlim(-0.05, 1.05)
    axes.flat[0].legend(loc="best", fontsize="small")
    fig.suptitle("Forgetting curve (95% bootstrap CIs)")
    fig.tight_layout()
    return fig
