"""The data_engineering parameters (``seed``, ``sources``, ``variants``, ``eval_sets``),
validated before any node runs (:mod:`mift_kedro.parameters` lists this schema).

A source is data: its kind (classification, instruction, chat), where its splits come from
(local files, a Hub dataset) and how its fields map onto the kind's. docs/own_task.md lists
every key with its default and the error each mistake gives.
"""

from __future__ import annotations

import string
from typing import Any, Literal

from pydantic import Field, PositiveInt, ValidationError, field_validator, model_validator

from mift_kedro.config import StrictModel, VariantSpec

SOURCE_KINDS = ("classification", "instruction", "chat")
#: The split every source trains on.
TRAIN_SPLIT = "train"


class HubSpec(StrictModel):
    """A Hugging Face Hub dataset: ``datasets.load_dataset(id, config, revision=, data_files=)``."""

    id: str = Field(min_length=1)
    config: str | None = None
    revision: str | None = Field(default=None, description="a commit SHA pins the data")
    splits: dict[str, str] = Field(default_factory=lambda: {"train": "train"}, description="split -> Hub split")
    data_files: str | list[str] | dict[str, str | list[str]] | None = None


class HoldoutSpec(StrictModel):
    """A split carved, seeded, out of another one when the data has no such split (Alpaca's test)."""

    split: str = "test"
    from_split: str = Field(default="train", alias="from")
    size: PositiveInt
    seed: int = 0


