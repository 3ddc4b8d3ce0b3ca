"""The ``reporting`` parameter block, validated before any node runs.

Importing this module registers :class:`ReportingParams` in
:data:`mift_kedro.config.PARAMETER_MODELS`, which the ``before_pipeline_run`` hook checks.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveInt, ValidationError, field_validator

from mift_kedro.config import (
    EVAL_SETS,
    PARAMETER_MODELS,
    ParameterError,
    StrictModel,
    format_validation_error,
)


class SamplingParams(StrictModel):
    """Decoding settings; greedy unless ``do_sample`` is true."""

    do_sample: bool = False
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=50, ge=0)
    repetition_penalty: float = Field(default=1.0, gt=0)


class BertScoreParams(StrictModel):
    model_type: str | None = Field(
        default=None, description="None: the embedded all-MiniLM-L6-v2; or e.g. roberta-large"
    )
    num_layers: PositiveInt | None = 6
    batch_size: PositiveInt = 64
    lang: str = "en"
    rescale_with_baseline: bool = False


class BootstrapParams(StrictModel):
    resamples: PositiveInt = 1000
    confidence: float = Field(default=0.95, gt=0, lt=1)


class CurveMetric(StrictModel):
    eval_set: Literal["sentiment", "out_of_sample", "alpaca"]
    metric: Literal["accuracy", "macro_f1", "invalid_rate", "bleu", "rouge1", "rouge2", "rougeL", "bertscore_f1"]


class ReportingParams(StrictModel):
    base_display_name: str = Field(default="Base", min_length=1)
    batch_size: PositiveInt = 16
    device: str | None = Field(default=None, description="None: cuda if available, else cpu")
    num_threads: PositiveInt | Literal["auto"] | None = Field(
        default="auto", description="CPU threads for generation; auto: 1 or torch's default, timed"
    )
    quantization: Literal["none", "4bit"] = "none"
    max_new_tokens: dict[str, PositiveInt]
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    limit: PositiveInt | None = Field(default=None, description="first N examples per set (smoke runs)")
    bertscore: BertScoreParams = Field(default_factory=BertScoreParams)
    bootstrap: BootstrapParams = Field(default_factory=BootstrapParams)
    examples_per_set: PositiveInt = 5
    forgetting_curve_metrics: list[CurveMetric] | None = Field(
        default=None, description="(eval_set, metric) pairs of the forgetting curve; None: the default six"
    )

    @field_validator("max_new_tokens")
    @classmethod
    def _every_set(cls, value: dict[str, int]) -> dict[str, int]:
        missing = [s for s in EVAL_SETS if s not in value]
        unknown = [s for s in value if s not in EVAL_SETS]
        if missing or unknown:
            raise ValueError(
                f"give max_new_tokens for exactly the evaluation sets {list(EVAL_SETS)} "
                f"(missing {missing}, unknown {unknown})"
            )
        return value


def reporting_params(raw: dict[str, Any] | ReportingParams) -> ReportingParams:
    """Parse the ``reporting`` block (nodes call this; errors name the key and the fix)."""
    if isinstance(raw, ReportingParams):
        return raw
    try:
        return ReportingParams.model_validate(raw)
    except ValidationError as exc:
        raise ParameterError(format_validation_error(exc, "`reporting`")) from None


PARAMETER_MODELS.setdefault("reporting", ReportingParams)
