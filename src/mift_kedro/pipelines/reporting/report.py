"""Tables A/B/C, metric plots and the HTML report, from the metrics and predictions frames."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
from typing import Any

import numpy as np
import pandas as pd

from mift_kedro.pipelines.reporting import seeds, stats
from mift_kedro.pipelines.reporting.params import EVALUATE_METRICS, ReferenceStudy
from mift_kedro.pipelines.reporting.sweep import (
    axis_source,
    curve_note,
    curve_table,
    plot_forgetting_curve,
)

#: The study's tables: (A) sentiment, (B) out-of-sample instructions, (C) Alpaca.
TABLES = {"sentiment": "A", "out_of_sample": "B", "alpaca": "C"}
TITLES = {
    "sentiment": "Table A: sentiment test set (the custom instruction)",
    "out_of_sample": "Table B: out-of-sample instructions",
    "alpaca": "Table C: Alpaca test set (general instructions)",
}
METRIC_LABELS = {
    "accuracy": "Accuracy",
    "macro_f1": "Macro-F1",
    "invalid_rate": "Invalid-answer rate (lower is better)",
    "bertscore_f1": "BERTScore F1",
    "rouge1": "ROUGE-1 F1",
    "rouge2": "ROUGE-2 F1",
    "rougeL": "ROUGE-L F1",
    "bleu": "BLEU (sacreBLEU, 0-100)",
    "evaluate_bleu": "BLEU (evaluate, 0-1)",
    "evaluate_rouge1": "ROUGE-1 F1 (evaluate, unstemmed)",
    "evaluate_rouge2": "ROUGE-2 F1 (evaluate, unstemmed)",
    "evaluate_rougeL": "ROUGE-L F1 (evaluate, unstemmed)",
    "evaluate_rougeLsum": "ROUGE-Lsum F1 (evaluate, unstemmed)",
    "answer_words": "Answer length (mean words; descriptive, not tested)",
    "acc": "Accuracy (lm-eval acc)",
    "acc_norm": "Length-normalised accuracy (lm-eval acc_norm)",
}
BENCHMARKS_TITLE = "Standard benchmarks (lm-evaluation-harness, log-likelihood)"
TITLES["benchmarks"] = BENCHMARKS_TITLE
BENCHMARKS_NOTE = (
    "Multiple-choice questions scored by log-likelihood through lm-evaluation-harness: a model's "
    "answer is the choice whose tokens it gives the highest summed log-probability after the "
    "question (acc), or the highest per character of the choice (acc_norm); no text is generated, "
    "so wording cannot help. Every model is scored on the same questions and base weights."
)
NOTES = {
    "sentiment": (
        "The answers are one word, so BLEU (4-gram precision) is meaningless here: with no 2-, 3- "
        "or 4-grams it is near zero even for correct answers. Judge the models by accuracy and "
        "macro-F1; an answer that maps to neither label counts as wrong and as invalid."
    ),
    "out_of_sample": "Ten instructions: the intervals are wide; read differences with care.",
    "alpaca": "Generations are cut at `reporting.max_new_tokens.alpaca` tokens.",
}


def title(eval_set: str) -> str:
    """An evaluation set's heading: the default configuration's titles, else the set's name."""
    return TITLES.get(eval_set, f"Evaluation set {eval_set}")


def ordered_sets(names: Any) -> list[str]:
    """The evaluation sets among ``names``: the default configuration's first, then in order."""
    present = list(dict.fromkeys(names))
    return [s for s in TABLES if s in present] + [s for s in present if s not in TABLES]


def _models(metrics: pd.DataFrame) -> list[tuple[str, str]]:
    """(model, display name) in the order they appear, base first."""
    pairs = list(dict.fromkeys(zip(metrics["model"], metrics["display_name"], strict=True)))
    return sorted(pairs, key=lambda p: p[0] != "base")


def _subset(metrics: pd.DataFrame, eval_set: str) -> pd.DataFrame:
    """The rows of one table (A/B/C): the evaluation set's metrics without the study-comparable
    ``evaluate_*`` ones, so a table's Holm family is the comparisons it shows."""
    subset = metrics[(metrics["eval_set"] == eval_set) & ~metrics["metric"].isin(EVALUATE_METRICS)
        & ~metrics["metric"].str.startswith("recall/")]
    if subset.empty:
        raise ValueError(f"no metrics for evaluation set {eval_set!r}")
    return subset


