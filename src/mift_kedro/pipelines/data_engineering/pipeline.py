"""data_engineering: each source's raw splits -> templated pools -> evaluation sets and
per-variant mixes. Sources, evaluation sets and variants come from parameters."""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Node, Pipeline, pipeline

from mift_kedro.pipelines import bind
from mift_kedro.pipelines.data_engineering import nodes
from mift_kedro.pipelines.data_engineering.params import TRAIN_SPLIT


def _active(key: str) -> dict[str, Any]:
    from mift_kedro import config

    return config._active_parameters().get(key) or {}


def _eval_source(name: str, spec: dict[str, Any] | None) -> tuple[str, str]:
    spec = spec or {}
    return spec.get("source") or name, spec.get("split") or "test"


def _splits_needed(sources, variants, eval_sets) -> dict[str, list[str]]:
    """The splits each source must provide: train for a mixed source, the evaluation sets' splits."""
    needed: dict[str, list[str]] = {name: [] for name in sources}
    for variant in variants.values():
        for source in (variant or {}).get("mix") or {}:
            needed.setdefault(source, []).append(TRAIN_SPLIT)
    for name, spec in eval_sets.items():
        source, split = _eval_source(name, spec)
        needed.setdefault(source, []).append(split)
    return {s: list(dict.fromkeys(splits)) for s, splits in needed.items() if splits}


def _shared_pipeline(sources, variants, eval_sets) -> Pipeline:
    """Work done once for all variants: validation and templating, evaluation sets."""
    prepare = [
        Node(
            bind(nodes.prepare_source, name=source, splits=splits),
            [f"{source}_raw", f"params:sources.{source}"],
            {split: f"{source}_{split}_pool" for split in splits},
            name=f"prepare_{source}",
        )
        for source, splits in _splits_needed(sources, variants, eval_sets).items()
    ]
    build_eval = []
    for name, spec in eval_sets.items():
        source, split = _eval_source(name, spec)
        build_eval.append(Node(
            bind(nodes.build_eval_set, name=name),
            [f"{source}_{split}_pool", f"params:eval_sets.{name}", f"params:sources.{source}", "params:seed"],
            f"eval_{name}",
            name=f"build_eval_{name}",
        ))
    return Pipeline(prepare + build_eval, tags="data_engineering")


def _variant_pipeline(variant: str, mixed: list[str], evals: list[str]) -> Pipeline:
    """The per-variant mix, under the variant's namespace."""
    inputs = [f"{s}_{TRAIN_SPLIT}_pool" for s in mixed] + [f"eval_{e}" for e in evals]
    return pipeline(
        [
            Node(
                bind(nodes.mix_training_set, pools=mixed, evals=evals),
                ["params:variant", "params:seed", "params:sources", *inputs],
                ["training_set", "mix_report"],
                name="mix_training_set",
            )
        ],
        namespace=variant,
        inputs=set(inputs),
        parameters={
            "params:variant": f"params:variants.{variant}",
            "params:seed": "params:seed",
            "params:sources": "params:sources",
        },
        tags=["data_engineering", variant],
    )


def create_pipeline(
    variants: list[str] | None = None,
    sources: dict[str, Any] | None = None,
    eval_sets: dict[str, Any] | None = None,
    variant_specs: dict[str, Any] | None = None,
    **kwargs,
) -> Pipeline:
    """The shared part plus one namespace per variant; ``sources``, ``eval_sets`` and the
    variants' specs default to the active environment's parameters."""
    sources = _active("sources") if sources is None else sources
    eval_sets = _active("eval_sets") if eval_sets is None else eval_sets
    specs = _active("variants") if variant_specs is None else variant_specs
    specs = {v: specs.get(v) or {} for v in variants or []}
    per_variant = [
        _variant_pipeline(v, [s for s in sources if s in (spec.get("mix") or {})], list(eval_sets))
        for v, spec in specs.items()
    ]
    return _shared_pipeline(sources, specs, eval_sets) + sum(per_variant, Pipeline([]))
