"""The forgetting curve: how in-domain and general skill move with the share of one source
(``reporting.forgetting_curve_axis``, default Alpaca's general instructions) in a fixed
training budget.

Pure functions of the ``metrics`` table and the ``variants`` parameters; every variant (every
training seed of it) is a point at its fraction of the axis source (the curve's column
``<source>_fraction``), the base model a horizontal reference line; with several training
seeds, ``seed_summary`` adds each variant's mean and spread.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from mift_kedro.config import TrainedModel, trained_models
from mift_kedro.pipelines.reporting import seeds, stats

#: (eval_set, metric) pairs on the curve: in-domain skill, then general skill.
DEFAULT_CURVE_METRICS = [
    ("sentiment", "accuracy"),
    ("sentiment", "macro_f1"),
    ("out_of_sample", "rougeL"),
    ("out_of_sample", "bertscore_f1"),
    ("alpaca", "rougeL"),
    ("alpaca", "bertscore_f1"),
]
#: The source whose fraction of each variant's mix is the curve's axis, unless configured.
DEFAULT_AXIS = "alpaca"
FRACTION_SUFFIX = "_fraction"


def curve_columns(axis: str = DEFAULT_AXIS) -> list[str]:
    """The curve table's columns; the fraction's is ``<axis>_fraction``."""
    return [
        "eval_set", "metric", "model", "display_name", fraction_column_of(axis),
        "value", "ci_low", "ci_high", "delta_vs_base", "p_value_vs_base", "p_holm_vs_base",
        "bootstrap_resamples", "base_value", "base_ci_low", "base_ci_high",
    ]


def fraction_column_of(axis: str) -> str:
    return f"{axis}{FRACTION_SUFFIX}"


def fraction_column(curve: pd.DataFrame) -> str:
    """The curve's fraction column (``<source>_fraction``)."""
    return next(c for c in curve.columns if c.endswith(FRACTION_SUFFIX))


def axis_source(curve: pd.DataFrame) -> str:
    """The axis source's name, capitalised (the default's ``Alpaca``)."""
    source = fraction_column(curve).removesuffix(FRACTION_SUFFIX)
    return f"{source[:1].upper()}{source[1:]}"


def axis_label(curve: pd.DataFrame) -> str:
    """``<Source> fraction`` (the default's ``Alpaca fraction``): the axis, by its source's name."""
    return f"{axis_source(curve)} fraction"


def forgetting_curve(
    metrics: pd.DataFrame,
    variants: dict[str, dict[str, Any]],
    curve_metrics: list[tuple[str, str]] | None = None,
    base_model: str = "base",
    models: list[TrainedModel] | None = None,
    axis: str = DEFAULT_AXIS,
) -> pd.DataFrame:
    """One row per (eval_set, metric, model): its fraction of source ``axis`` (column
    ``<axis>_fraction``), value and 95% CI, its paired
    difference from the base model, p-value and Holm-adjusted p-value (the family: every test on
    the curve), and the base model's value and CI. Metrics in the order asked for (in-domain
    first), models by their variant's fraction. ``models``: the (variant, training seed) models
    of the run (:func:`mift_kedro.config.trained_models`); default one per variant."""
    rows = []
    column = fraction_column_of(axis)
    indexed = metrics.set_index(["eval_set", "metric", "model"])
    models = models if models is not None else trained_models(variants)
    for eval_set, metric in curve_metrics or DEFAULT_CURVE_METRICS:
        if (eval_set, metric, base_model) not in indexed.index:
            continue  # e.g. an evaluation set this run did not score
        base = indexed.loc[(eval_set, metric, base_model)]
        for model in sorted(models, key=lambda m: _fraction(variants[m.variant], axis)):
            if (eval_set, metric, model.name) not in indexed.index:
                continue
            point = indexed.loc[(eval_set, metric, model.name)]
            rows.append(
                {
                    "eval_set": eval_set, "metric": metric, "model": model.name,
                    "display_name": model.display_name,
                    column: _fraction(variants[model.variant], axis),
                    "value": point["value"], "ci_low": point["ci_low"], "ci_high": point["ci_high"],
                    # the paired comparison with the base model on the same items, when scored
                    "delta_vs_base": point.get("delta_vs_base"),
                    "p_value_vs_base": point.get("p_value_vs_base"),
                    "bootstrap_resamples": point.get("bootstrap_resamples"),
                    "base_value": base["value"], "base_ci_low": base["ci_low"], "base_ci_high": base["ci_high"],
                }
            )
    curve = pd.DataFrame(rows, columns=curve_columns(axis))
    curve["p_holm_vs_base"] = stats.holm(curve["p_value_vs_base"].astype(float))
    return curve


def _fraction(spec: dict[str, Any], source: str) -> float:
    return float((spec.get("mix") or {}).get(source, 0.0))