def _row(subset: pd.DataFrame, model: str, metric: str) -> pd.Series | None:
    """The metrics row of one model and metric, or None when that model has no such metric."""
    hit = subset[(subset["model"] == model) & (subset["metric"] == metric)]
    return None if hit.empty else hit.iloc[0]


def _metric_order(subset: pd.DataFrame) -> list[str]:
    """The project's own metrics in table order; the study-comparable ``evaluate_*`` ones are
    in ``metrics`` and the study comparison (:func:`study_comparison`), not in tables A/B/C."""
    present = [m for m in dict.fromkeys(subset["metric"]) if m not in EVALUATE_METRICS]
    return [m for m in METRIC_LABELS if m in present] + [m for m in present if m not in METRIC_LABELS]


def _columns(subset: pd.DataFrame, summary: pd.DataFrame | None, eval_set: str) -> list[tuple[str, Any, str]]:
    """The table's columns in order: ``("model", model, display)`` per model and, with several
    training seeds, ``("spread", variant, header)`` right after each variant's last seed."""
    columns: list[tuple[str, Any, str]] = [("model", m, d) for m, d in _models(subset)]
    if not seeds.several_seeds(summary):
        return columns
    for variant in seeds.variants_of(summary, eval_set):
        members = set(variant["models"].split(","))
        last = max((i for i, c in enumerate(columns) if c[0] == "model" and c[1] in members), default=len(columns) - 1)
        columns.insert(last + 1, ("spread", variant["variant"], seeds.spread_header(variant)))
    return columns


def table_frame(metrics: pd.DataFrame, eval_set: str, summary: pd.DataFrame | None = None) -> pd.DataFrame:
    """Numeric table: one row per metric; per model value, CI bounds, and (variants) Δ vs base,
    its raw and Holm-adjusted p (Holm within this table); with several training seeds, per
    variant the mean, sd, min and max over its seeds (``summary``: ``seed_summary``)."""
    subset = _subset(metrics, eval_set)
    holm = pd.Series(stats.holm(subset["p_value_vs_base"].astype(float)), index=subset.index)
    rows = []
    for metric in _metric_order(subset):
        row: dict[str, Any] = {"metric": metric, "n": int(subset["n"].iloc[0])}
        for kind, model, display in _columns(subset, summary, eval_set):
            if kind == "spread":
                spread = seeds.lookup(summary, eval_set, metric, model)
                if spread is not None:
                    name = spread["display_name"]
                    for stat in ("mean", "sd", "min", "max"):
                        row[f"{name} seed_{stat}"] = spread[stat]
                    row[f"{name} n_seeds"] = int(spread["n_seeds"])
                continue
            r = _row(subset, model, metric)
            if r is None:
                continue
            row[display] = r["value"]
            row[f"{display} ci_low"] = r["ci_low"]
            row[f"{display} ci_high"] = r["ci_high"]
            if model != "base":
                row[f"{display} delta_vs_base"] = r["delta_vs_base"]
                row[f"{display} p_vs_base"] = r["p_value_vs_base"]
                row[f"{display} p_holm_vs_base"] = holm.loc[r.name]
        rows.append(row)
    return pd.DataFrame(rows)


_fmt = stats.format_value


def _cell(r: pd.Series, metric: str, p_text: str) -> str:
    text = f"{_fmt(r['value'], metric)} [{_fmt(r['ci_low'], metric)}, {_fmt(r['ci_high'], metric)}]"
    if p_text:
        sign = "+" if r["delta_vs_base"] >= 0 else ""
        text += f" (Δ {sign}{_fmt(r['delta_vs_base'], metric)}, {p_text})"
    return text


