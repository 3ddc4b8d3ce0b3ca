"""What the pipelines share: variants, training seeds and the active configuration environment.

Variants are data: ``parameters.yml`` declares them under ``variants`` and the pipeline
registry instantiates one namespaced modular pipeline per entry. Each pipeline package owns
the schema of its own parameters (``pipelines/<name>/params.py``);
:mod:`mift_kedro.parameters` lists them for validation. Here live the pieces they share: the
strict base model, the error that names a key and its fix, and the variant schema.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator

M = TypeVar("M", bound=BaseModel)

#: The sources and evaluation sets of the default configuration (``sources`` and ``eval_sets``
#: in parameters_data_engineering.yml declare the ones a run uses): (A) sentiment, (B)
#: out-of-sample instructions, (C) Alpaca.
SOURCES = ("sentiment", "alpaca")
EVAL_SETS = ("sentiment", "out_of_sample", "alpaca")

_active_loader: Any = None
_active_env: Any = None


class StrictModel(BaseModel):
    """A parameter block: unknown keys are errors (a typo must not be ignored)."""

    model_config = ConfigDict(extra="forbid")


class VariantSpec(StrictModel):
    """One training variant: what it mixes and how many examples it trains on."""

    display_name: str
    budget: PositiveInt = Field(description="total number of training examples")
    mix: dict[str, float] = Field(description="source -> fraction of the budget; sums to 1")
    training: dict[str, Any] = Field(default_factory=dict, description="overrides of `training`")

    @field_validator("mix")
    @classmethod
    def _check_mix(cls, mix: dict[str, float]) -> dict[str, float]:
        if not mix:
            raise ValueError("mix is empty: give a fraction of the budget for one or more of `sources`")
        for source, fraction in mix.items():
            if not 0.0 <= fraction <= 1.0:
                raise ValueError(
                    f"mix fraction for {source!r} is {fraction}: it must lie in [0, 1]"
                )
        if abs(sum(mix.values()) - 1.0) > 1e-6:
            raise ValueError(f"mix fractions sum to {sum(mix.values()):g}: they must sum to 1")
        return mix


class TrainedModel(NamedTuple):
    """One fine-tuned model: a variant trained with one training seed.

    ``name`` is its namespace in training and reporting (``<name>.adapter``,
    ``<name>.predictions``, the ``model`` column of ``metrics``): the variant's own name when
    ``training_seeds`` has one seed, so a default run keeps its names; ``<variant>_s<seed>``
    with several. ``display_name`` likewise gains `` (seed <seed>)`` with several seeds.
    """

    name: str
    variant: str
    seed: int | None
    display_name: str


def trained_models(variants: dict[str, Any], seeds: list[int] | None = None) -> list[TrainedModel]:
    """Every (variant, training seed) pair, variant by variant, seeds in the order given.

    ``seeds`` None counts as one seed (names as with one seed; the seed is then not known).
    """
    seeds = list(seeds) if seeds is not None else [None]
    several = len(seeds) > 1
    return [
        TrainedModel(
            f"{variant}_s{seed}" if several else variant, variant, seed,
            seed_display_name((spec or {}).get("display_name", variant), seed if several else None),
        )
        for variant, spec in variants.items()
        for seed in seeds
    ]


class EvalSetOutputs(NamedTuple):
    """The reporting outputs one evaluation set names: its table (``table_<table>``), its plot
    and, for a classification set, its confusion matrix."""

    eval_set: str
    table: str
    classification: bool


def eval_set_outputs(eval_sets: dict[str, Any], sources: dict[str, Any] | None) -> list[EvalSetOutputs]:
    """Per configured evaluation set, in order (read, not validated: the hook validates)."""
    return [
        EvalSetOutputs(
            name,
            (spec or {}).get("table") or name,
            ((sources or {}).get((spec or {}).get("source") or name) or {}).get("kind") == "classification",
        )
        for name, spec in eval_sets.items()
    ]


def seed_display_name(display_name: str, seed: int | None) -> str:
    """A model's display name: the variant's, with `` (seed <seed>)`` when it is one of several."""
    return display_name if seed is None else f"{display_name} (seed {seed})"


def training_seeds(params: dict[str, Any]) -> list[int]:
    """The validated ``training_seeds`` (absent: ``[seed]``, one training at the data seed).

    Each variant is trained once per seed, on the same training set: ``seed`` fixes the splits
    and the mix, a training seed only the LoRA initialisation, data order and dropout.
    """
    seeds = params.get("training_seeds")
    if seeds is None:
        seeds = [params.get("seed")]
    where = "training_seeds (conf/<env>/parameters.yml)"
    if not isinstance(seeds, list | tuple) or not seeds:
        raise ParameterError(f"{where} must be a non-empty list of integers, e.g. [42] or [42, 43, 44]; got {seeds!r}")
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int)]
    if bad:
        raise ParameterError(f"{where}: {bad} are not integers; give whole numbers, e.g. [42, 43, 44]")
    if len(set(seeds)) < len(seeds):
        raise ParameterError(f"{where} lists a seed twice ({list(seeds)}): each seed trains one model per variant")
    models = trained_models(params.get("variants") or {}, list(seeds))
    names = [m.name for m in models]
    clash = sorted({n for n in names if names.count(n) > 1} | ({"base"} & set(names)))
    if len(seeds) > 1:
        clash += sorted(set(names) & set(params.get("variants") or {}))
    if clash:
        raise ParameterError(
            f"{where}: the model namespaces {clash} clash with another model or variant "
            "(with several seeds a model is named <variant>_s<seed>): rename the variant"
        )
    return list(seeds)


class ProjectError(Exception):
    """An error the user can fix, whose message says how: ``kedro run`` prints the message
    alone, without a traceback (:mod:`mift_kedro.cli`)."""


class ParameterError(ProjectError, ValueError):
    """A parameter is missing or wrong; the message names the key and the fix."""


class DataError(ProjectError, ValueError):
    """Input data that cannot be read as it is; the message names the file, the line and the fix."""


def format_validation_error(error: ValidationError, where: str) -> str:
    """One line per invalid key, naming where the parameters live."""
    lines = [f"Invalid parameters in {where} (conf/<env>/parameters*.yml):"]
    for err in error.errors():
        key = ".".join(str(part) for part in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"  - {key}: {message}" if key else f"  - {message}")
    return "\n".join(lines)


def validated(model: type[M], raw: Any, where: str) -> M:
    """``raw`` parsed by the pydantic ``model``, or a :class:`ParameterError` with one line per
    invalid key (``where`` names the block): the one wrapper every parameter block goes through."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ParameterError(format_validation_error(exc, where)) from None