def curve_table(curve: pd.DataFrame, summary: pd.DataFrame | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows: the base model, then one row per model by its axis fraction; one column
    per metric, cells ``value [95% CI]``, for models followed by ``(p, Holm p)`` against the
    base model (Holm over every test on the curve). With several training seeds, after each
    variant's seeds a row ``<variant> over N seeds``: ``mean ± sd (min–max)``."""
    keys = list(dict.fromkeys(curve["eval_set"] + " " + curve["metric"]))
    header = [axis_label(curve), "model", *keys]
    column = fraction_column(curve)
    if curve.empty:
        return header, []
    cell = curve.assign(key=curve["eval_set"] + " " + curve["metric"], p_text=stats.comparison_texts(curve))
    base = cell.drop_duplicates("key").set_index("key")
    rows = [["—", "base", *(_interval(base.loc[k], "base_") for k in keys)]]
    models: list[str] = []
    for (fraction, name), part in cell.groupby([column, "display_name"], sort=True):
        values = part.set_index("key")
        rows.append([f"{fraction:.2f}", name, *(_interval(values.loc[k]) if k in values.index else "" for k in keys)])
        models.append(part["model"].iloc[0])
    if seeds.several_seeds(summary):
        pairs = list(dict.fromkeys(zip(curve["eval_set"], curve["metric"], strict=True)))
        inserts = []
        for variant in seeds.variants_of(summary, pairs[0][0]):
            at = [i for i, m in enumerate(models) if m in variant["models"].split(",")]
            if not at:
                continue
            fraction = curve.loc[curve["model"] == models[at[-1]], column].iloc[0]
            spreads = [seeds.lookup(summary, e, m, variant["variant"]) for e, m in pairs]
            inserts.append((at[-1] + 2, [f"{fraction:.2f}", seeds.spread_header(variant),
                                         *("" if r is None else seeds.spread_text(r, m) for r, (_, m) in zip(spreads, pairs, strict=True))]))
        for position, row in sorted(inserts, key=lambda item: -item[0]):  # after each variant's last seed
            rows.insert(position, row)
    return header, rows


def _interval(point: pd.Series, prefix: str = "") -> str:
    """``value [ci_low, ci_high]`` of a curve row (``prefix="base_"``: the base model's), with
    ``(p, Holm p)`` for a variant's row that has a test."""
    text = f"{point[prefix + 'value']:.3f} [{point[prefix + 'ci_low']:.3f}, {point[prefix + 'ci_high']:.3f}]"
    p_text = "" if prefix else point.get("p_text", "")
    return f"{text} ({p_text})" if p_text else text


def curve_note(curve: pd.DataFrame, summary: pd.DataFrame | None = None) -> str:
    """The family statement of the curve's p-values (and what the over-seeds rows are)."""
    note = stats.family_note(curve, "on this curve (every variant on every metric)")
    return f"{note} {seeds.SPREAD_NOTE}" if seeds.several_seeds(summary) else note


def forgetting_curve_markdown(curve: pd.DataFrame, summary: pd.DataFrame | None = None) -> str:
    """The curve as a Markdown table (see :func:`curve_table`), with its family statement."""
    if curve.empty:
        return "_No forgetting curve: no variant was scored._\n"
    header, rows = curve_table(curve, summary)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", curve_note(curve, summary)]
    return "\n".join(lines) + "\n"


def plot_forgetting_curve(curve: pd.DataFrame, summary: pd.DataFrame | None = None):
    """One panel per metric: the variants' values with 95% CI error bars against the axis
    source's fraction, the base model as a horizontal line with its CI band. With several training
    seeds, every seed is a point (with its CI) and the line joins the means over seeds, with
    ± one sd of the seeds as error bars."""
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
        if seeds.several_seeds(summary):
            _plot_seeds(ax, part, summary, eval_set, metric)
        else:
            ax.errorbar(
                part[fraction_column(curve)], part["value"],
                yerr=[part["value"] - part["ci_low"], part["ci_high"] - part["value"]],
                marker="o", capsize=3, label="fine-tuned",
            )
        base = part.iloc[0]
        ax.axhline(base["base_value"], color="grey", linestyle="--", label="base model")
        ax.axhspan(base["base_ci_low"], base["base_ci_high"], color="grey", alpha=0.15)
        ax.set_title(f"{eval_set}: {metric}")
        ax.set_xlabel(f"{axis_label(curve)} of the training budget")
        ax.set_xlim(-0.05, 1.05)
    axes.flat[0].legend(loc="best", fontsize="small")
    fig.suptitle("Forgetting curve (95% bootstrap CIs)")
    fig.tight_layout()
    return fig


def _plot_seeds(ax, part: pd.DataFrame, summary: pd.DataFrame, eval_set: str, metric: str) -> None:
    """Per-seed points (95% CI, pale, spread a little sideways) and the mean over seeds ± sd."""
    means = summary[(summary["eval_set"] == eval_set) & (summary["metric"] == metric)].copy()
    column = fraction_column(part)
    fraction = part.drop_duplicates("model").set_index("model")[column]
    means[column] = [fraction.get(m.split(",")[0]) for m in means["models"]]
    means = means.dropna(subset=[column]).sort_values(column)
    offset = part.groupby(column).cumcount() - part.groupby(column)["model"].transform("size").sub(1) / 2
    ax.errorbar(
        part[column] + 0.012 * offset, part["value"],
        yerr=[part["value"] - part["ci_low"], part["ci_high"] - part["value"]],
        fmt="o", markersize=3, capsize=2, alpha=0.4, color="tab:blue", label="each seed (95% CI)",
    )
    ax.errorbar(
        means[column], means["mean"], yerr=means["sd"].fillna(0.0),
        marker="s", capsize=5, linewidth=2, color="tab:orange", label="mean over seeds (± sd)",
    )