def table_rows(
    metrics: pd.DataFrame, eval_set: str, summary: pd.DataFrame | None = None
) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows: ``value [95% CI] (Δ vs base, paired bootstrap p, Holm p)``;
    with several training seeds also, per variant, ``mean ± sd (min–max)`` over its seeds."""
    subset = _subset(metrics, eval_set)
    p_texts = stats.comparison_texts(subset)
    columns = _columns(subset, summary, eval_set)
    header = ["Metric"] + [title for _, _, title in columns]
    rows = []
    for metric in _metric_order(subset):
        row = [METRIC_LABELS.get(metric, metric)]
        for kind, model, _ in columns:
            if kind == "spread":
                spread = seeds.lookup(summary, eval_set, metric, model)
                row.append(seeds.spread_text(spread, metric) if spread is not None else "")
                continue
            r = _row(subset, model, metric)
            row.append(_cell(r, metric, p_texts.loc[r.name]) if r is not None else "")
        rows.append(row)
    return header, rows


def _markdown_table(header: list[str], rows: list[list[str]], text_columns: int = 1) -> list[str]:
    """Markdown table lines; columns after the first ``text_columns`` are right-aligned."""
    rule = ["---"] * text_columns + ["---:"] * (len(header) - text_columns)
    return ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"] + [
        "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows
    ]


def table_markdown(metrics: pd.DataFrame, eval_set: str, summary: pd.DataFrame | None = None) -> str:
    header, rows = table_rows(metrics, eval_set, summary)
    n = int(_subset(metrics, eval_set)["n"].iloc[0])
    lines = [
        f"## {title(eval_set)}",
        "",
        f"n = {n} examples. Cells: value [95% bootstrap CI]; for fine-tuned models also "
        "(Δ vs base, paired bootstrap p-value, Holm-adjusted p-value).",
        "",
        stats.family_note(_subset(metrics, eval_set), "in this table"),
        *(["", seeds.SPREAD_NOTE] if seeds.several_seeds(summary) else []),
        "",
        *_markdown_table(header, rows),
    ]
    if eval_set in NOTES:
        lines += ["", f"_{NOTES[eval_set]}_"]
    return "\n".join(lines) + "\n"


def seed_summary_rows(summary: pd.DataFrame, eval_set: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one evaluation set: per metric (those of tables A/B/C) the base value
    and each variant's ``mean ± sd (min–max)`` over its training seeds."""
    part = summary[summary["eval_set"] == eval_set]
    variants = seeds.variants_of(summary, eval_set)
    header = ["Metric", "Base"] + [seeds.spread_header(v) for v in variants]
    rows = []
    for metric in _metric_order(part):
        cells = [seeds.lookup(summary, eval_set, metric, v["variant"]) for v in variants]
        base = next(c["base_value"] for c in cells if c is not None)
        rows.append([METRIC_LABELS.get(metric, metric), _fmt(base, metric)]
                    + ["" if c is None else seeds.spread_text(c, metric) for c in cells])
    return header, rows


def eval_sets_of(frame: pd.DataFrame) -> list[str]:
    """The evaluation sets of a metrics-like frame: tables A/B/C's first, then the benchmarks."""
    present = list(dict.fromkeys(frame["eval_set"]))
    return [s for s in TABLES if s in present] + [s for s in present if s not in TABLES]


def _title(eval_set: str) -> str:
    return TITLES.get(eval_set, f"Benchmark {eval_set}")


def seed_summary_markdown(summary: pd.DataFrame) -> str:
    """The seed summary as Markdown: one table per evaluation set; with one seed per variant, a
    line saying there is no spread to show."""
    if not seeds.several_seeds(summary):
        return (
            "_One training seed per variant (`training_seeds`): no spread over seeds to show. "
            "List several seeds (e.g. `kedro run --env seeds`) to measure training noise._\n"
        )
    first = summary.iloc[0]
    lines = [
        "## Spread over training seeds",
        "",
        f"{int(summary['n_seeds'].max())} training seeds per variant ({first['seeds'].replace(',', ', ')}). {seeds.SPREAD_NOTE}",
    ]
    for eval_set in eval_sets_of(summary):
        header, rows = seed_summary_rows(summary, eval_set)
        lines += ["", f"**{_title(eval_set)}**", "", *_markdown_table(header, rows)]
    return "\n".join(lines) + "\n"


STUDY_COLUMNS = [
    "eval_set", "study_metric", "metric", "model", "display_name", "value", "ci_low", "ci_high",
    "study_value",
]