def variant_spec(spec: dict[str, Any]) -> VariantSpec:
    """Parse one variant's parameters (nodes call this; errors name the problem)."""
    return validated(VariantSpec, spec, "a variant")


# --- the active configuration environment -------------------------------------------------


def set_active_config_loader(loader: Any) -> None:
    """Called by a hook when a Kedro context is created; re-registers pipelines on env change."""
    global _active_loader, _active_env
    # the env and the `--params` of the run: both may change the variants and seeds
    env = (getattr(loader, "env", None), repr(getattr(loader, "runtime_params", None)))
    changed = _active_loader is not None and env != _active_env
    _active_loader, _active_env = loader, env
    if changed:
        rebuild_pipelines()


def rebuild_pipelines() -> None:
    """Make Kedro build the pipelines again, from the registry, on their next use.

    Kedro builds the registry once per process and keeps it; a second session in the same
    process with another ``--env`` or ``--params`` (a notebook's ``%reload_kedro --env sweep``,
    a test) must get that environment's variants. ``pipelines.configure(module)`` is Kedro's
    public way (``configure_project`` calls it) to point the registry at a module; it drops
    the pipelines built so far.
    """
    from kedro.framework.project import pipelines

    pipelines.configure(f"{__package__}.pipeline_registry")


def _fallback_loader() -> Any:
    """The config loader Kedro would build, for commands that build no context."""
    from kedro.config import OmegaConfigLoader
    from kedro.framework.project import settings

    root = Path.cwd()  # Kedro commands run from the project root
    if not (root / settings.CONF_SOURCE).is_dir():
        root = Path(__file__).resolve().parents[2]
    return OmegaConfigLoader(
        conf_source=str(root / settings.CONF_SOURCE),
        env=os.getenv("KEDRO_ENV"),
        **settings.CONFIG_LOADER_ARGS,
    )


def _active_parameters() -> dict[str, Any]:
    loader = _active_loader if _active_loader is not None else _fallback_loader()
    return loader["parameters"]


def variant_names() -> list[str]:
    """Names of the variants declared in the active environment's parameters."""
    variants = _active_parameters().get("variants") or {}
    for name in variants:
        if not str(name).isidentifier():
            raise ParameterError(f"variant name {name!r} must be a Python identifier")
    return list(variants)


def active_training_seeds() -> list[int]:
    """The ``training_seeds`` of the active environment's parameters (validated)."""
    return training_seeds(_active_parameters())
