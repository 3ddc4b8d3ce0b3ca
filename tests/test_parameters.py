"""The schemas' defaults are conf/base's values.

Kedro replaces a whole top-level block when an environment sets it, so a `conf/local`
``training:`` block that sets one key gets the schema's defaults for the others: those
defaults must be the values conf/base documents, or the run silently changes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kedro.config import OmegaConfigLoader
from pydantic import BaseModel, TypeAdapter

from mift_kedro.parameters import BLOCKS
from mift_kedro.pipelines.data_engineering.params import DataEngineeringParams
from mift_kedro.pipelines.training.params import TrainingParams

CONF = Path(__file__).resolve().parents[1] / "conf"


def _base_parameters() -> dict:
    return OmegaConfigLoader(str(CONF), base_env="base", default_run_env="base")["parameters"]


def _submodel(field) -> type[BaseModel] | None:
    annotation = field.annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _differences(model: type[BaseModel], values: dict, path: str) -> list[str]:
    """Every key conf/base sets whose schema default (when it has one) differs from it."""
    found = []
    for name, field in model.model_fields.items():
        if name not in values:
            continue
        value, sub = values[name], _submodel(field)
        if sub is not None and isinstance(value, dict):
            found += _differences(sub, value, f"{path}{name}.")
            continue
        if field.is_required():
            continue
        default = field.get_default(call_default_factory=True)
        if isinstance(default, (BaseModel, dict)):
            # sub-models inside: compare what validation makes of conf/base's value
            adapter = TypeAdapter(field.annotation)
            default, value = adapter.dump_python(default), adapter.dump_python(adapter.validate_python(value))
        if default != value:
            found.append(f"{path}{name}: schema default {default!r}, conf/base {value!r}")
    return found


def test_schema_defaults_are_conf_base_values():
    params = _base_parameters()
    found = []
    for block, model in BLOCKS.items():
        if isinstance(params.get(block), dict):
            found += _differences(model, params[block], f"{block}.")
    found += _differences(DataEngineeringParams, params, "")
    assert not found, "schema defaults that differ from conf/base:\n" + "\n".join(found)


def test_the_check_sees_a_changed_default(monkeypatch):
    params = _base_parameters()
    field = TrainingParams.model_fields["learning_rate"]
    monkeypatch.setattr(field, "default", params["training"]["learning_rate"] * 2)
    found = _differences(TrainingParams, params["training"], "training.")
    assert found == [f"training.learning_rate: schema default {field.default!r}, conf/base "
                     f"{params['training']['learning_rate']!r}"]


@pytest.mark.parametrize("key", ["quantization", "learning_rate", "save_steps", "lora"])
def test_a_partial_training_block_keeps_conf_base_values(key):
    """What a conf/local `training: {max_steps: 4}` gets for the keys it leaves out."""
    base = _base_parameters()["training"]
    partial = TrainingParams.model_validate({"max_steps": 4})
    got = getattr(partial, key)
    assert (got.model_dump() if isinstance(got, BaseModel) else got) == base[key]