def study_comparison(metrics: pd.DataFrame, study: ReferenceStudy) -> pd.DataFrame:
    """One row per (eval set, study column, model): the run's figure as the study defines it,
    its 95% CI and the study's published figure (NaN where the study has none)."""
    rows = []
    for eval_set in TABLES:
        subset = metrics[metrics["eval_set"] == eval_set]
        if subset.empty:
            continue
        figures = study.figures.get(eval_set, {})
        for column, metric in study.metrics.items():
            for model, display in _models(subset):
                r = _row(subset, model, metric)
                rows.append({
                    "eval_set": eval_set, "study_metric": column, "metric": metric, "model": model,
                    "display_name": display,
                    "value": np.nan if r is None else r["value"],
                    "ci_low": np.nan if r is None else r["ci_low"],
                    "ci_high": np.nan if r is None else r["ci_high"],
                    "study_value": figures.get(column, {}).get(model, np.nan),
                })
    return pd.DataFrame(rows, columns=STUDY_COLUMNS)


def study_rows(comparison: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and rows: per model the run's ``value [95% CI]`` and, when the study has
    figures, the study's value beside it."""
    with_study = comparison["study_value"].notna().any()
    models = list(dict.fromkeys(zip(comparison["model"], comparison["display_name"], strict=True)))
    header = ["Set", "Metric"]
    for _, display in models:
        header += [display, f"{display} (study)"] if with_study else [display]
    rows = []
    for (eval_set, column), part in comparison.groupby(["eval_set", "study_metric"], sort=False):
        metric = part["metric"].iloc[0]
        row = [f"{TABLES.get(eval_set, '')} {eval_set}".strip(), f"{column}: {METRIC_LABELS.get(metric, metric)}"]
        for model, _ in models:
            hit = part[part["model"] == model]
            r = hit.iloc[0] if not hit.empty else None
            row.append("" if r is None or pd.isna(r["value"]) else
                       f"{_fmt(r['value'], metric)} [{_fmt(r['ci_low'], metric)}, {_fmt(r['ci_high'], metric)}]")
            if with_study:
                row.append("" if r is None or pd.isna(r["study_value"]) else _published(r["study_value"]))
        rows.append(row)
    return header, rows


def _published(value: float) -> str:
    """A study figure as printed there: two decimals, or more where it has them (0.992)."""
    return f"{value:.2f}" if round(value, 2) == value else f"{value:g}"


def study_intro(study: ReferenceStudy, comparison: pd.DataFrame) -> str:
    """What the comparison shows: the study, how each column is computed here, training times."""
    mapping = ", ".join(f"{c} = {METRIC_LABELS.get(m, m)}" for c, m in study.metrics.items())
    if not comparison["study_value"].notna().any():
        return (f"No reference study configured (`reference_study` is null): the run's figures as "
                f"the study would compute them ({mapping}). Cells: value [95% bootstrap CI].")
    text = f"{study.name}." + (f" {study.note}" if study.note else "")
    text += f" This run's figures are computed as the study's ({mapping}); cells: value [95% bootstrap CI]."
    if study.training_minutes:
        names = dict(zip(comparison["model"], comparison["display_name"], strict=True))
        times = ", ".join(f"{names.get(v, v)} {m:g} min" for v, m in study.training_minutes.items())
        text += f" Training time in the study: {times}" + (f" ({study.hardware})." if study.hardware else ".")
    return text


def study_markdown(comparison: pd.DataFrame, study: ReferenceStudy) -> str:
    if comparison.empty:
        return "_No study comparison: no metrics were computed._\n"
    header, rows = study_rows(comparison)
    lines = ["## Against the reference study", "", study_intro(study, comparison), "",
             *_markdown_table(header, rows, text_columns=2)]
    return "\n".join(lines) + "\n"


def benchmark_frame(benchmarks: pd.DataFrame, summary: pd.DataFrame | None = None) -> pd.DataFrame:
    """The benchmarks' numeric table: per task the rows of :func:`table_frame`, with the task."""
    if benchmarks.empty:
        return pd.DataFrame(columns=["task", "metric", "n"])
    return pd.concat(
        [table_frame(benchmarks, task, summary).assign(task=task) for task in eval_sets_of(benchmarks)],
        ignore_index=True,
    ).pipe(lambda f: f[["task", *[c for c in f.columns if c != "task"]]])


def benchmark_markdown(benchmarks: pd.DataFrame, summary: pd.DataFrame | None = None) -> str:
    """The benchmarks' tables (one per task, its own Holm family) as Markdown."""
    lines = [f"## {BENCHMARKS_TITLE}", ""]
    if benchmarks.empty:
        return "\n".join([*lines, "_No benchmark configured (`reporting.benchmarks.tasks`)._"]) + "\n"
    lines += [BENCHMARKS_NOTE]
    for task in eval_sets_of(benchmarks):
        header, rows = table_rows(benchmarks, task, summary)
        subset = _subset(benchmarks, task)
        lines += [
            "", f"**{task}**", "",
            f"n = {int(subset['n'].iloc[0])} questions. Cells: value [95% bootstrap CI]; for fine-tuned "
            "models also (Δ vs base, paired bootstrap p-value, Holm-adjusted p-value).",
            "", stats.family_note(subset, "on this task"),
            *(["", seeds.SPREAD_NOTE] if seeds.several_seeds(summary) else []),
            "", *_markdown_table(header, rows),
        ]
    return "\n".join(lines) + "\n"


def benchmark_figure(benchmarks: pd.DataFrame):
    """Grouped bars per (task, metric) and model with 95% CI error bars."""
    if benchmarks.empty:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6, 1.5), dpi=100)
        fig.text(0.5, 0.5, "No benchmark configured (reporting.benchmarks.tasks)", ha="center", va="center")
        return fig
    flat = benchmarks.assign(eval_set="benchmarks", metric=benchmarks["eval_set"] + " " + benchmarks["metric"])
    return metric_figure(flat, "benchmarks")


