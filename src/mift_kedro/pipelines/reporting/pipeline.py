"""reporting: predictions of every model -> per-example scores -> metrics with bootstrap CIs
-> tables A/B/C, plots, report.

Models are data: the base model (namespace ``base``) plus one namespace per variant declared
under ``variants`` in parameters and training seed of ``training_seeds`` (the variant's name
with one seed, ``<variant>_s<seed>`` with several), each generating ``<model>.predictions`` and
scoring the standard benchmarks (``<model>.benchmark_samples``, lm-evaluation-harness) on the
same base weights; the base row's quantization (``auto``) is the one the adapters ran on.
``seed_summary`` aggregates the per-seed metrics of each variant (mean, sd, min, max), which
tables A/B/C, the forgetting curve and the report show beside the bootstrap CIs.
"""

from __future__ import annotations

import warnings
from typing import Any

from kedro.pipeline import Node, Pipeline, pipeline

from mift_kedro.config import EVAL_SETS, TrainedModel, eval_set_outputs, trained_models
from mift_kedro.pipelines import bind
from mift_kedro.pipelines.reporting import nodes
from mift_kedro.pipelines.reporting.params import generation_settings

BASE = "base"
#: The configured evaluation sets, by name, for the generation nodes (in memory).
EVAL_INPUTS = ["evaluation_sets", "generation_params"]


def _active(key: str) -> dict:
    from mift_kedro import config

    return config._active_parameters().get(key) or {}


def _collect_pipeline(eval_sets: list[str]) -> Pipeline:
    """The configured evaluation sets and their generation budgets, for every model's generation."""
    return Pipeline([
        Node(
            bind(nodes.collect_eval_sets, names=eval_sets),
            [f"eval_{s}" for s in eval_sets],
            "evaluation_sets",
            name="collect_eval_sets",
        ),
        Node(
            generation_settings, ["params:reporting", "params:eval_sets"], "generation_params",
            name="generation_settings",
        ),
    ], tags=["reporting", "generation"])


def _model_nodes(bound: dict[str, Any], **given: str) -> list[Node]:
    """One model's generation and benchmark nodes: ``bound`` fixed keyword arguments (its name),
    ``given`` the node inputs beside the shared ones (adapter, display name, quantization)."""
    shared = {"base_model": "base_model", "params": "params:reporting", "seed": "params:seed"}
    # generation reads the configured sets and their budgets (the reporting block with them)
    evals = {"eval_sets": "evaluation_sets", "params": "generation_params"}
    return [
        Node(bind(nodes.generate_predictions, **bound), {**shared, **evals, **given}, "predictions",
             name="generate_predictions"),
        Node(bind(nodes.score_benchmarks, **bound), {**shared, **given}, "benchmark_samples",
             name="score_benchmarks"),
    ]


def _base_pipeline(models: list[TrainedModel]) -> Pipeline:
    """The base model; its quantization (``auto``) is the one the adapters ran on."""
    predictions = [f"{m.name}.predictions" for m in models]
    with warnings.catch_warnings():  # it reads the variants' namespaced `<model>.predictions` on purpose
        warnings.filterwarnings("ignore", message="One or more dataset names contain '.'")
        quantization = Node(nodes.base_quantization, ["params:reporting", *predictions], "quantization",
                            name="base_quantization")
    return pipeline(
        [
            quantization,
            *_model_nodes({"model_name": BASE}, display_name="params:reporting.base_display_name",
                          quantization="quantization"),
        ],
        namespace=BASE,
        inputs={"base_model", *EVAL_INPUTS, *predictions},
        parameters={"params:reporting", "params:seed", "params:reporting.base_display_name"},
        tags=["reporting", "generation", BASE],
    )


def _variant_pipeline(model: TrainedModel, several: bool) -> Pipeline:
    """Generation and benchmarks of one variant's adapter for one training seed (namespace
    ``model.name``)."""
    named = {"training_seed": model.seed} if several else {}  # display name "FT-CustomOnly (seed 43)"
    return pipeline(
        _model_nodes({"model_name": model.name, **named}, adapter="adapter", variant="params:variant"),
        namespace=model.name,
        inputs={"base_model", *EVAL_INPUTS},
        parameters={
            "params:reporting": "params:reporting",
            "params:seed": "params:seed",
            "params:variant": f"params:variants.{model.variant}",
        },
        tags=["reporting", "generation", model.variant, model.name],
    )


