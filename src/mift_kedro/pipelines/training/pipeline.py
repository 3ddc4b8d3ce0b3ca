"""training: prepare the base model once, then fine-tune one adapter per variant and training seed.

``kedro run --pipeline training`` trains every variant declared under ``variants`` once per
seed of ``training_seeds``; ``--namespaces custom_only`` picks some (the base model must then
exist already). With one seed a namespace is the variant's name; with several,
``<variant>_s<seed>`` (:func:`mift_kedro.config.trained_models`), and every seed of a variant
reads that variant's one training set.
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline, pipeline

from mift_kedro.config import TrainedModel, trained_models
from mift_kedro.pipelines import bind
from mift_kedro.pipelines.training import nodes


def _model_template(model: TrainedModel, several: bool) -> Pipeline:
    """The per-model part; instantiated once per (variant, seed) under the model's namespace.

    The training seed is bound to the node (it names the namespace, so it cannot come from a
    parameter that ``--params`` could change under it); without one (``seeds=None``) the node
    trains at ``params:seed``, as before training seeds existed.
    """
    if model.seed is None:
        train, inputs = nodes.train_adapter, ["params:seed"]
    else:
        named = {"seed_in_name": True} if several else {}  # "FT-CustomOnly (seed 43)" in logs and records
        train, inputs = bind(nodes.train_adapter, seed=model.seed, **named), []
    return Pipeline(
        [
            Node(
                train,
                ["base_model", "training_set", "params:variant", "params:training", *inputs],
                ["adapter", "training_metrics"],
                name="train_adapter",
            ),
            Node(nodes.plot_loss_curve, "training_metrics", "loss_curve", name="plot_loss_curve"),
        ]
    )


def create_pipeline(variants: list[str] | None = None, seeds: list[int] | None = None, **kwargs) -> Pipeline:
    """``seeds``: the training seeds (``training_seeds``); None trains each variant once at ``seed``."""
    shared = Pipeline(
        [Node(nodes.prepare_base_model, "params:base_model", "base_model", name="prepare_base_model")],
        tags="training",
    )
    per_model = [
        pipeline(
            _model_template(model, several=len(seeds or []) > 1),
            namespace=model.name,
            # every seed of a variant trains on the variant's one training set (data_engineering)
            inputs={"base_model": "base_model", "training_set": f"{model.variant}.training_set"},
            parameters={
                "params:variant": f"params:variants.{model.variant}",
                "params:training": "params:training",
                **({"params:seed": "params:seed"} if model.seed is None else {}),
            },
            tags=["training", model.variant, model.name],
        )
        for model in trained_models(dict.fromkeys(variants or []), seeds)
    ]
    return shared + sum(per_model, Pipeline([]))
