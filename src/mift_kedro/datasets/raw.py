"""A raw dataset split from the Hugging Face Hub, or from local JSONL when offline."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from mift_kedro import hub
from mift_kedro.datasets.jsonl import read_jsonl

logger = logging.getLogger(__name__)

#: Environment variable that switches every raw dataset to local JSONL files.
DATA_DIR_ENV = "MIFT_DATA_DIR"
OFFLINE_FIX = (
    f"set {DATA_DIR_ENV}=<dir> to a local copy laid out like shared/data/ "
    f"(e.g. {DATA_DIR_ENV}=../shared/data), or load it once where the Hub is reachable "
    "(`kedro run --pipelines data_engineering`: datasets keeps it in HF_DATASETS_CACHE)"
)


class HubOrLocalDataset(AbstractDataset[None, pd.DataFrame]):
    """One split of a Hub dataset as a DataFrame, read from local JSONL when ``MIFT_DATA_DIR`` is set.

    Online it calls ``datasets.load_dataset(hub_id, split=hub_split, revision=revision)``
    (``revision``: a commit SHA pins the data; None takes the default branch). With
    ``MIFT_DATA_DIR=<dir>`` (or ``local_dir``) it reads ``<dir>/<local_path>`` instead, a
    file in the Hub dataset's schema. A Hub dataset with a single split (Alpaca) gets a
    deterministic held-out slice through ``holdout``: the same seed always holds out the
    same rows, ``part: test`` returns them and ``part: train`` the rest.

    Before touching the Hub it checks, within ``timeout`` seconds, that ``datasets`` has the
    dataset cached or the Hub answers (:mod:`mift_kedro.hub`), so an offline machine fails at
    once with an error that names ``MIFT_DATA_DIR``.

    Example:
    ::

        >>> from mift_kedro.datasets import HubOrLocalDataset
        >>> tweets = HubOrLocalDataset(
        ...     hub_id="carblacac/twitter-sentiment-analysis", hub_split="test",
        ...     local_path="twitter_sentiment/test.jsonl", columns=["text", "feeling"],
        ...     local_dir="../shared/data")
        >>> tweets.load().columns.tolist()
        ['text', 'feeling']
    """

    def __init__(  # noqa: PLR0913
        self,
        *,
        hub_id: str,
        hub_split: str,
        local_path: str,
        columns: list[str],
        holdout: dict[str, Any] | None = None,
        revision: str | None = None,
        local_dir: str | None = None,
        timeout: float = 5.0,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._hub_id = hub_id
        self._hub_split = hub_split
        self._local_path = local_path
        self._columns = list(columns)
        self._holdout = holdout
        self._revision = revision
        self._local_dir = local_dir
        self._timeout = timeout
        self.metadata = metadata
        if holdout is not None and holdout.get("part") not in ("train", "test"):
            raise DatasetError(f"holdout.part must be 'train' or 'test', got {holdout.get('part')!r}")

    def _data_dir(self) -> str | None:
        return self._local_dir or os.environ.get(DATA_DIR_ENV) or None

    def _describe(self) -> dict[str, Any]:
        return {
            "hub_id": self._hub_id,
            "hub_split": self._hub_split,
            "revision": self._revision,
            "local_path": self._local_path,
            "data_dir": self._data_dir(),
            "holdout": self._holdout,
        }

    def hub_repo(self) -> hub.HubRepo | None:
        """The Hub repository a load would read; None when local files are used."""
        return None if self._data_dir() else hub.HubRepo(self._hub_id, "dataset", self._revision)

    def _exists(self) -> bool:
        data_dir = self._data_dir()
        return data_dir is not None and (Path(data_dir) / self._local_path).is_file()

    def load(self) -> pd.DataFrame:
        data_dir = self._data_dir()
        if data_dir:
            path = Path(data_dir) / self._local_path
            if not path.is_file():
                raise DatasetError(
                    f"{DATA_DIR_ENV}={data_dir} has no {self._local_path}: lay the directory "
                    f"out like shared/data/ (twitter_sentiment/{{train,validation,test}}.jsonl, "
                    f"alpaca/{{train,test}}.jsonl), or unset {DATA_DIR_ENV} to use the Hub"
                )
            frame = read_jsonl(path, self._columns)
            logger.info("Loaded %d rows from %s", len(frame), path)
            return frame[self._columns]
        return self._load_from_hub()

    def _load_from_hub(self) -> pd.DataFrame:
        self._check_hub_reachable()
        import datasets

        try:
            revision, reason = hub.resolve_dataset_source(self._hub_id, self._revision, self._timeout, fix=OFFLINE_FIX)
        except hub.DatasetSourceError as exc:
            raise DatasetError(str(exc)) from None
        logger.info("Loading %s", reason)
        try:
            split = datasets.load_dataset(self._hub_id, split=self._hub_split, revision=revision).to_pandas()
        except Exception as exc:  # the Hub's errors vary; name the offline way out
            raise DatasetError(
                f"Could not load {self._hub_id} (split {self._hub_split}) from the Hub: {exc}. "
                f"To work offline set {DATA_DIR_ENV}=<dir> (e.g. ../shared/data)."
            ) from exc
        missing = [c for c in self._columns if c not in split.columns]
        if missing:
            raise DatasetError(f"{self._hub_id} has no column(s) {missing}; found {list(split.columns)}")
        split = split[self._columns]
        if self._holdout is not None:
            split = self._holdout_part(split)
        logger.info(
            "Loaded %d rows from the Hub: %s[%s] at revision %s", len(split), self._hub_id,
            self._hub_split, revision or "main (not pinned)",
        )
        return split.reset_index(drop=True)

    def _holdout_part(self, frame: pd.DataFrame) -> pd.DataFrame:
        size = int(self._holdout["size"])
        order = np.random.default_rng(int(self._holdout.get("seed", 0))).permutation(len(frame))
        test_rows = np.sort(order[:size])
        if self._holdout["part"] == "test":
            return frame.iloc[test_rows]
        return frame.drop(index=frame.index[test_rows])

    def _check_hub_reachable(self) -> None:
        try:
            hub.require(self.hub_repo(), "The raw dataset", OFFLINE_FIX, self._timeout)
        except hub.HubUnreachableError as exc:
            raise DatasetError(str(exc)) from None

    def save(self, data: None) -> None:
        raise DatasetError(f"{type(self).__name__} is read-only")


#: Readers of local source files, by suffix.
READERS = {
    ".jsonl": read_jsonl,
    ".json": read_jsonl,
    ".csv": lambda path: pd.read_csv(path, keep_default_na=False),
    ".tsv": lambda path: pd.read_csv(path, sep="\t", keep_default_na=False),
    ".parquet": pd.read_parquet,
}


def _source_spec(name: str) -> dict[str, Any]:
    from mift_kedro import config

    sources = config._active_parameters().get("sources") or {}
    if name not in sources:
        raise DatasetError(f"no source {name!r} under `sources` in parameters: declare it there")
    return sources[name]


class SourceDataset(HubOrLocalDataset):
    """Every split of one configured source (``sources.<source>`` in parameters) as a dict
    ``{split: DataFrame}`` of its rows as stored.

    A source with ``hub`` loads the Hub dataset (``id``, ``config``, ``revision``, ``data_files``,
    ``splits``: split -> Hub split) unless ``MIFT_DATA_DIR`` is set; otherwise it reads its
    ``files`` (split -> JSONL, CSV, TSV or Parquet file). A relative file path is looked up in
    ``MIFT_DATA_DIR`` first, then in the project directory. A declared ``holdout`` split missing
    from the data is carved, seeded, out of another split. The Hub revision to load comes from
    :func:`mift_kedro.hub.resolve_dataset_source`: a repository that only has a loading script
    is read from the Hub's Parquet conversion (``refs/convert/parquet``).
    """

    def __init__(  # noqa: PLR0913
        self,
        *,
        source: str,
        spec: dict[str, Any] | None = None,
        local_dir: str | None = None,
        project_dir: str | None = None,
        timeout: float = 5.0,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._name = source
        self._spec_dict = spec
        self._parsed = None
        super().__init__(
            hub_id="", hub_split="", local_path="", columns=[], local_dir=local_dir, timeout=timeout,
            metadata=metadata,
        )
        self._project_dir = Path(project_dir) if project_dir else Path.cwd()

    @property
    def _spec(self):
        """The source's parameters, read when first needed (the catalog is built before them)."""
        from mift_kedro.pipelines.data_engineering.params import source_spec

        if self._parsed is None:
            self._parsed = source_spec(self._spec_dict if self._spec_dict is not None else _source_spec(self._name))
        return self._parsed

    def _uses_hub(self) -> bool:
        return self._spec.hub is not None and not (self._data_dir() and self._spec.files)

    def _describe(self) -> dict[str, Any]:
        return {"source": self._name, "data_dir": self._data_dir()}

    def hub_repo(self) -> hub.HubRepo | None:
        return hub.HubRepo(self._spec.hub.id, "dataset", self._spec.hub.revision) if self._uses_hub() else None

    def _exists(self) -> bool:
        return not self._uses_hub() and all(self._path(s, p).is_file() for s, p in self._spec.files.items())

    def _path(self, split: str, path: str) -> Path:
        candidate = Path(path).expanduser()
        if candidate.is_absolute():
            return candidate
        data_dir = self._data_dir()
        if data_dir and (Path(data_dir) / candidate).is_file():
            return Path(data_dir) / candidate
        return self._project_dir / candidate

    def load(self) -> dict[str, pd.DataFrame]:
        splits = self._load_hub() if self._uses_hub() else self._load_files()
        holdout = self._spec.holdout
        if holdout is not None and holdout.split not in splits:
            if holdout.from_split not in splits:
                raise DatasetError(
                    f"sources.{self._name}.holdout.from: no split {holdout.from_split!r} to carve "
                    f"{holdout.split!r} from (splits: {list(splits)})"
                )
            whole = splits[holdout.from_split]
            if holdout.size >= len(whole):
                raise DatasetError(
                    f"sources.{self._name}.holdout.size: {holdout.size} rows to hold out of the "
                    f"{len(whole)} of split {holdout.from_split!r}; lower it"
                )
            self._holdout = {"size": holdout.size, "seed": holdout.seed, "part": "test"}
            splits[holdout.split] = self._holdout_part(whole).reset_index(drop=True)
            self._holdout["part"] = "train"
            splits[holdout.from_split] = self._holdout_part(whole).reset_index(drop=True)
        return splits

    def _check_file(self, split: str) -> Path:
        """The file of ``split``, after checking it exists and has a readable format."""
        name = self._spec.files[split]
        path = self._path(split, name)
        if path.suffix.lower() not in READERS:
            raise DatasetError(
                f"sources.{self._name}.files.{split}: {path.name} is not one of "
                f"{sorted(READERS)}; convert it or rename it with its format's suffix"
            )
        if not path.is_file():
            where = f"{DATA_DIR_ENV}={self._data_dir()} or " if self._data_dir() else ""
            raise DatasetError(
                f"sources.{self._name}.files.{split}: {name} not found (looked in {where}"
                f"{self._project_dir}); give an absolute path or a path relative to the project"
            )
        return path

    def _load_files_only(self, split: str) -> pd.DataFrame:
        return self._load_files([split])[split]

    def _load_files(self, only: list[str] | None = None) -> dict[str, pd.DataFrame]:
        splits = {}
        for split, name in self._spec.files.items():
            if only is not None and split not in only:
                continue
            path = self._check_file(split)
            splits[split] = READERS[path.suffix.lower()](path)
            logger.info("Loaded %d rows from %s", len(splits[split]), path)
        return splits

    def _load_hub(self) -> dict[str, pd.DataFrame]:
        self._check_hub_reachable()
        import datasets

        spec = self._spec.hub
        fix = (
            f"download its data files and give them as `sources.{self._name}.files` "
            f"(with {DATA_DIR_ENV}=<dir> set, they are used instead of the Hub)"
        )
        try:
            revision, reason = hub.resolve_dataset_source(spec.id, spec.revision, self._timeout, fix=fix)
        except hub.DatasetSourceError as exc:
            raise DatasetError(str(exc)) from None
        logger.info("Loading %s", reason)
        try:
            loaded = {
                split: datasets.load_dataset(
                    spec.id, spec.config, split=hub_split, revision=revision, data_files=spec.data_files
                ).to_pandas()
                for split, hub_split in spec.splits.items()
            }
        except Exception as exc:  # the Hub's errors vary; name the offline way out
            raise DatasetError(
                f"Could not load {spec.id} from the Hub: {exc}. To work offline give "
                f"`sources.{self._name}.files` and set {DATA_DIR_ENV}=<dir>."
            ) from exc
        logger.info("Loaded %s from the Hub: %s at revision %s",
                    {s: len(f) for s, f in loaded.items()}, spec.id, revision or "main (not pinned)")
        return loaded