def _shared_pipeline(models: list[str], eval_sets: dict, sources: dict) -> Pipeline:
    with warnings.catch_warnings():
        # The shared part reads the namespaced `<model>.predictions` on purpose.
        warnings.filterwarnings("ignore", message="One or more dataset names contain '.'")
        return _shared_nodes(models, eval_sets, sources)


def _shared_nodes(models: list[str], eval_sets: dict, sources: dict) -> Pipeline:
    predictions = [f"{m}.predictions" for m in models]
    nodes_ = [
        Node(
            nodes.compute_benchmark_metrics,
            ["params:reporting", "params:seed", *(f"{m}.benchmark_samples" for m in models)],
            "benchmark_metrics",
            name="compute_benchmark_metrics",
        ),
        Node(
            nodes.build_benchmark_table,
            ["benchmark_metrics", "seed_summary"],
            ["table_benchmarks_csv", "table_benchmarks_md"],
            name="build_benchmark_table",
        ),
        Node(nodes.plot_benchmarks, "benchmark_metrics", "plot_benchmarks", name="plot_benchmarks"),
        Node(
            nodes.score_predictions,
            ["params:reporting", "params:sources", "params:eval_sets", *predictions],
            "per_example_scores",
            name="score_predictions",
        ),
        Node(
            nodes.compute_metrics,
            ["per_example_scores", "params:reporting", "params:seed"],
            "metrics",
            name="compute_metrics",
        ),
        Node(
            nodes.build_seed_summary,
            ["metrics", "params:variants", "params:training_seeds", "benchmark_metrics"],
            ["seed_summary", "seed_summary_md"],
            name="build_seed_summary",
        ),
        Node(
            nodes.build_forgetting_curve,
            ["metrics", "params:variants", "params:reporting", "params:training_seeds", "seed_summary",
             "benchmark_metrics"],
            ["forgetting_curve", "forgetting_curve_md", "plot_forgetting_curve"],
            name="build_forgetting_curve",
        ),
        Node(
            nodes.build_study_comparison,
            ["metrics", "params:reference_study"],
            ["study_comparison", "study_comparison_md"],
            name="build_study_comparison",
        ),
        Node(
            nodes.build_report,
            ["metrics", "forgetting_curve", "study_comparison", "seed_summary", "benchmark_metrics",
             "parameters", *predictions],
            "report",
            name="build_report",
        ),
    ]
    for eval_set, letter, classification in eval_set_outputs(eval_sets, sources):
        nodes_ += [
            Node(
                bind(nodes.build_table, eval_set=eval_set),
                ["metrics", "seed_summary"],
                [f"table_{letter}_csv", f"table_{letter}_md"],
                name=f"build_table_{letter}",
            ),
            Node(
                bind(nodes.plot_metrics, eval_set=eval_set),
                "metrics",
                f"plot_{eval_set}",
                name=f"plot_{eval_set}",
            ),
        ]
        if classification:
            nodes_.append(Node(
                bind(nodes.build_confusion_matrix, eval_set=eval_set),
                "per_example_scores",
                [f"confusion_{eval_set}_csv", f"confusion_{eval_set}_md", f"plot_confusion_{eval_set}"],
                name=f"build_confusion_{eval_set}",
            ))
    return Pipeline(nodes_, tags="reporting")


def create_pipeline(
    variants: list[str] | None = None,
    seeds: list[int] | None = None,
    eval_sets: dict | None = None,
    sources: dict | None = None,
    **kwargs,
) -> Pipeline:
    """The base model plus one generation namespace per variant and training seed (``seeds``:
    ``training_seeds``; None: one per variant), then the shared scoring and reporting, one
    table and plot per evaluation set (``eval_sets``; default: the active parameters') and a
    confusion matrix per classification set."""
    eval_sets = _active("eval_sets") if eval_sets is None else eval_sets
    eval_sets = eval_sets or dict.fromkeys(EVAL_SETS)
    sources = _active("sources") if sources is None else sources
    models = trained_models(dict.fromkeys(variants or []), seeds)
    if BASE in {m.name for m in models}:
        raise ValueError(f"a variant may not be called {BASE!r}: that namespace is the base model's")
    several = len(seeds or []) > 1
    per_model = [_base_pipeline(models)] + [_variant_pipeline(m, several) for m in models]
    return (
        _collect_pipeline(list(eval_sets)) + sum(per_model, Pipeline([]))
        + _shared_pipeline([BASE, *(m.name for m in models)], eval_sets, sources)
    )
