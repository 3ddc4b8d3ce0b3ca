"""Reporting nodes: predictions per model, per-example scores, metrics with bootstrap CIs,
tables A/B/C, plots and the report. Thin wrappers over :mod:`.generation`, :mod:`.metrics`
and :mod:`.report`, testable without Kedro."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd

from mift_kedro.config import EVAL_SETS, ParameterError, seed_display_name, trained_models
from mift_kedro.distributed import map_across_processes, on_main_process
from mift_kedro.pipelines.reporting import metrics as M
from mift_kedro.pipelines.reporting import report as R
from mift_kedro.pipelines.reporting import seeds, stats
from mift_kedro.pipelines.reporting import sweep as S
from mift_kedro.pipelines.reporting.generation import generate, model_device
from mift_kedro.pipelines.reporting.params import (
    EVALUATE_METRICS,
    generation_quantization,
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


def _label(value: Any) -> int | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return int(value)


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


def _eval_sets(sentiment: pd.DataFrame, out_of_sample: pd.DataFrame, alpaca: pd.DataFrame) -> dict:
    return dict(zip(EVAL_SETS, (sentiment, out_of_sample, alpaca), strict=True))


def generate_base_predictions(
    base_model: str,
    eval_sentiment: pd.DataFrame,
    eval_out_of_sample: pd.DataFrame,
    eval_alpaca: pd.DataFrame,
    params: dict[str, Any],
    seed: int,
    display_name: str,
    training: dict[str, Any],
    variants: dict[str, Any],
) -> pd.DataFrame:
    """Predictions of the base model (``base_model`` is a ref for :mod:`mift_kedro.models`),
    loaded as the adapters' base is (:func:`.params.generation_quantization`)."""
    from mift_kedro import models

    cfg = reporting_params(params)
    quantization = generation_quantization(cfg, training, variants)
    tokenizer = models.load_tokenizer(base_model)
    model = models.load_causal_lm(base_model, quantization=quantization, device=cfg.device)
    return predict(
        model, tokenizer, _eval_sets(eval_sentiment, eval_out_of_sample, eval_alpaca), params,
        model_name="base", display_name=display_name, seed=seed,
    )


def generate_variant_predictions(
    adapter: Any,
    base_model: str,
    eval_sentiment: pd.DataFrame,
    eval_out_of_sample: pd.DataFrame,
    eval_alpaca: pd.DataFrame,
    params: dict[str, Any],
    seed: int,
    variant: dict[str, Any],
    training: dict[str, Any],
    variants: dict[str, Any],
    model_name: str,
    training_seed: int | None = None,
) -> pd.DataFrame:
    """Predictions of base + adapter (a ``peft.PeftModel``; no merge), base's tokenizer.
    ``training_seed``, when the variant was trained with several, goes into the display name.

    The adapter is moved onto the base the base row uses (same quantization, device and
    dtype) when it was loaded otherwise; scoring checks the weights themselves.
    """
    from mift_kedro import models

    cfg = reporting_params(params)
    recorded = _adapter_base(adapter)
    if recorded and not _same_ref(recorded, base_model):
        logger.warning(
            "%s: the adapter records base model %r, the catalog's base_model is %r; "
            "using the adapter's tokenizer source %r", model_name, recorded, base_model, recorded,
        )
    tokenizer = models.load_tokenizer(str(recorded or base_model))
    quantization = generation_quantization(cfg, training, variants)
    adapter = on_base(adapter, str(recorded or base_model), quantization, cfg.device)
    return predict(
        adapter, tokenizer, _eval_sets(eval_sentiment, eval_out_of_sample, eval_alpaca), params,
        model_name=model_name, seed=seed,
        display_name=seed_display_name(variant.get("display_name", model_name), training_seed),
    )


def on_base(adapter: Any, ref: str, quantization: str, device: str | None) -> Any:
    """``adapter`` on the base :func:`mift_kedro.models.load_causal_lm` gives for these settings.

    Kept as it is when its base already has that quantization, device and dtype; otherwise
    its LoRA weights are put on a freshly loaded base (peft's state-dict functions), so that,
    e.g., a QLoRA adapter is evaluated on bf16 weights when ``reporting.quantization: none``
    asks for it, exactly like the base row.
    """
    import torch
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    from mift_kedro import models

    device = device or models.default_device()
    current = model_device(adapter)
    wanted = torch.device(device)
    same_device = current.type == wanted.type and (wanted.index is None or current.index == wanted.index)
    if (
        models.loaded_quantization(adapter) == quantization
        and same_device
        and adapter.get_base_model().dtype == models.compute_dtype(device)
    ):
        return adapter
    name = adapter.active_adapter
    logger.info(
        "Moving adapter %r from a %s base on %s to a %s base on %s (the base row's)",
        name, models.loaded_quantization(adapter), current, quantization, device,
    )
    state = get_peft_model_state_dict(adapter, adapter_name=name)
    config = adapter.peft_config[name]
    base = models.load_causal_lm(ref, quantization=quantization, device=device)
    moved = get_peft_model(base, config, adapter_name=name)
    set_peft_model_state_dict(moved, state, adapter_name=name)
    return moved.eval()


