"""reporting: predictions of every model -> per-example scores -> metrics with bootstrap CIs
-> tables A/B/C, plots, report.

Models are data: the base model (namespace ``base``) plus one namespace per variant declared
under ``variants`` in parameters, each generating ``<model>.predictions``.
"""

from __future__ import annotations

import warnings

from kedro.pipeline import Node, Pipeline, pipeline

from mift_kedro.config import EVAL_SETS
from mift_kedro.pipelines import bind
from mift_kedro.pipelines.reporting import nodes
from mift_kedro.pipelines.reporting.report import TABLES

BASE = "base"
EVAL_INPUTS = [f"eval_{s}" for s in EVAL_SETS]


def _base_pipeline() -> Pipeline:
    return pipeline(
        [
            Node(
                nodes.generate_base_predictions,
                ["base_model", *EVAL_INPUTS, "params:reporting", "params:seed",
                 "params:reporting.base_display_name", "params:training", "params:variants"],
                "predictions",
                name="generate_predictions",
            )
        ],
        namespace=BASE,
        inputs={"base_model", *EVAL_INPUTS},
        parameters={"params:reporting", "params:seed", "params:reporting.base_display_name",
                    "params:training", "params:variants"},
        tags=["reporting", "generation", BASE],
    )


def _variant_pipeline(variant: str) -> Pipeline:
    return pipeline(
        [
            Node(
                bind(nodes.generate_variant_predictions, model_name=variant),
                ["adapter", "base_model", *EVAL_INPUTS, "params:reporting", "params:seed",
                 "params:variant", "params:training", "params:variants"],
                "predictions",
                name="generate_predictions",
            )
        ],
        namespace=variant,
        inputs={"base_model", *EVAL_INPUTS},
        parameters={
            "params:reporting": "params:reporting",
            "params:seed": "params:seed",
            "params:variant": f"params:variants.{variant}",
            "params:training": "params:training",
            "params:variants": "params:variants",
        },
        tags=["reporting", "generation", variant],
    )


def _shared_pipeline(models: list[str]) -> Pipeline:
    with warnings.catch_warnings():
        # The shared part reads the namespaced `<model>.predictions` on purpose.
        warnings.filterwarnings("ignore", message="One or more dataset names contain '.'")
        return _shared_nodes(models)


def _shared_nodes(models: list[str]) -> Pipeline:
    predictions = [f"{m}.predictions" for m in models]
    nodes_ = [
        Node(
            nodes.score_predictions,
            ["params:reporting", "params:templates.sentiment", *predictions],
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
            nodes.build_forgetting_curve,
            ["metrics", "params:variants", "params:reporting"],
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
            ["metrics", "forgetting_curve", "study_comparison", "parameters", *predictions],
            "report",
            name="build_report",
        ),
    ]
    for eval_set, letter in TABLES.items():
        nodes_ += [
            Node(
                bind(nodes.build_table, eval_set=eval_set),
                "metrics",
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
    return Pipeline(nodes_, tags="reporting")


def create_pipeline(variants: list[str] | None = None, **kwargs) -> Pipeline:
    variants = list(variants or [])
    if BASE in variants:
        raise ValueError(f"a variant may not be called {BASE!r}: that namespace is the base model's")
    per_model = [_base_pipeline()] + [_variant_pipeline(v) for v in variants]
    return sum(per_model, Pipeline([])) + _shared_pipeline([BASE, *variants])
