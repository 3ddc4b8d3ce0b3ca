"""The parameter schemas of every pipeline, in one list, and their validation.

Each pipeline package owns its schema (``pipelines/<name>/params.py``); this module is the one
place that lists them, so the ``before_pipeline_run`` hook checks every block before the first
node runs, and a typo costs seconds. A schema added to a pipeline is added here too.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from mift_kedro.config import ParameterError, training_seeds, validated
from mift_kedro.pipelines.data_engineering.params import DataEngineeringParams
from mift_kedro.pipelines.reporting.params import (
    ReferenceStudyBlock,
    ReportingParams,
    check_curve_axis,
    check_eval_sets,
)
from mift_kedro.pipelines.training.params import BaseModelParams, TrainingParams

#: Top-level parameter blocks and the schema of each, by the pipeline that reads them. The
#: data_engineering keys (``seed``, ``sources``, ``variants``, ``eval_sets``) are validated
#: together by :class:`DataEngineeringParams`, and ``training_seeds`` by
#: :func:`mift_kedro.config.training_seeds`.
BLOCKS: dict[str, type[BaseModel]] = {
    # training
    "base_model": BaseModelParams,
    "training": TrainingParams,
    # reporting
    "reporting": ReportingParams,
    "reference_study": ReferenceStudyBlock,
}


def validate_parameters(params: dict[str, Any]) -> DataEngineeringParams:
    """Validate all parameter blocks; raise one :class:`ParameterError` naming every problem."""
    problems = []
    data_engineering = None
    try:
        data_engineering = validated(
            DataEngineeringParams, {k: params.get(k) for k in DataEngineeringParams.model_fields},
            "data engineering parameters",
        )
    except ParameterError as exc:
        problems.append(str(exc))
    try:
        training_seeds(params)
    except ParameterError as exc:
        problems.append(f"Invalid parameters: {exc}")
    if data_engineering is not None and "reporting" in params:
        try:
            check_eval_sets(params["reporting"], params["eval_sets"])
            check_curve_axis(params["reporting"], params.get("sources") or {})
        except ParameterError as exc:
            problems.append(f"Invalid parameters: {exc}")
    for block, model in BLOCKS.items():
        try:
            validated(model, params.get(block), f"`{block}`")
        except ParameterError as exc:
            problems.append(str(exc))
    if problems:
        raise ParameterError("\n".join(problems))
    from mift_kedro.datasets.raw import check_source_data

    check_source_data(params)  # the local data against the labels and budgets asked of it
    return data_engineering
