"""Reporting nodes: predictions per model, per-example scores, metrics with bootstrap CIs,
tables A/B/C, plots and the report. Thin wrappers over :mod:`.generation`, :mod:`.metrics`
and :mod:`.report`, testable without Kedro."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np
import pandas as pd

from mift_kedro.config import ParameterError, seed_display_name, trained_models
from mift_kedro.distributed import map_across_processes, on_main_process
from mift_kedro.pipelines.reporting import benchmark as B
from mift_kedro.pipelines.reporting import metrics as M
from mift_kedro.pipelines.reporting import report as R
from mift_kedro.pipelines.reporting import seeds, stats
from mift_kedro.pipelines.reporting import sweep as S
from mift_kedro.pipelines.reporting.generation import generate, model_device
from mift_kedro.pipelines.reporting.params import (
    EVALUATE_METRICS,
    reference_study,
    reporting_params,
)
from mift_kedro.threads import use_cpu_threads

logger = logging.getLogger(__name__)

#: What the base weights of a prediction were (:func:`mift_kedro.models.base_weights_signature`).
BASE_WEIGHT_COLUMNS = ["base_ref", "base_quantization", "base_dtype", "base_checksum"]
PREDICTION_COLUMNS = [
    "model", "display_name", "eval_set", "id", "prompt", "prompt_text", "reference",
    "prediction", "label", "prompt_tokens", "completion_tokens", "reference_tokens",
    *BASE_WEIGHT_COLUMNS,
]


def _content(messages: Any) -> str:
    """The text of a one-message conversation column (``[{role, content}]``)."""
    if isinstance(messages, list) and messages:
        return "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    return ""


def _label(value: Any) -> int | str | None:
    """A gold label as the source's label map has it (an int, or a string label)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, float | np.floating | np.integer):
        return int(value)
    return value


