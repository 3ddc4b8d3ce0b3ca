"""training: prepare the base model once, then fine-tune one adapter per variant.

``kedro run --pipeline training`` trains every variant declared under ``variants``;
``--namespaces custom_only`` picks some (the base model must then exist already).
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline, pipeline

from mift_kedro.pipelines.training import nodes


def _variant_template() -> Pipeline:
    """The per-variant part; instantiated once per variant under its namespace."""
    return Pipeline(
        [
            Node(
                nodes.train_adapter,
                ["base_model", "training_set", "params:variant", "params:training", "params:seed"],
                ["adapter", "training_metrics"],
                name="train_adapter",
            ),
            Node(nodes.plot_loss_curve, "training_metrics", "loss_curve", name="plot_loss_curve"),
        ]
    )


def create_pipeline(variants: list[str] | None = None, **kwargs) -> Pipeline:
    shared = Pipeline(
        [Node(nodes.prepare_base_model, "params:base_model", "base_model", name="prepare_base_model")],
        tags="training",
    )
    per_variant = [
        pipeline(
            _variant_template(),
            namespace=variant,
            inputs={"base_model"},
            parameters={
                "params:variant": f"params:variants.{variant}",
                "params:training": "params:training",
                "params:seed": "params:seed",
            },
            tags=["training", variant],
        )
        for variant in variants or []
    ]
    return shared + sum(per_variant, Pipeline([]))