class ClassificationFields(StrictModel):
    text: list[str] = Field(default_factory=lambda: ["text"], min_length=1)
    label: str = "label"

    @field_validator("text", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class InstructionFields(StrictModel):
    instruction: str = "instruction"
    input: str | None = "input"
    output: str = "output"
    id: str | None = Field(default=None, description="None: an id hashed from the record")
    group: str | None = Field(default=None, description="a field appended to the source name")


class ChatFields(StrictModel):
    messages: str = "messages"
    role: str = "role"
    content: str = "content"
    user: str = "user"
    assistant: str = "assistant"
    system: str = "system"


FIELDS = {"classification": ClassificationFields, "instruction": InstructionFields, "chat": ChatFields}


class SourceSpec(StrictModel):
    """One source of examples; ``fields`` and ``labels``/``template`` depend on ``kind``."""

    kind: Literal[SOURCE_KINDS]
    files: dict[str, str] = Field(default_factory=dict, description="split -> JSONL/CSV/Parquet file")
    hub: HubSpec | None = None
    holdout: HoldoutSpec | None = None
    fields: dict[str, Any] = Field(default_factory=dict)
    labels: dict[int | str, str | list[str]] | None = None
    template: str | None = None
    system: str | None = Field(default=None, description="a system prompt before each example's user turn")
    normalise_text: bool = True

    @model_validator(mode="after")
    def _check(self) -> SourceSpec:
        if not self.files and self.hub is None:
            raise ValueError("give `files` (split -> path) or `hub` (a Hub dataset id)")
        try:
            self.fields = FIELDS[self.kind].model_validate(self.fields).model_dump()
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"])
            raise ValueError(
                f"fields.{key}: {err['msg']}; the fields of a {self.kind} source are "
                f"{list(FIELDS[self.kind].model_fields)}"
            ) from None
        if self.kind == "classification":
            if not self.labels or len(self.labels) < 2:
                raise ValueError("`labels` must map at least two labels to answer words, e.g. {0: negative, 1: positive}")
            seen: dict[str, Any] = {}
            for label, words in self.answer_words().items():
                if not words or not all(isinstance(w, str) and w.strip() for w in words):
                    raise ValueError(f"labels.{label}: give one or more non-empty answer words")
                for word in words:
                    key = word.strip().lower()
                    if key in seen and seen[key] != label:
                        raise ValueError(f"labels: answer {word!r} is given for both {seen[key]!r} and {label!r}")
                    seen[key] = label
            placeholders = template_fields(self.prompt_template())
            unknown = sorted(placeholders - set(self.fields["text"]) - {"labels"})
            if unknown:
                raise ValueError(
                    f"template: placeholder(s) {unknown} name no text field; use {self.fields['text']} "
                    "or {labels}, or add the field to `fields.text`"
                )
        elif self.labels is not None or self.template is not None:
            raise ValueError(f"`labels` and `template` are for classification sources, not {self.kind}")
        if self.holdout is not None and self.holdout.split == self.holdout.from_split:
            raise ValueError("holdout: `split` and `from` must differ")
        return self

    def answer_words(self) -> dict[Any, list[str]]:
        """label -> answer words; the first is the training target, the others synonyms."""
        return {k: [v] if isinstance(v, str) else list(v) for k, v in (self.labels or {}).items()}

    def prompt_template(self) -> str:
        """The user turn's template; by default the label words and then each text field."""
        if self.template is not None:
            return self.template
        texts = "\n\n".join(f"{{{f}}}" for f in self.fields["text"])
        return f"Classify the following text. Answer with one of: {{labels}}.\n\n{texts}"


def template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


class EvalSetSpec(StrictModel):
    source: str | None = Field(default=None, description="None: the source named like the set")
    split: str = "test"
    size: PositiveInt | None = Field(default=None, description="None keeps the whole set")
    table: str | None = Field(default=None, description="the table's name; None: the set's name")
    max_new_tokens: PositiveInt | None = Field(
        default=None, description="generation budget; None: reporting.max_new_tokens.<name>"
    )


class DataEngineeringParams(StrictModel):
    """The blocks the data_engineering pipeline reads."""

    seed: int
    sources: dict[str, SourceSpec]
    variants: dict[str, VariantSpec]
    eval_sets: dict[str, EvalSetSpec]

    @field_validator("sources")
    @classmethod
    def _check_sources(cls, sources: dict[str, SourceSpec]) -> dict[str, SourceSpec]:
        if not sources:
            raise ValueError("no sources declared: add at least one under `sources`")
        for name in sources:
            if not name.isidentifier():
                raise ValueError(f"source name {name!r} must be a Python identifier (letters, digits, _)")
        return sources

    @field_validator("variants")
    @classmethod
    def _check_variants(cls, variants: dict[str, VariantSpec]) -> dict[str, VariantSpec]:
        if not variants:
            raise ValueError("no variants declared: add at least one under `variants`")
        for name in variants:
            if not name.isidentifier():
                raise ValueError(f"variant name {name!r} must be a Python identifier (a namespace)")
        return variants

    @model_validator(mode="after")
    def _check_references(self) -> DataEngineeringParams:
        for name, variant in self.variants.items():
            unknown = [s for s in variant.mix if s not in self.sources]
            if unknown:
                raise ValueError(
                    f"variants.{name}.mix: unknown source(s) {unknown}; declare them under `sources` "
                    f"or use {list(self.sources)}"
                )
            for source in variant.mix:
                if TRAIN_SPLIT not in source_splits(self.sources[source]):
                    raise ValueError(f"variants.{name}.mix: source {source!r} has no `train` split to train on")
        for name, spec in self.eval_sets.items():
            if not name.isidentifier():
                raise ValueError(f"eval_sets: name {name!r} must be a Python identifier")
            source = spec.source or name
            if source not in self.sources:
                raise ValueError(
                    f"eval_sets.{name}.source: unknown source {source!r}; use one of {list(self.sources)}"
                )
            splits = source_splits(self.sources[source])
            if spec.split not in splits:
                raise ValueError(
                    f"eval_sets.{name}.split: source {source!r} has no split {spec.split!r} (it has {splits}); "
                    "add it under `files`/`hub.splits` or carve it with `holdout`"
                )
        tables = [s.table or n for n, s in self.eval_sets.items()]
        if len(set(tables)) < len(tables):
            raise ValueError(f"eval_sets: two sets share a table name ({tables}); give each its own `table`")
        return self


def source_splits(spec: SourceSpec) -> list[str]:
    """Every split a source provides: its files' or Hub splits, and a declared holdout."""
    splits = list(dict.fromkeys([*spec.files, *(spec.hub.splits if spec.hub else {})]))
    if spec.holdout is not None and spec.holdout.split not in splits:
        splits.append(spec.holdout.split)
    return splits


def source_spec(spec: dict[str, Any] | SourceSpec) -> SourceSpec:
    return spec if isinstance(spec, SourceSpec) else SourceSpec.model_validate(spec)