def _same_ref(a: str, b: str) -> bool:
    from pathlib import Path

    return str(a) == str(b) or Path(str(a)).resolve() == Path(str(b)).resolve()


def _adapter_base(adapter: Any) -> str | None:
    config = getattr(adapter, "peft_config", None) or {}
    for spec in config.values():
        return getattr(spec, "base_model_name_or_path", None)
    return None


# --- scoring -------------------------------------------------------------------------------


def score_predictions(
    params: dict[str, Any], sentiment_template: dict[str, Any], *predictions: pd.DataFrame
) -> pd.DataFrame:
    """Per-example statistics of every model's predictions (one BERTScore model load)."""
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
    labels = {int(k): v for k, v in sentiment_template["labels"].items()}
    is_sentiment = frame["eval_set"] == "sentiment"
    scores["predicted_label"] = [
        M.map_label(p, labels) if s else None for p, s in zip(preds, is_sentiment, strict=True)
    ]
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


def _metrics_for(rows: pd.DataFrame, eval_set: str, labels: list[int]) -> list[M.Metric]:
    out: list[M.Metric] = []
    if eval_set == "sentiment":
        y_true = rows["label"].astype(int).to_numpy()
        y_pred = rows["predicted_label"].astype(int).to_numpy()
        out += M.sentiment_metrics(y_true, y_pred, labels)
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
    labels = [0, 1]
    records = []
    model_order = list(dict.fromkeys(scores["model"]))
    for k, eval_set in enumerate(EVAL_SETS):
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
        n = len(common)
        weights = M.bootstrap_weights(n, cfg.bootstrap.resamples, seed=seed * 1000 + k)
        metric_sets = {m: _metrics_for(rows, eval_set, labels) for m, rows in by_model.items()}
        base = metric_sets.get("base")
        for model in [m for m in model_order if m in by_model]:
            display = by_model[model]["display_name"].iloc[0]
            for i, metric in enumerate(metric_sets[model]):
                est = M.bootstrap_ci(metric, weights, cfg.bootstrap.confidence)
                record = {
                    "eval_set": eval_set, "model": model, "display_name": display,
                    "metric": metric.name, "value": est.value, "ci_low": est.ci_low,
                    "ci_high": est.ci_high, "n": n, "higher_is_better": metric.higher_is_better,
                    "delta_vs_base": np.nan, "delta_ci_low": np.nan, "delta_ci_high": np.nan,
                    "p_value_vs_base": np.nan,
                }
                if base is not None and model != "base":
                    test = M.paired_bootstrap(metric, base[i], weights, cfg.bootstrap.confidence)
                    record.update(
                        delta_vs_base=test.delta, delta_ci_low=test.ci_low, delta_ci_high=test.ci_high,
                        p_value_vs_base=test.p_value if metric.name != ANSWER_LENGTH else np.nan,
                    )
                records.append(record)
    frame = pd.DataFrame(records, columns=METRIC_COLUMNS)
    # Holm families: per evaluation set, the comparisons its table shows, and apart from them
    # the study-comparable evaluate_* metrics (the study comparison's)
    family = np.where(frame["metric"].isin(EVALUATE_METRICS), "study", "table")
    frame["p_holm_vs_base"] = frame.groupby(["eval_set", family])["p_value_vs_base"].transform(stats.holm)
    frame["bootstrap_resamples"] = cfg.bootstrap.resamples
    return frame


# --- tables, plots, report ------------------------------------------------------------------


def build_table(
    metrics: pd.DataFrame, seed_summary: pd.DataFrame | None = None, *, eval_set: str
) -> tuple[pd.DataFrame, str]:
    """Table A/B/C for one evaluation set: CSV frame and Markdown text; with several training
    seeds, each variant's spread over seeds (``seed_summary``) beside its per-seed columns."""
    return R.table_frame(metrics, eval_set, seed_summary), R.table_markdown(metrics, eval_set, seed_summary)


def build_seed_summary(
    metrics: pd.DataFrame, variants: dict[str, Any], training_seeds: list[int]
) -> tuple[pd.DataFrame, str]:
    """Each variant's metrics over its training seeds: mean, sd, min, max (CSV and Markdown)."""
    summary = seeds.seed_summary(metrics, variants, training_seeds)
    return summary, R.seed_summary_markdown(summary)


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
    parameters: dict[str, Any],
    *predictions: pd.DataFrame,
) -> str:
    frame = pd.concat(predictions, ignore_index=True)
    return R.render_report(metrics, frame, parameters, curve, comparison, seed_summary)


def build_forgetting_curve(
    metrics: pd.DataFrame,
    variants: dict[str, Any],
    reporting: dict[str, Any],
    training_seeds: list[int] | None = None,
    seed_summary: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, str, Any]:
    """The forgetting curve over the declared variants (every training seed a point), with each
    variant's spread over seeds when there are several: table (CSV and Markdown) and plot."""
    pairs = reporting_params(reporting).forgetting_curve_metrics
    models = trained_models(variants, training_seeds)
    curve = S.forgetting_curve(metrics, variants, pairs and [(p.eval_set, p.metric) for p in pairs], models=models)
    return (
        curve,
        S.forgetting_curve_markdown(curve, seed_summary),
        S.plot_forgetting_curve(curve, seed_summary),
    )
