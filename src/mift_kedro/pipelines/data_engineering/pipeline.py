"""data_engineering: raw splits -> clean -> templated pools -> per-variant mixes + eval sets."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline, pipeline

from mift_kedro.pipelines import bind
from mift_kedro.pipelines.data_engineering import nodes


def _shared_pipeline() -> Pipeline:
    """Work done once for all variants: validation, templating, evaluation sets."""
    cleaning = [
        Node(
            bind(nodes.clean_tweets, name=f"tweets[{split}]"),
            f"tweets_raw_{split}",
            f"tweets_{split}_clean",
            name=f"clean_tweets_{split}",
        )
        for split in ("train", "validation", "test")
    ] + [
        Node(
            bind(nodes.clean_alpaca, name=f"alpaca[{split}]"),
            f"alpaca_raw_{split}",
            f"alpaca_{split}_clean",
            name=f"clean_alpaca_{split}",
        )
        for split in ("train", "test")
    ]
    templating = [
        Node(
            nodes.template_sentiment,
            [f"tweets_{split}_clean", "params:templates.sentiment"],
            f"sentiment_{split}_pool",
            name=f"template_sentiment_{split}",
        )
        for split in ("train", "validation", "test")
    ] + [
        Node(nodes.template_alpaca, f"alpaca_{split}_clean", f"alpaca_{split}_pool", name=f"template_alpaca_{split}")
        for split in ("train", "test")
    ]
    eval_sets = [
        Node(
            nodes.build_sentiment_eval,
            ["sentiment_test_pool", "params:eval_sets.sentiment", "params:seed"],
            "eval_sentiment",
            name="build_eval_sentiment",
        ),
        Node(
            nodes.build_alpaca_eval,
            ["alpaca_test_pool", "params:eval_sets.alpaca", "params:seed"],
            "eval_alpaca",
            name="build_eval_alpaca",
        ),
        Node(
            nodes.build_out_of_sample_eval,
            "out_of_sample_instructions",
            "eval_out_of_sample",
            name="build_eval_out_of_sample",
        ),
    ]
    return Pipeline(cleaning + templating + eval_sets, tags="data_engineering")


def _variant_template() -> Pipeline:
    """The per-variant part; instantiated once per variant under its namespace."""
    return Pipeline(
        [
            Node(
                nodes.mix_training_set,
                ["sentiment_train_pool", "alpaca_train_pool", "params:variant", "params:seed"],
                ["training_set", "mix_report"],
                name="mix_training_set",
            )
        ]
    )


def create_pipeline(variants: list[str] | None = None, **kwargs) -> Pipeline:
    variants = variants or []
    per_variant = [
        pipeline(
            _variant_template(),
            namespace=variant,
            inputs={"sentiment_train_pool", "alpaca_train_pool"},
            parameters={"params:variant": f"params:variants.{variant}", "params:seed": "params:seed"},
            tags=["data_engineering", variant],
        )
        for variant in variants
    ]
    return _shared_pipeline() + sum(per_variant, Pipeline([]))