def predict(
    model: Any,
    tokenizer: Any,
    eval_sets: dict[str, pd.DataFrame],
    params: dict[str, Any],
    *,
    model_name: str,
    display_name: str,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (eval set, example): prompt, reference, prediction and token counts."""
    import torch

    cfg = reporting_params(params)
    threads = torch.get_num_threads()
    use_cpu_threads(cfg.torch_threads, model_device(model).type)
    try:
        rows = _predict_rows(model, tokenizer, eval_sets, cfg, model_name, display_name, seed)
    finally:
        torch.set_num_threads(threads)
    return pd.DataFrame(rows, columns=PREDICTION_COLUMNS)


def _predict_rows(model, tokenizer, eval_sets, cfg, model_name, display_name, seed) -> list[dict]:
    from mift_kedro import models

    base_weights = models.base_weights_signature(model)
    logger.info("%s generates on base weights %s", model_name, base_weights)
    rows = []
    for eval_set, frame in eval_sets.items():
        if cfg.limit is not None:
            frame = frame.iloc[: cfg.limit]
        start = time.perf_counter()
        generations = map_across_processes(  # under `accelerate launch`: a share per process
            list(frame["prompt"]),
            lambda prompts, eval_set=eval_set: generate(
                model,
                tokenizer,
                prompts,
                max_new_tokens=cfg.max_new_tokens[eval_set],
                batch_size=cfg.batch_size,
                sampling=cfg.sampling.model_dump(),
                seed=seed,
                desc=f"{model_name}/{eval_set}",
            ),
        )
        elapsed = time.perf_counter() - start
        new_tokens = sum(g.completion_tokens for g in generations)
        logger.info(
            "%s on %s: %d prompts, %d new tokens in %.1f s (%.1f tokens/s)",
            model_name, eval_set, len(frame), new_tokens, elapsed, new_tokens / max(elapsed, 1e-9),
        )
        for record, gen in zip(frame.itertuples(index=False), generations, strict=True):
            reference = _content(record.completion)
            rows.append(
                {
                    "model": model_name,
                    "display_name": display_name,
                    "eval_set": eval_set,
                    "id": record.id,
                    "prompt": _content(record.prompt),
                    "prompt_text": gen.prompt_text,
                    "reference": reference,
                    "prediction": gen.prediction,
                    "label": _label(getattr(record, "label", None)),
                    "prompt_tokens": gen.prompt_tokens,
                    "completion_tokens": gen.completion_tokens,
                    "reference_tokens": len(tokenizer(reference, add_special_tokens=False)["input_ids"]),
                    **base_weights,
                }
            )
    return rows


def collect_eval_sets(*frames: pd.DataFrame, names: list[str]) -> dict[str, pd.DataFrame]:
    """The configured evaluation sets (``eval_sets`` in parameters), by name, in their order."""
    return dict(zip(names, frames, strict=True))


def evaluated_model(
    base_model: str, adapter: Any, quantization: str | None, cfg: Any
) -> tuple[Any, Any]:
    """The model (and tokenizer) a row evaluates: ``base_model``, or ``adapter`` on it, with
    the quantization given (the base row's) or ``reporting.quantization`` (``auto``: for an
    adapter, the one its own saved record names; see :func:`base_quantization`)."""
    from mift_kedro import models

    return models.load_for_evaluation(base_model, adapter, quantization or cfg.quantization, cfg.device)


def display_name_of(model_name: str, display_name: str | None, variant: dict[str, Any] | None,
                    training_seed: int | None) -> str:
    """The base row's configured name, or the variant's display name (with the training seed
    when the variant was trained with several)."""
    if variant is None:
        return display_name or model_name
    return seed_display_name(variant.get("display_name", model_name), training_seed)


def generate_predictions(
    base_model: str,
    eval_sets: dict[str, pd.DataFrame],
    params: dict[str, Any],
    seed: int,
    *,
    model_name: str = "base",
    display_name: str | None = None,
    variant: dict[str, Any] | None = None,
    adapter: Any = None,
    quantization: str | None = None,
    training_seed: int | None = None,
) -> pd.DataFrame:
    """Predictions of one model: the base (``base_model`` is a ref for :mod:`mift_kedro.models`)
    or, with ``adapter`` (a ``peft.PeftModel``; no merge), base + adapter with the tokenizer of
    the base it records. Every row runs on the same base weights, which scoring checks."""
    cfg = reporting_params(params)
    model, tokenizer = evaluated_model(base_model, adapter, quantization, cfg)
    return predict(
        model, tokenizer, eval_sets, params,
        model_name=model_name, seed=seed,
        display_name=display_name_of(model_name, display_name, variant, training_seed),
    )


def base_quantization(params: dict[str, Any], *variant_predictions: pd.DataFrame) -> str:
    """The quantization of the base row: ``reporting.quantization``, or with ``auto`` the one
    the adapters ran on, i.e. what their own saved records name (full precision without
    adapters), so the base row runs on exactly the base the adapters sit on. Adapters trained
    with different quantizations have no single such base, and that is an error."""
    cfg = reporting_params(params)
    if cfg.quantization != "auto":
        return cfg.quantization
    ran_on = {
        str(frame["model"].iloc[0]): str(frame["base_quantization"].iloc[0])
        for frame in variant_predictions if not frame.empty
    }
    values = set(ran_on.values()) or {"none"}
    if len(values) > 1:
        raise ParameterError(
            f"reporting.quantization is auto, but the adapters were trained with different "
            f"quantizations {ran_on}: set `reporting.quantization` to one of them, so that the "
            "base model and every adapter run on the same base weights."
        )
    return values.pop()


# --- scoring -------------------------------------------------------------------------------


def classification_answers(sources: dict[str, Any], eval_sets: dict[str, Any]) -> dict[str, dict[Any, list[str]]]:
    """eval set -> its source's label -> answer words, for the sets of classification sources."""
    from mift_kedro.pipelines.data_engineering.params import source_spec

    out = {}
    for name, spec in (eval_sets or {}).items():
        source = source_spec(sources[(spec or {}).get("source") or name])
        if source.kind == "classification":
            out[name] = source.answer_words()
    return out


def _label_columns(frame: pd.DataFrame, preds: list[str], answers: dict[str, dict]) -> pd.DataFrame:
    """Per example of a classification set: the parsed label, why it is invalid, and both
    labels as class indices (``label_names``: the classes in the label map's order)."""
    rows = []
    for eval_set, label, prediction in zip(frame["eval_set"], frame["label"], preds, strict=True):
        words = answers.get(eval_set)
        if words is None:
            rows.append((None, None, None, None, None))
            continue
        keys = [str(k) for k in words]
        parsed, reason = M.parse_answer(prediction, words)
        true_index = keys.index(str(_label(label))) if str(_label(label)) in keys else None
        rows.append((
            None if parsed is None else str(parsed), reason, true_index,
            M.INVALID if parsed is None else keys.index(str(parsed)), json.dumps(keys),
        ))
    return pd.DataFrame(rows, columns=["predicted_label", "invalid_reason", "label_index", "predicted_index", "label_names"])


def score_predictions(
    params: dict[str, Any], sources: dict[str, Any], eval_sets: dict[str, Any], *predictions: pd.DataFrame
) -> pd.DataFrame:
    """Per-example statistics of every model's predictions (one BERTScore model load); on a
    classification set, the label each answer names or why it names none."""
    cfg = reporting_params(params)
    frame = pd.concat(predictions, ignore_index=True)
    if frame.empty:
        raise ValueError("No predictions to score: the generation nodes produced no rows.")
    check_same_base(frame)
    preds = frame["prediction"].fillna("").astype(str).tolist()
    refs = frame["reference"].fillna("").astype(str).tolist()
    start = time.perf_counter()
    scores = pd.DataFrame({**M.rouge_scores(preds, refs), **M.evaluate_rouge_scores(preds, refs)})
    bleu = pd.DataFrame(M.bleu_statistics(preds, refs), columns=M.BLEU_STAT_COLUMNS)
    scores["bertscore_f1"] = on_main_process(lambda: M.bertscore_f1(  # once, not on every GPU
        preds, refs,
        model_type=cfg.bertscore.model_type,
        num_layers=cfg.bertscore.num_layers,
        batch_size=cfg.bertscore.batch_size,
        lang=cfg.bertscore.lang,
        rescale_with_baseline=cfg.bertscore.rescale_with_baseline,
    ))
    labelled = _label_columns(frame, preds, classification_answers(sources, eval_sets))
    scores = pd.concat([scores, labelled], axis=1)
    logger.info("Scored %d predictions in %.1f s", len(frame), time.perf_counter() - start)
    keep = ["model", "display_name", "eval_set", "id", "label", "prediction", "reference"]
    return pd.concat([frame[keep].reset_index(drop=True), scores, bleu], axis=1)


def check_same_base(frame: pd.DataFrame) -> None:
    """Refuse predictions that were not all generated on identical base weights.

    A base-vs-variant difference must measure fine-tuning only; different quantization,
    dtype or base weights would mix in their own effects.
    """
    missing = [c for c in BASE_WEIGHT_COLUMNS if c not in frame.columns]
    if missing or frame[BASE_WEIGHT_COLUMNS].isna().any().any():
        raise ValueError(
            f"Predictions without their base-weights signature ({', '.join(BASE_WEIGHT_COLUMNS)}): "
            "they come from an older version of the generation nodes. Generate them again: "
            "`kedro run --pipelines reporting`."
        )
    compared = ["base_quantization", "base_dtype", "base_checksum"]
    signatures = frame.drop_duplicates(["model", *compared])
    if len(signatures.drop_duplicates(compared)) == 1:
        return
    lines = [
        f"  {row.model}: {row.base_ref} ({row.base_quantization}, {row.base_dtype}, checksum {row.base_checksum})"
        for row in signatures.itertuples()
    ]
    fixes = []
    if signatures["base_quantization"].nunique() > 1:
        fixes.append("set `reporting.quantization` to auto (the adapters' training quantization) or one value")
    if signatures["base_dtype"].nunique() > 1:
        fixes.append("generate every model on one device (`reporting.device`)")
    if not fixes:
        fixes.append(
            "point `base_model` at the base the adapters were trained on, or retrain them on this "
            "one (`--params training.retrain=true`)"
        )
    raise ParameterError(
        "The models generated on different base weights, so their differences would not be the "
        "fine-tuning alone:\n" + "\n".join(lines) + "\nFix: " + "; ".join(fixes) + "."
    )


#: Descriptive, not a quality: each model's mean answer length in words, so a reader sees why
#: ROUGE or BERTScore differ (a label inside a sentence scores below the label alone); its
#: difference from the base gets an interval but no test (outside the Holm family).
ANSWER_LENGTH = "answer_words"


def _classes(rows: pd.DataFrame) -> list[str] | None:
    """The class names of a classification set's rows; None for another set."""
    if "label_names" not in rows.columns or rows["label_names"].isna().all():
        return None
    return json.loads(rows["label_names"].dropna().iloc[0])


def _metrics_for(rows: pd.DataFrame, eval_set: str) -> list[M.Metric]:
    out: list[M.Metric] = []
    names = _classes(rows)
    if names is not None:
        y_true = rows["label_index"].astype(int).to_numpy()
        y_pred = rows["predicted_index"].astype(int).to_numpy()
        out += M.classification_metrics(y_true, y_pred, list(range(len(names))), names)
    out.append(M.mean_metric("bertscore_f1", rows["bertscore_f1"].to_numpy()))
    for kind in ("rouge1", "rouge2", "rougeL"):
        out.append(M.mean_metric(kind, rows[kind].to_numpy()))
    bleu_stats = rows[M.BLEU_STAT_COLUMNS].to_numpy(dtype=float)
    out.append(M.bleu_metric(bleu_stats))
    # the study-comparable figures, as Hugging Face evaluate defines them
    out.append(M.evaluate_bleu_metric(bleu_stats))
    for kind in M.EVALUATE_ROUGE_KINDS:
        out.append(M.mean_metric(f"evaluate_{kind}", rows[f"evaluate_{kind}"].to_numpy()))
    words = rows["prediction"].fillna("").astype(str).str.split().str.len()
    out.append(M.mean_metric(ANSWER_LENGTH, words.to_numpy(), higher_is_better=False))
    return out


METRIC_COLUMNS = [
    "eval_set", "model", "display_name", "metric", "value", "ci_low", "ci_high", "n",
    "higher_is_better", "delta_vs_base", "delta_ci_low", "delta_ci_high", "p_value_vs_base",
    "p_holm_vs_base", "bootstrap_resamples",
]


def compute_metrics(scores: pd.DataFrame, params: dict[str, Any], seed: int) -> pd.DataFrame:
    """Every metric with a bootstrap CI, and paired bootstrap tests of each variant vs base.

    All models and metrics of an evaluation set share one set of resamples (seeded from
    ``seed`` and the set), over the examples every model answered, so the comparison with
    the base model is paired. ``p_holm_vs_base`` is Holm-adjusted within the comparisons of one
    table (an evaluation set's own metrics; its ``evaluate_*`` metrics are a family of their
    own); ``bootstrap_resamples`` tells the p-value floor, 1/(resamples+1).
    """
    cfg = reporting_params(params)
    records = []
    model_order = list(dict.fromkeys(scores["model"]))
    for k, eval_set in enumerate(dict.fromkeys(scores["eval_set"])):
        subset = scores[scores["eval_set"] == eval_set]
        if subset.empty:
            continue
        common = set.intersection(*(set(g["id"]) for _, g in subset.groupby("model")))
        dropped = len(set(subset["id"])) - len(common)
        if dropped:
            logger.warning("%s: %d example(s) not answered by every model are left out", eval_set, dropped)
        by_model = {
            m: g[g["id"].isin(common)].sort_values("id").reset_index(drop=True)
            for m, g in subset.groupby("model", sort=False)
        }
        metric_sets = {m: _metrics_for(rows, eval_set) for m, rows in by_model.items()}
        weights = M.bootstrap_weights(len(common), cfg.bootstrap.resamples, seed=seed * 1000 + k)
        records += _estimates(eval_set, by_model, metric_sets, weights, cfg.bootstrap.confidence, model_order)
    frame = pd.DataFrame(records, columns=METRIC_COLUMNS)
    # Holm families: per evaluation set, the comparisons its table shows, and apart from them
    # the study-comparable evaluate_* metrics (the study comparison's)
    # (each class's recall is a family of its own, so the table's headline tests keep theirs)
    family = np.where(
        frame["metric"].isin(EVALUATE_METRICS), "study",
        np.where(frame["metric"].str.startswith("recall/"), "recall", "table"),
    )
    frame["p_holm_vs_base"] = frame.groupby(["eval_set", family])["p_value_vs_base"].transform(stats.holm)
    frame["bootstrap_resamples"] = cfg.bootstrap.resamples
    return frame


def _estimates(
    eval_set: str,
    by_model: dict[str, pd.DataFrame],
    metric_sets: dict[str, list[M.Metric]],
    weights: np.ndarray,
    confidence: float,
    model_order: list[str],
) -> list[dict[str, Any]]:
    """Rows of ``metrics``: each model's metrics with bootstrap CIs and, for every model but the
    base, the paired bootstrap test against the base on the same resampled examples."""
    records = []
    base = metric_sets.get("base")
    n = len(next(iter(by_model.values()))) if by_model else 0
    for model in [m for m in model_order if m in by_model]:
        display = by_model[model]["display_name"].iloc[0]
        for i, metric in enumerate(metric_sets[model]):
            est = M.bootstrap_ci(metric, weights, confidence)
            record = {
                "eval_set": eval_set, "model": model, "display_name": display,
                "metric": metric.name, "value": est.value, "ci_low": est.ci_low,
                "ci_high": est.ci_high, "n": n, "higher_is_better": metric.higher_is_better,
                "delta_vs_base": np.nan, "delta_ci_low": np.nan, "delta_ci_high": np.nan,
                "p_value_vs_base": np.nan,
            }
            if base is not None and model != "base":
                test = M.paired_bootstrap(metric, base[i], weights, confidence)
                record.update(
                    delta_vs_base=test.delta, delta_ci_low=test.ci_low,
                    delta_ci_high=test.ci_high,
                    # a descriptive metric (answer length) gets a difference, not a test
                    p_value_vs_base=test.p_value if metric.name != ANSWER_LENGTH else np.nan,
                )
            records.append(record)
    return records


# --- standard benchmarks (lm-evaluation-harness) ------------------------------------------


def score_benchmarks(
    base_model: str,
    params: dict[str, Any],
    seed: int,
    *,
    model_name: str = "base",
    display_name: str | None = None,
    variant: dict[str, Any] | None = None,
    adapter: Any = None,
    quantization: str | None = None,
    training_seed: int | None = None,
) -> pd.DataFrame:
    """lm-eval's per-sample results of one model (base, or base + ``adapter``) on every task of
    ``reporting.benchmarks``, on the same base weights as its generation (:mod:`.benchmark`)."""
    import torch

    cfg = reporting_params(params)
    if not cfg.benchmarks.tasks:
        return pd.DataFrame(columns=B.SAMPLE_COLUMNS)
    model, tokenizer = evaluated_model(base_model, adapter, quantization, cfg)
    threads = torch.get_num_threads()
    use_cpu_threads(cfg.torch_threads, model_device(model).type)
    try:
        return B.evaluate(
            model, tokenizer, cfg.benchmarks, model_name=model_name, seed=seed, root=B.data_dir(),
            display_name=display_name_of(model_name, display_name, variant, training_seed),
        )
    finally:
        torch.set_num_threads(threads)


#: Bootstrap seeds of the benchmarks: apart from those of the evaluation sets (``seed * 1000 + k``).
BENCHMARK_SEED_OFFSET = 100


def compute_benchmark_metrics(params: dict[str, Any], seed: int, *samples: pd.DataFrame) -> pd.DataFrame:
    """acc and acc_norm of every model on every benchmark task with bootstrap CIs, and paired
    bootstrap tests of each variant against the base on the same questions, Holm-adjusted
    within a task's table. The columns of ``metrics``, ``eval_set`` being the task's name."""
    cfg = reporting_params(params)
    frame = pd.concat([s for s in samples if not s.empty], ignore_index=True) if any(
        not s.empty for s in samples) else pd.DataFrame(columns=B.SAMPLE_COLUMNS)
    if not frame.empty:
        check_same_base(frame)
    records = []
    model_order = list(dict.fromkeys(frame["model"]))
    for k, task in enumerate(dict.fromkeys(frame["task"])):
        by_model = B.paired_samples(frame, task)
        metric_sets = {
            m: [M.mean_metric(name, rows[name].to_numpy(dtype=float)) for name in B.SAMPLE_METRICS]
            for m, rows in by_model.items()
        }
        n = len(next(iter(by_model.values())))
        weights = M.bootstrap_weights(n, cfg.bootstrap.resamples, seed=seed * 1000 + BENCHMARK_SEED_OFFSET + k)
        records += _estimates(task, by_model, metric_sets, weights, cfg.bootstrap.confidence, model_order)
    metrics = pd.DataFrame(records, columns=METRIC_COLUMNS)
    metrics["p_holm_vs_base"] = metrics.groupby("eval_set")["p_value_vs_base"].transform(stats.holm)
    metrics["bootstrap_resamples"] = cfg.bootstrap.resamples
    return metrics


def build_benchmark_table(
    benchmark_metrics: pd.DataFrame, seed_summary: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, str]:
    """The benchmarks' table: CSV frame (one block per task) and Markdown text."""
    return R.benchmark_frame(benchmark_metrics, seed_summary), R.benchmark_markdown(benchmark_metrics, seed_summary)


def plot_benchmarks(benchmark_metrics: pd.DataFrame):
    return R.benchmark_figure(benchmark_metrics)


# --- tables, plots, report ------------------------------------------------------------------


def build_table(
    metrics: pd.DataFrame, seed_summary: pd.DataFrame | None = None, *, eval_set: str
) -> tuple[pd.DataFrame, str]:
    """Table A/B/C for one evaluation set: CSV frame and Markdown text; with several training
    seeds, each variant's spread over seeds (``seed_summary``) beside its per-seed columns."""
    return R.table_frame(metrics, eval_set, seed_summary), R.table_markdown(metrics, eval_set, seed_summary)


def build_seed_summary(
    metrics: pd.DataFrame, variants: dict[str, Any], training_seeds: list[int],
    benchmark_metrics: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, str]:
    """Each variant's metrics (benchmark accuracies included) over its training seeds: mean,
    sd, min, max (CSV and Markdown)."""
    summary = seeds.seed_summary(_with_benchmarks(metrics, benchmark_metrics), variants, training_seeds)
    return summary, R.seed_summary_markdown(summary)


def build_confusion_matrix(scores: pd.DataFrame, eval_set: str) -> tuple[pd.DataFrame, str, Any]:
    """A classification set's confusion matrix per model: rows true class, columns the class
    each answer named and ``invalid`` (table: CSV and Markdown; plot: one heatmap per model)."""
    rows = scores[scores["eval_set"] == eval_set]
    names = _classes(rows)
    if names is None:
        raise ValueError(f"evaluation set {eval_set!r} is not a classification set: it has no confusion matrix")
    frames = []
    for (model, display), group in rows.groupby(["model", "display_name"], sort=False):
        counts = M.confusion_counts(
            group["label_index"].astype(int), group["predicted_index"].astype(int), list(range(len(names))), names
        )
        frame = pd.DataFrame(counts, columns=[*names, "invalid"])
        frame.insert(0, "true_label", names)
        frame.insert(0, "display_name", display)
        frame.insert(0, "model", model)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    return table, R.confusion_markdown(table, eval_set), R.confusion_figure(table, eval_set)


def plot_metrics(metrics: pd.DataFrame, eval_set: str):
    return R.metric_figure(metrics, eval_set)


def build_study_comparison(metrics: pd.DataFrame, study: dict[str, Any] | None) -> tuple[pd.DataFrame, str]:
    """The run's study-comparable figures beside the reference study's (``reference_study``)."""
    parsed = reference_study(study)
    comparison = R.study_comparison(metrics, parsed)
    return comparison, R.study_markdown(comparison, parsed)


def build_report(
    metrics: pd.DataFrame,
    curve: pd.DataFrame,
    comparison: pd.DataFrame,
    seed_summary: pd.DataFrame,
    benchmark_metrics: pd.DataFrame,
    parameters: dict[str, Any],
    *predictions: pd.DataFrame,
) -> str:
    frame = pd.concat(predictions, ignore_index=True)
    return R.render_report(metrics, frame, parameters, curve, comparison, seed_summary, benchmark_metrics)


def _with_benchmarks(metrics: pd.DataFrame, benchmark_metrics: pd.DataFrame | None) -> pd.DataFrame:
    if benchmark_metrics is None or benchmark_metrics.empty:
        return metrics
    return pd.concat([metrics, benchmark_metrics], ignore_index=True)


def curve_metrics(metrics: pd.DataFrame) -> list[tuple[str, str]]:
    """The curve's default (eval_set, metric) pairs, in the sets' order: accuracy and macro-F1
    of a classification set, ROUGE-L and BERTScore F1 of another (the default configuration:
    sentiment, then out-of-sample and Alpaca)."""
    pairs = []
    for eval_set in R.ordered_sets(metrics["eval_set"]):
        names = set(metrics.loc[metrics["eval_set"] == eval_set, "metric"])
        pairs += [(eval_set, m) for m in (("accuracy", "macro_f1") if "accuracy" in names else ("rougeL", "bertscore_f1"))]
    return pairs


def build_forgetting_curve(
    metrics: pd.DataFrame,
    variants: dict[str, Any],
    reporting: dict[str, Any],
    training_seeds: list[int] | None = None,
    seed_summary: pd.DataFrame | None = None,
    benchmark_metrics: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, str, Any]:
    """The forgetting curve over the declared variants (every training seed a point), with each
    variant's spread over seeds when there are several: table (CSV and Markdown) and plot.
    Every benchmark's accuracy is a curve of its own, after the configured metrics."""
    settings = reporting_params(reporting)
    pairs = settings.forgetting_curve_metrics
    chosen = [(p.eval_set, p.metric) for p in pairs] if pairs else curve_metrics(metrics)
    if benchmark_metrics is not None and not benchmark_metrics.empty:
        chosen += [(task, "acc") for task in dict.fromkeys(benchmark_metrics["eval_set"])]
    models = trained_models(variants, training_seeds)
    curve = S.forgetting_curve(
        _with_benchmarks(metrics, benchmark_metrics), variants, chosen, models=models, axis=settings.forgetting_curve_axis
    )
    return (
        curve,
        S.forgetting_curve_markdown(curve, seed_summary),
        S.plot_forgetting_curve(curve, seed_summary),
    )
