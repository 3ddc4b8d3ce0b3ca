"""The ``reporting`` parameter block, validated before any node runs.

:data:`mift_kedro.parameters.BLOCKS` lists :class:`ReportingParams` and
:class:`ReferenceStudyBlock`, which the ``before_pipeline_run`` hook checks.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveInt,
    RootModel,
    model_validator,
)

from mift_kedro.config import (
    EVAL_SETS,
    ParameterError,
    StrictModel,
    validated,
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


#: Every metric the reporting pipeline computes: the project's own, then the study-comparable
#: ones defined as Hugging Face ``evaluate``'s ``bleu`` and ``rouge`` (see :mod:`.metrics`).
PROJECT_METRICS = ("accuracy", "macro_f1", "invalid_rate", "bleu", "rouge1", "rouge2", "rougeL", "bertscore_f1")
EVALUATE_METRICS = ("evaluate_bleu", "evaluate_rouge1", "evaluate_rouge2", "evaluate_rougeL", "evaluate_rougeLsum")
MetricName = Literal[PROJECT_METRICS + EVALUATE_METRICS]


class BenchmarkTask(StrictModel):
    """Where one lm-evaluation-harness task's questions come from."""

    local_dir: str | None = Field(
        default=None,
        description="folder of <split>.jsonl files in the allenai/ai2_arc schema, relative to "
        "MIFT_DATA_DIR (used only when it is set) or absolute (always used); null: the stock task",
    )
    split: str = Field(default="test", min_length=1, description="the local split scored")


class BenchmarksParams(StrictModel):
    """Standard multiple-choice benchmarks scored by log-likelihood (:mod:`.benchmark`)."""

    tasks: dict[str, BenchmarkTask | None] = Field(
        default_factory=lambda: {"arc_easy": BenchmarkTask(local_dir="arc_easy")},
        description="lm-eval task (or group) name -> its data; empty: no benchmark",
    )
    limit: PositiveInt | None = Field(default=100, description="first N questions per task; null: all")
    apply_chat_template: bool = Field(
        default=False, description="false: plain prompts, as lm-eval scores base models"
    )
    num_fewshot: NonNegativeInt = 0
    batch_size: PositiveInt = 16

    def task(self, name: str) -> BenchmarkTask:
        return self.tasks.get(name) or BenchmarkTask()


class CurveMetric(StrictModel):
    eval_set: str = Field(min_length=1, description="a configured evaluation set (`eval_sets`)")
    metric: MetricName | str


class ReportingParams(StrictModel):
    base_display_name: str = Field(default="Base", min_length=1)
    batch_size: PositiveInt = 16
    device: str | None = Field(default=None, description="None: cuda if available, else cpu")
    torch_threads: PositiveInt | Literal["auto"] | None = Field(
        default="auto", description="CPU threads for generation; auto: the cores not busy (mift_kedro.threads)"
    )
    quantization: Literal["auto", "none", "4bit"] = Field(
        default="auto",
        description="base weights of every row; auto: what the adapters' own records name",
    )
    max_new_tokens: dict[str, PositiveInt]
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    limit: PositiveInt | None = Field(default=None, description="first N examples per set (smoke runs)")
    bertscore: BertScoreParams = Field(default_factory=BertScoreParams)
    bootstrap: BootstrapParams = Field(default_factory=BootstrapParams)
    examples_per_set: PositiveInt = 5
    benchmarks: BenchmarksParams = Field(default_factory=BenchmarksParams)
    forgetting_curve_metrics: list[CurveMetric] | None = Field(
        default=None, description="(eval_set, metric) pairs of the forgetting curve; None: the default six"
    )
    forgetting_curve_axis: str = Field(
        default="alpaca", min_length=1,
        description="the source (`sources`) whose fraction of each variant's mix is the curve's x axis",
    )