def metric_figure(metrics: pd.DataFrame, eval_set: str):
    """Grouped bars per metric and model with 95% CI error bars (BLEU shown as BLEU/100)."""
    from matplotlib.figure import Figure

    subset = _subset(metrics, eval_set)
    order = [m for m in _metric_order(subset) if m != "answer_words"]  # words, not a 0-1 score
    models = _models(subset)
    fig = Figure(figsize=(max(6.0, 1.2 * len(order) + 2), 4.2), dpi=100, layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(order))
    for j, (model, display) in enumerate(models):
        vals, lows, highs = [], [], []
        for metric in order:
            scale = 100.0 if metric == "bleu" else 1.0
            r = _row(subset, model, metric)
            v = np.nan if r is None else r["value"] / scale
            lo = np.nan if r is None else r["ci_low"] / scale
            hi = np.nan if r is None else r["ci_high"] / scale
            vals.append(v)
            lows.append(max(v - lo, 0.0) if not np.isnan(lo) else 0.0)
            highs.append(max(hi - v, 0.0) if not np.isnan(hi) else 0.0)
        ax.bar(x + (j - (len(models) - 1) / 2) * width, vals, width, yerr=[lows, highs],
               capsize=3, label=display)
    ax.set_xticks(x, [("BLEU/100" if m == "bleu" else METRIC_LABELS.get(m, m).split(" (")[0]) for m in order],
                  rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score (95% bootstrap CI)")
    ax.set_title(title(eval_set))
    ax.legend(loc="upper right", fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return fig


def confusion_markdown(table: pd.DataFrame, eval_set: str) -> str:
    """The confusion matrices of one classification set, one Markdown table per model."""
    lines = [f"## Confusion matrices: {title(eval_set)}", "",
             "Rows: the true label; columns: the label the answer named, or invalid."]
    columns = [c for c in table.columns if c not in ("model", "display_name", "true_label")]
    for display, group in table.groupby("display_name", sort=False):
        rows = [
            [str(r["true_label"]), *(str(int(r[c])) for c in columns),
             f"{r[str(r['true_label'])] / max(sum(int(r[c]) for c in columns), 1):.3f}"]
            for _, r in group.iterrows()
        ]
        lines += ["", f"**{display}**", "", *_markdown_table(["true \\ answer", *columns, "recall"], rows)]
    return "\n".join(lines) + "\n"


def confusion_figure(table: pd.DataFrame, eval_set: str):
    """One heatmap per model: counts of (true label, answered label or invalid)."""
    from matplotlib.figure import Figure

    columns = [c for c in table.columns if c not in ("model", "display_name", "true_label")]
    groups = list(table.groupby("display_name", sort=False))
    size = 0.5 * len(columns) + 2
    fig = Figure(figsize=(size * len(groups), size), dpi=100, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(groups)))
    for ax, (display, group) in zip(axes, groups, strict=True):
        counts = group[columns].to_numpy(dtype=int)
        ax.imshow(counts, cmap="Blues")
        for (i, j), value in np.ndenumerate(counts):
            ax.text(j, i, str(value), ha="center", va="center", fontsize="small",
                    color="white" if value > counts.max() / 2 else "black")
        ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
        ax.set_yticks(range(len(group)), group["true_label"].tolist())
        ax.set_xlabel("answer")
        ax.set_ylabel("true label")
        ax.set_title(display)
    fig.suptitle(f"Confusion matrices: {title(eval_set)}")
    return fig


def _figure_png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def example_ids(predictions: pd.DataFrame, eval_set: str, count: int, seed: int) -> list[str]:
    """A seeded choice of examples every model answered (the same ones for every model)."""
    subset = predictions[predictions["eval_set"] == eval_set]
    if subset.empty:
        return []
    common = sorted(set.intersection(*(set(g["id"]) for _, g in subset.groupby("model"))))
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(common), size=min(count, len(common)), replace=False)
    return [common[i] for i in sorted(picks)]


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:4px 8px;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;white-space:nowrap}pre{background:#f7f7f7;padding:0.8em;overflow-x:auto;font-size:0.85em}
.ex td{white-space:pre-wrap;max-width:420px}.note{color:#555;font-style:italic}img{max-width:100%}
"""


def _html_section(frame: pd.DataFrame, eval_set: str, summary: Any, unit: str, family: str) -> list[str]:
    """One evaluation set's (or benchmark task's) size, table and Holm-family note."""
    header, rows = table_rows(frame, eval_set, summary)
    subset = _subset(frame, eval_set)
    return [
        f"<p>n = {int(subset['n'].iloc[0])} {unit}. Cells: value [95% CI] (Δ vs base, p, Holm-adjusted p).</p>",
        _html_table(header, rows),
        f"<p class='note'>{html.escape(stats.family_note(subset, family))}</p>",
    ]


def _html_table(header: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    out = ["<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for row in rows:
        cells = [
            f'<td class="num">{html.escape(c)}</td>' if k >= numeric_from else f"<td>{html.escape(c)}</td>"
            for k, c in enumerate(row)
        ]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _base_weights_html(predictions: pd.DataFrame) -> str:
    """The base weights every model generated on (scoring refused the run if they differed)."""
    columns = ["base_ref", "base_quantization", "base_dtype", "base_checksum"]
    if not set(columns) <= set(predictions.columns):
        return ""
    signatures = predictions.drop_duplicates(["model", *columns])
    first = signatures.iloc[0]
    return (
        f"<p id='base_weights'>Base weights of every model ({len(signatures)} checked): "
        f"<code>{html.escape(str(first['base_ref']))}</code>, {html.escape(str(first['base_quantization']))}, "
        f"{html.escape(str(first['base_dtype']))}, checksum <code>{html.escape(str(first['base_checksum']))}</code>.</p>"
    )


def render_report(
    metrics: pd.DataFrame,
    predictions: pd.DataFrame,
    parameters: dict[str, Any],
    curve: pd.DataFrame | None = None,
    comparison: pd.DataFrame | None = None,
    summary: pd.DataFrame | None = None,
    benchmarks: pd.DataFrame | None = None,
) -> str:
    """One self-contained HTML page: tables, plots (inline PNG), the study comparison, the
    spread over training seeds (``summary``, when there are several), parameters, examples."""
    from mift_kedro.pipelines.reporting.params import reference_study

    reporting = (parameters or {}).get("reporting") or {}
    count = int(reporting.get("examples_per_set", 5))
    seed = int((parameters or {}).get("seed", 0))
    models = _models(predictions[["model", "display_name"]].drop_duplicates())
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        "<title>mift-kedro evaluation report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>mift-kedro evaluation report</h1>",
        f"<p>Generated {html.escape(_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC'))}. "
        "Models: " + ", ".join(html.escape(d) for _, d in models) + ". "
        "Every metric comes with a 95% percentile bootstrap confidence interval; fine-tuned "
        "models also show the difference to the base model and a two-sided paired bootstrap "
        "p-value (same resampled examples for all models).</p>",
        _base_weights_html(predictions),
        "<h2>Contents</h2><ul>"
        + "".join(f"<li><a href='#{s}'>{html.escape(title(s))}</a></li>" for s in ordered_sets(metrics["eval_set"]))
        + ("<li><a href='#benchmarks'>Standard benchmarks</a></li>" if benchmarks is not None and not benchmarks.empty else "")
        + ("<li><a href='#seeds'>Spread over training seeds</a></li>" if seeds.several_seeds(summary) else "")
        + ("<li><a href='#study'>Against the reference study</a></li>" if comparison is not None and not comparison.empty else "")
        + ("<li><a href='#forgetting_curve'>Forgetting curve</a></li>" if curve is not None and not curve.empty else "")
        + "<li><a href='#examples'>Example predictions</a></li><li><a href='#parameters'>Run parameters</a></li></ul>",
    ]
    for eval_set in ordered_sets(metrics["eval_set"]):
        fig = metric_figure(metrics, eval_set)
        parts += [
            f"<h2 id='{eval_set}'>{html.escape(title(eval_set))}</h2>",
            *_html_section(metrics, eval_set, summary, "examples", "in this table"),
            f"<p class='note'>{html.escape(seeds.SPREAD_NOTE)}</p>" if seeds.several_seeds(summary) else "",
            f"<p class='note'>{html.escape(NOTES.get(eval_set, ''))}</p>",
            f"<img alt='metrics for {eval_set}' src='data:image/png;base64,{_figure_png(fig)}'>",
        ]
    if benchmarks is not None and not benchmarks.empty:
        parts += [f"<h2 id='benchmarks'>{html.escape(BENCHMARKS_TITLE)}</h2>", f"<p>{html.escape(BENCHMARKS_NOTE)}</p>"]
        for task in eval_sets_of(benchmarks):
            parts += [f"<h3>{html.escape(task)}</h3>", *_html_section(benchmarks, task, summary, "questions", "on this task")]
        parts.append(f"<img alt='benchmarks' src='data:image/png;base64,{_figure_png(benchmark_figure(benchmarks))}'>")
    if seeds.several_seeds(summary):
        parts += ["<h2 id='seeds'>Spread over training seeds</h2>", f"<p>{html.escape(seeds.SPREAD_NOTE)}</p>"]
        for eval_set in eval_sets_of(summary):
            header, rows = seed_summary_rows(summary, eval_set)
            parts += [f"<h3>{html.escape(_title(eval_set))}</h3>", _html_table(header, rows)]
    if comparison is not None and not comparison.empty:
        header, rows = study_rows(comparison)
        study = reference_study((parameters or {}).get("reference_study"))
        parts += [
            "<h2 id='study'>Against the reference study</h2>",
            f"<p>{html.escape(study_intro(study, comparison))}</p>",
            _html_table(header, rows, numeric_from=2),
        ]
    if curve is not None and not curve.empty:
        header, rows = curve_table(curve, summary)
        parts += [
            "<h2 id='forgetting_curve'>Forgetting curve</h2>",
            f"<p>Each variant at the share of {html.escape(axis_source(curve))} examples in its training budget; cells: value "
            "[95% CI] (p, Holm-adjusted p vs base). The first row (and the dashed line) is the base model.</p>",
            _html_table(header, rows, numeric_from=2),
            f"<p class='note'>{html.escape(curve_note(curve, summary))}</p>",
            f"<img alt='forgetting curve' src='data:image/png;base64,{_figure_png(plot_forgetting_curve(curve, summary))}'>",
        ]
    parts.append("<h2 id='examples'>Example predictions</h2>")
    for eval_set in ordered_sets(predictions["eval_set"]):
        ids = example_ids(predictions, eval_set, count, seed)
        if not ids:
            continue
        parts.append(f"<h3>{html.escape(title(eval_set).split(': ', 1)[-1])}</h3>")
        subset = predictions[predictions["eval_set"] == eval_set]
        header = ["#", "Prompt", "Reference"] + [d for _, d in models]
        rows = []
        for k, example_id in enumerate(ids, 1):
            ex = subset[subset["id"] == example_id]
            first = ex.iloc[0]
            answers = []
            for model, _ in models:
                hit = ex[ex["model"] == model]
                answers.append(str(hit.iloc[0]["prediction"]) if not hit.empty else "")
            rows.append([str(k), str(first["prompt"]), str(first["reference"])] + answers)
        parts.append(_html_table(header, rows, numeric_from=len(header) + 1).replace("<table>", "<table class='ex'>"))
    parts += [
        "<h2 id='parameters'>Run parameters</h2>",
        f"<pre>{html.escape(json.dumps(parameters, indent=2, default=str, ensure_ascii=False))}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts)
