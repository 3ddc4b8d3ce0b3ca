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