def generation_budgets(reporting: dict[str, Any], eval_sets: dict[str, Any]) -> dict[str, int]:
    """Each configured evaluation set's generation budget: ``eval_sets.<name>.max_new_tokens``,
    else ``reporting.max_new_tokens.<name>`` (budgets of sets not configured are ignored)."""
    tokens = (reporting or {}).get("max_new_tokens") or {}
    budgets = {n: (spec or {}).get("max_new_tokens") or tokens.get(n) for n, spec in eval_sets.items()}
    missing = [n for n, b in budgets.items() if b is None]
    if missing:
        raise ParameterError(
            f"eval_sets.{missing[0]}.max_new_tokens: no generation budget for evaluation set(s) {missing}; "
            "give `max_new_tokens: <tokens>` in the set (or under reporting.max_new_tokens)"
        )
    return budgets


def generation_settings(reporting: dict[str, Any], eval_sets: dict[str, Any]) -> dict[str, Any]:
    """The ``reporting`` block with the generation budget of every configured evaluation set."""
    return {**reporting, "max_new_tokens": generation_budgets(reporting, eval_sets)}


def check_eval_sets(reporting: dict[str, Any], eval_sets: dict[str, Any]) -> None:
    """Every configured evaluation set has a generation budget; the curve's sets exist."""
    generation_budgets(reporting, eval_sets)
    curve = (reporting or {}).get("forgetting_curve_metrics") or []
    bad = [c.get("eval_set") for c in curve if isinstance(c, dict) and c.get("eval_set") not in eval_sets]
    if bad:
        raise ParameterError(
            f"reporting.forgetting_curve_metrics: evaluation set(s) {bad} are not in `eval_sets` {list(eval_sets)}"
        )


def check_curve_axis(reporting: dict[str, Any], sources: dict[str, Any]) -> None:
    """The forgetting curve's axis names a configured source."""
    axis = (reporting or {}).get("forgetting_curve_axis", "alpaca")
    if axis not in (sources or {}):
        raise ParameterError(
            f"reporting.forgetting_curve_axis: {axis!r} is not a configured source (`sources`: {list(sources or {})})"
        )


#: Which run metric each of the study's columns is compared with. ROUGE is ROUGE-L: ROUGE-2
#: cannot be it (one-word sentiment references have no bigrams, yet the study reports 0.95),
#: ROUGE-1 and ROUGE-L coincide on one-word references, and ROUGE-L is the project's own
#: headline ROUGE (tables, forgetting curve). The other variants stay in ``metrics``.
DEFAULT_STUDY_METRICS = {"BLEU": "evaluate_bleu", "ROUGE": "evaluate_rougeL", "BERTScore": "bertscore_f1"}


class ReferenceStudy(StrictModel):
    """A published result to hold the run against: its figures are data (``conf/<env>``)."""

    name: str = Field(default="Reference study", min_length=1)
    note: str | None = None
    metrics: dict[str, MetricName] = Field(
        default_factory=lambda: dict(DEFAULT_STUDY_METRICS),
        description="study column -> the run's metric it is compared with",
    )
    figures: dict[Literal[EVAL_SETS], dict[str, dict[str, float]]] = Field(
        default_factory=dict, description="eval_set -> study column -> model (base or variant) -> value"
    )
    training_minutes: dict[str, float] = Field(default_factory=dict, description="variant -> minutes")
    hardware: str | None = None

    @model_validator(mode="after")
    def _figures_name_known_columns(self) -> ReferenceStudy:
        for eval_set, columns in self.figures.items():
            unknown = sorted(set(columns) - set(self.metrics))
            if unknown:
                raise ValueError(
                    f"figures.{eval_set} has columns {unknown} that `metrics` does not map to a "
                    f"run metric (mapped: {sorted(self.metrics)})"
                )
        return self


class ReferenceStudyBlock(RootModel[ReferenceStudy | None]):
    """``reference_study``: null (no study to compare with) or a :class:`ReferenceStudy`."""


def reference_study(raw: dict[str, Any] | None) -> ReferenceStudy:
    """Parse ``reference_study``; null gives the study columns with no figures."""
    return validated(ReferenceStudyBlock, raw, "`reference_study`").root or ReferenceStudy()


def reporting_params(raw: dict[str, Any] | ReportingParams) -> ReportingParams:
    """Parse the ``reporting`` block (nodes call this; errors name the key and the fix)."""
    if isinstance(raw, ReportingParams):
        return raw
    return validated(ReportingParams, raw, "`reporting`")