def check_source_data(params: dict[str, Any]) -> None:
    """Before the first node: every local source file exists in a readable format, and every
    local classification source has its label column, only labels of its label map, and enough
    rows of each label for the stratified budgets and evaluation sets asked of it.

    A source read from the Hub is checked by the nodes; the nodes check the counts again after
    cleaning, deduplication and the evaluation-overlap removal.
    """
    from mift_kedro.config import ParameterError
    from mift_kedro.pipelines.data_engineering.nodes import _label_key, _source_counts
    from mift_kedro.pipelines.data_engineering.params import TRAIN_SPLIT, source_spec

    sources = params.get("sources") or {}
    needs: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for name, variant in (params.get("variants") or {}).items():
        for source, count in _source_counts(variant).items():
            needs.setdefault((source, TRAIN_SPLIT), []).append((count, f"variants.{name}.budget"))
    for name, spec in (params.get("eval_sets") or {}).items():
        spec = spec or {}
        if spec.get("size"):
            key = (spec.get("source") or name, spec.get("split") or "test")
            needs.setdefault(key, []).append((spec["size"], f"eval_sets.{name}.size"))
    for name, raw_spec in sources.items():
        spec = source_spec(raw_spec)
        dataset = SourceDataset(source=name, spec=raw_spec)
        if dataset._uses_hub():
            continue
        try:
            for split in spec.files:
                dataset._check_file(split)
        except DatasetError as exc:
            raise ParameterError(str(exc)) from None
        if spec.kind != "classification":
            continue
        label_field, keys = spec.fields["label"], [str(k) for k in spec.labels]
        for split in spec.files:
            path = dataset._path(split, spec.files[split])
            frame = dataset._load_files_only(split)
            if label_field not in frame.columns:
                raise ParameterError(
                    f"sources.{name}.fields.label: no column {label_field!r} in {path.name} "
                    f"(columns {list(frame.columns)}); name the label column"
                )
            counts = frame[label_field].map(_label_key).dropna().value_counts()
            unknown = sorted(set(counts.index) - set(keys))
            if unknown:
                raise ParameterError(
                    f"sources.{name}.labels: {path.name} has label(s) {unknown[:10]} that the map lacks "
                    f"(it has {keys}); add them to `sources.{name}.labels`"
                )
            for count, key in needs.get((name, split), []):
                per_label = -(-count // len(keys))
                short = {k: int(counts.get(k, 0)) for k in keys if counts.get(k, 0) < per_label}
                if short:
                    raise ParameterError(
                        f"{key}: {count} examples of source {name!r} need up to {per_label} of each label "
                        f"(stratified), but split {split!r} has only {short}; lower `{key}` or add data"
                    )
