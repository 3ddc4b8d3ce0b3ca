"""A Hub dataset repository that holds only a loading script loads through the Hub's parquet
conversion; the preflight says which revision a run will load, or stops naming the fix.

The Hub is replaced by a fake ``HfApi`` (no network): the files of each revision and the
repository's convert refs, as the Hub lists them for carblacac/twitter-sentiment-analysis.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pandas as pd
import pytest
from kedro.io import DatasetError

from mift_kedro import hub
from mift_kedro.datasets import HubOrLocalDataset, SourceDataset

TWEETS = "carblacac/twitter-sentiment-analysis"
CONVERSION_SHA = "0123456789abcdef0123456789abcdef01234567"
SCRIPT_ONLY = ["README.md", "dataset_infos.json", "dummy/default/0.0.0/dummy_data.zip", "twitter-sentiment-analysis.py"]
CONVERTED = ["default/train/0000.parquet", "default/test/0000.parquet", "default/validation/0000.parquet"]


def fake_hub(monkeypatch, files: dict[str | None, list[str]], conversion: bool) -> list[tuple]:
    """Replace huggingface_hub.HfApi by one serving ``files`` per revision; returns the calls."""
    import huggingface_hub

    calls: list[tuple] = []

    class FakeApi:
        def __init__(self, endpoint=None, **kwargs):
            pass

        def repo_info(self, repo_id, repo_type=None, revision=None, timeout=None):
            calls.append(("repo_info", repo_id, revision))
            return SimpleNamespace(sha="f" * 40)

        def list_repo_files(self, repo_id, repo_type=None, revision=None, **kwargs):
            calls.append(("list_repo_files", repo_id, revision))
            return files[revision]

        def list_repo_refs(self, repo_id, repo_type=None, **kwargs):
            calls.append(("list_repo_refs", repo_id))
            converts = [SimpleNamespace(name="parquet", ref=hub.PARQUET_CONVERSION, target_commit=CONVERSION_SHA)]
            return SimpleNamespace(branches=[], tags=[], converts=converts if conversion else [])

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return calls


@pytest.fixture
def empty_datasets_cache(tmp_path, monkeypatch):
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets")
    monkeypatch.delenv("MIFT_DATA_DIR", raising=False)


def test_script_only_repo_resolves_to_the_parquet_conversion_naming_its_sha(monkeypatch):
    fake_hub(monkeypatch, {None: SCRIPT_ONLY}, conversion=True)
    revision, reason = hub.resolve_dataset_source(TWEETS)
    assert revision == hub.PARQUET_CONVERSION
    assert "twitter-sentiment-analysis.py" in reason and CONVERSION_SHA in reason and "hub_revisions" in reason


def test_repo_with_data_files_keeps_its_revision(monkeypatch):
    calls = fake_hub(monkeypatch, {"abc": ["data/train-00000-of-00001.parquet", "README.md"]}, conversion=True)
    assert hub.resolve_dataset_source("tatsu-lab/alpaca", "abc").revision == "abc"
    assert ("list_repo_refs", "tatsu-lab/alpaca") not in calls  # no question more than needed


def test_pinned_conversion_sha_is_loaded_as_pinned(monkeypatch):
    fake_hub(monkeypatch, {CONVERSION_SHA: CONVERTED}, conversion=True)
    assert hub.resolve_dataset_source(TWEETS, CONVERSION_SHA).revision == CONVERSION_SHA


def test_script_without_conversion_is_an_error_naming_the_fix(monkeypatch):
    fake_hub(monkeypatch, {None: SCRIPT_ONLY}, conversion=False)
    with pytest.raises(hub.DatasetSourceError, match=r"loading script .*no parquet conversion.*: set MIFT_DATA_DIR"):
        hub.resolve_dataset_source(TWEETS, fix="set MIFT_DATA_DIR=<dir>")


def test_offline_keeps_the_revision_without_asking(monkeypatch):
    calls = fake_hub(monkeypatch, {}, conversion=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.resolve_dataset_source(TWEETS, "abc").revision == "abc"
    assert calls == []


def test_raw_dataset_loads_the_conversion_of_a_script_only_repo(monkeypatch, empty_datasets_cache, caplog):
    """``datasets`` refuses the script; the raw dataset must ask it for the conversion."""
    import datasets

    fake_hub(monkeypatch, {None: SCRIPT_ONLY}, conversion=True)
    asked: list[str | None] = []

    def load_dataset(path, split=None, revision=None):  # datasets >= 4 on this repository
        asked.append(revision)
        if revision != hub.PARQUET_CONVERSION:
            raise RuntimeError("Dataset scripts are no longer supported, but found twitter-sentiment-analysis.py")
        return datasets.Dataset.from_pandas(pd.DataFrame({"text": ["good day"], "feeling": [1], "id": [7]}))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    tweets = HubOrLocalDataset(hub_id=TWEETS, hub_split="test", local_path="t.jsonl", columns=["text", "feeling"])
    with caplog.at_level(logging.INFO, logger="mift_kedro.datasets.raw"):
        frame = tweets.load()
    assert asked == [hub.PARQUET_CONVERSION]
    assert frame.to_dict("records") == [{"text": "good day", "feeling": 1}]
    assert CONVERSION_SHA in caplog.text


def test_raw_dataset_without_conversion_names_mift_data_dir(monkeypatch, empty_datasets_cache):
    fake_hub(monkeypatch, {None: SCRIPT_ONLY}, conversion=False)
    tweets = HubOrLocalDataset(hub_id=TWEETS, hub_split="test", local_path="t.jsonl", columns=["text", "feeling"])
    with pytest.raises(DatasetError, match="no parquet conversion.*MIFT_DATA_DIR"):
        tweets.load()


TWEETS_SOURCE = {
    "kind": "classification",
    "hub": {"id": TWEETS, "splits": {"train": "train", "test": "test"}},
    "fields": {"text": "text", "label": "feeling"},
    "labels": {0: "negative", 1: "positive"},
}


def test_source_dataset_loads_the_conversion_of_a_script_only_repo(monkeypatch, empty_datasets_cache, caplog):
    """A configured source asks hub.resolve_dataset_source first and loads only the conversion."""
    import datasets

    fake_hub(monkeypatch, {None: SCRIPT_ONLY}, conversion=True)
    asked: list[tuple] = []

    def load_dataset(path, name=None, split=None, revision=None, data_files=None):  # datasets >= 4
        asked.append((split, revision))
        if revision != hub.PARQUET_CONVERSION:
            raise RuntimeError("Dataset scripts are no longer supported, but found twitter-sentiment-analysis.py")
        return datasets.Dataset.from_pandas(pd.DataFrame({"text": [f"{split} day"], "feeling": [1]}))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with caplog.at_level(logging.INFO, logger="mift_kedro.datasets.raw"):
        splits = SourceDataset(source="sentiment", spec=TWEETS_SOURCE).load()
    assert asked == [("train", hub.PARQUET_CONVERSION), ("test", hub.PARQUET_CONVERSION)]
    assert {name: frame.to_dict("records") for name, frame in splits.items()} == {
        "train": [{"text": "train day", "feeling": 1}],
        "test": [{"text": "test day", "feeling": 1}],
    }
    assert CONVERSION_SHA in caplog.text


def test_source_dataset_without_conversion_names_its_files_key(monkeypatch, empty_datasets_cache):
    import datasets

    fake_hub(monkeypatch, {None: SCRIPT_ONLY}, conversion=False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("nothing loadable to load"))
    with pytest.raises(DatasetError, match=r"no parquet conversion.*sources\.sentiment\.files"):
        SourceDataset(source="sentiment", spec=TWEETS_SOURCE).load()


def test_preflight_reports_a_script_only_repo_without_conversion(monkeypatch, empty_datasets_cache):
    """repo_info answers for a script-only repository: the preflight must look further."""
    fake_hub(monkeypatch, {None: SCRIPT_ONLY}, conversion=False)
    req = hub.Requirement(hub.HubRepo(TWEETS, "dataset"), "raw dataset", "set MIFT_DATA_DIR=<dir>")
    problems = hub.missing([req])
    assert [r for r, _ in problems] == [req]
    assert "no parquet conversion" in problems[0][1]


def test_preflight_logs_the_conversion_it_will_load(monkeypatch, empty_datasets_cache, caplog):
    fake_hub(monkeypatch, {None: SCRIPT_ONLY}, conversion=True)
    req = hub.Requirement(hub.HubRepo(TWEETS, "dataset"), "raw dataset", "set MIFT_DATA_DIR=<dir>")
    with caplog.at_level(logging.INFO, logger="mift_kedro.hub"):
        assert hub.missing([req]) == []
    assert hub.PARQUET_CONVERSION in caplog.text and CONVERSION_SHA in caplog.text
