"""The data_engineering parameters (``seed``, ``variants``, ``templates``, ``eval_sets``),
validated before any node runs (:mod:`mift_kedro.parameters` lists this schema)."""

from __future__ import annotations

from pydantic import Field, PositiveInt, field_validator

from mift_kedro.config import EVAL_SETS, StrictModel, VariantSpec


class SentimentTemplate(StrictModel):
    """How a tweet becomes the custom instruction."""

    instruction: str = Field(min_length=1)
    labels: dict[int, str]
    system: str | None = Field(default=None, description="a system prompt before each tweet; None: none")

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, labels: dict[int, str]) -> dict[int, str]:
        if set(labels) != {0, 1} or len(set(labels.values())) != 2:
            raise ValueError("labels must map 0 and 1 to two different answers")
        return labels


class Templates(StrictModel):
    sentiment: SentimentTemplate


class EvalSetSpec(StrictModel):
    size: PositiveInt | None = Field(default=None, description="None keeps the whole set")


class DataEngineeringParams(StrictModel):
    """The blocks the data_engineering pipeline reads."""

    seed: int
    variants: dict[str, VariantSpec]
    templates: Templates
    eval_sets: dict[str, EvalSetSpec]

    @field_validator("variants")
    @classmethod
    def _check_variants(cls, variants: dict[str, VariantSpec]) -> dict[str, VariantSpec]:
        if not variants:
            raise ValueError("no variants declared: add at least one under `variants`")
        for name in variants:
            if not name.isidentifier():
                raise ValueError(f"variant name {name!r} must be a Python identifier (a namespace)")
        return variants

    @field_validator("eval_sets")
    @classmethod
    def _check_eval_sets(cls, eval_sets: dict[str, EvalSetSpec]) -> dict[str, EvalSetSpec]:
        unknown = set(eval_sets) - set(EVAL_SETS)
        if unknown:
            raise ValueError(f"unknown eval sets {sorted(unknown)}: use {list(EVAL_SETS)}")
        return eval_sets
