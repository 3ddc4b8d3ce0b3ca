"""Custom Kedro datasets of mift-kedro."""

from mift_kedro.datasets.adapter import AdapterDataset, BaseModelDataset
from mift_kedro.datasets.jsonl import read_jsonl
from mift_kedro.datasets.raw import HubOrLocalDataset, SourceDataset

__all__ = ["AdapterDataset", "BaseModelDataset", "HubOrLocalDataset", "SourceDataset", "read_jsonl"]
