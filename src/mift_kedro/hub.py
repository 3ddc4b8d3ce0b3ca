"""What a run needs from the Hugging Face Hub: is it cached, or downloadable now?

Everything goes through ``huggingface_hub`` itself, so ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``,
``HF_HUB_CACHE`` and ``HTTPS_PROXY`` mean here what they mean to ``from_pretrained`` and
``load_dataset``: the cache is read with ``try_to_load_from_cache`` (models) or the way
``datasets`` finds a cached dataset offline, and the Hub is asked once, with a short timeout,
through ``HfApi.repo_info``. Offline or unreachable, a check costs well under a second
instead of the tens of seconds the libraries spend retrying.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

from mift_kedro.config import ProjectError

logger = logging.getLogger(__name__)

#: Seconds to wait for the Hub's answer before calling it unreachable.
TIMEOUT = 5.0
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


class HubUnreachableError(ProjectError, ConnectionError):
    """Something must come from the Hub and cannot; the message says what to do instead."""


@dataclass(frozen=True)
class HubRepo:
    """A model or dataset repository at a revision (None: the default branch)."""

    repo_id: str
    repo_type: Literal["model", "dataset"] = "model"
    revision: str | None = None

    def __str__(self) -> str:
        return self.repo_id + (f" (revision {self.revision})" if self.revision else "")

    def download_command(self) -> str:
        """The ``hf`` CLI call that puts this repository into the cache, on a machine online."""
        parts = ["hf download", self.repo_id]
        if self.repo_type == "dataset":
            parts.append("--repo-type dataset")
        if self.revision:
            parts.append(f"--revision {self.revision}")
        return " ".join(parts)


@dataclass
class Requirement:
    """One thing a run needs from the Hub, why (``what``), how to do without the Hub
    (``fix``) and which setting pins its revision (``pin``; None when none can)."""

    repo: HubRepo
    what: str
    fix: str
    pin: str | None = None
    users: list[str] = field(default_factory=list)


def offline_mode() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub reads it, or as set after it was imported."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.is_offline_mode() or env.strip().upper() in constants.ENV_VARS_TRUE_VALUES


def _cached_file(repo: HubRepo, filename: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo.repo_id, filename, revision=repo.revision, repo_type=repo.repo_type)
    return path if isinstance(path, str) else None


def model_is_cached(repo: HubRepo) -> bool:
    """Config, a tokenizer file and complete weights (every shard of a sharded checkpoint)
    are in the Hub cache, so ``from_pretrained`` needs no network."""

    def complete(index_name: str) -> bool:
        index = _cached_file(repo, index_name)
        shards = set(json.loads(Path(index).read_text())["weight_map"].values()) if index else ()
        return bool(index) and all(_cached_file(repo, shard) for shard in shards)

    return (
        _cached_file(repo, "config.json") is not None
        and any(_cached_file(repo, name) for name in _TOKENIZER_FILES)
        and (
            any(_cached_file(repo, name) for name in _WEIGHTS)
            or any(complete(f"{name}.index.json") for name in _WEIGHTS)
        )
    )


def dataset_is_cached(repo: HubRepo) -> bool:
    """``datasets.load_dataset`` can run offline: it has prepared this dataset before (the
    cache ``datasets`` falls back to when the Hub cannot be reached)."""
    import datasets.config
    from datasets.load import CachedDatasetModuleFactory

    quiet = logging.getLogger("datasets.load")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its "using the latest cached version" is for a real load
    try:
        CachedDatasetModuleFactory(repo.repo_id, cache_dir=datasets.config.HF_DATASETS_CACHE).get_module()
        return True
    except FileNotFoundError:
        return False
    finally:
        quiet.setLevel(level)


def is_cached(repo: HubRepo) -> bool:
    return dataset_is_cached(repo) if repo.repo_type == "dataset" else model_is_cached(repo)


def hub_problem(repo: HubRepo, timeout: float = TIMEOUT) -> str | None:
    """None when the Hub serves ``repo`` now; else why not, in a few words.

    One ``HfApi.repo_info`` call: huggingface_hub's own HTTP client, so it honours
    ``HF_ENDPOINT``, ``HTTPS_PROXY`` and the token, and raises at once when offline.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if offline_mode():
        return "HF_HUB_OFFLINE is set"
    try:
        HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None).repo_info(
            repo.repo_id, repo_type=repo.repo_type, revision=repo.revision, timeout=timeout
        )
    except RevisionNotFoundError:
        return f"the Hub has no revision {repo.revision!r} of it"
    except GatedRepoError:
        return "it is gated: accept its licence on the Hub and log in (`hf auth login`)"
    except RepositoryNotFoundError:
        return "the Hub has no such repository (or it is private: log in with `hf auth login`)"
    except HfHubHTTPError as exc:
        return f"the Hub answered {exc}"
    except Exception as exc:  # connection refused, DNS, proxy, timeout: the Hub is out of reach
        return f"the Hugging Face Hub is unreachable ({type(exc).__name__}: {exc})"
    return None


def require(repo: HubRepo, what: str, fix: str, timeout: float = TIMEOUT) -> None:
    """Return if ``repo`` is cached or downloadable now; else raise naming ``fix``."""
    if is_cached(repo):
        return
    problem = hub_problem(repo, timeout)
    if problem:
        raise HubUnreachableError(f"{what} {repo} is not in the Hugging Face cache and {problem}: {fix}")


def missing(requirements: Iterable[Requirement], timeout: float = TIMEOUT) -> list[tuple[Requirement, str]]:
    """The requirements neither cached nor downloadable, each with the reason.

    After the first answer that says the Hub is out of reach, the remaining items are not
    asked again, so a whole preflight costs at most one ``timeout``.
    """
    out: list[tuple[Requirement, str]] = []
    unreachable: str | None = None
    for req in requirements:
        if is_cached(req.repo):
            continue
        problem = unreachable or hub_problem(req.repo, timeout)
        if problem and (problem.startswith("the Hugging Face Hub is unreachable") or offline_mode()):
            unreachable = problem
        if not problem and req.repo.repo_type == "dataset":
            problem = _dataset_source_problem(req.repo, timeout)
        if problem:
            out.append((req, problem))
    return out


def _dataset_source_problem(repo: HubRepo, timeout: float) -> str | None:
    """None when ``datasets`` can load ``repo`` (logging which revision it will load), else why not."""
    try:
        source = resolve_dataset_source(repo.repo_id, repo.revision, timeout)
    except DatasetSourceError as exc:
        return str(exc)
    logger.info("Hub preflight: %s", source.reason)
    return None


# --- datasets: a loading-script repository loads through the Hub's parquet conversion --------

#: The branch where the Hub keeps its parquet conversion of a dataset repository.
PARQUET_CONVERSION = "refs/convert/parquet"


class DatasetSourceError(ProjectError, ValueError):
    """A Hub dataset holds nothing ``datasets`` can load; the message names the fix."""


class DatasetSource(NamedTuple):
    """What ``datasets.load_dataset`` is given for a Hub dataset (``revision``), and why, in
    one line for the log (``reason``)."""

    revision: str | None
    reason: str


def resolve_dataset_source(
    hub_id: str, revision: str | None = None, timeout: float = TIMEOUT, *, fix: str = ""
) -> DatasetSource:
    """The revision of ``hub_id`` to load: ``revision`` itself when it holds data files, the
    Hub's parquet conversion (``refs/convert/parquet``) when it holds a loading script (which
    ``datasets`` >= 4 refuses to run); :class:`DatasetSourceError` (with ``fix``) when it
    holds a script and the Hub has no conversion.

    Offline or when the Hub cannot be reached the revision is kept (``datasets`` then reads its
    cache). The reason names the conversion's commit SHA, which pins it (``hub_revisions``).
    """
    from huggingface_hub import HfApi

    if revision == PARQUET_CONVERSION:
        return DatasetSource(revision, f"{hub_id}: the Hub's parquet conversion ({PARQUET_CONVERSION}), as configured")
    if offline_mode():
        return DatasetSource(revision, f"{hub_id}: HF_HUB_OFFLINE is set, loading from the datasets cache")
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
    try:
        files = api.list_repo_files(hub_id, repo_type="dataset", revision=revision)
    except Exception as exc:  # unreachable, or no such repo: the load (or require) says so
        return DatasetSource(revision, f"{hub_id}: could not list its files ({type(exc).__name__}), loading as is")
    script = f"{hub_id.split('/')[-1]}.py"
    at = f"revision {revision}" if revision else "the default branch"
    if script not in files:
        return DatasetSource(revision, f"{hub_id}: data files at {at}")
    converts = api.list_repo_refs(hub_id, repo_type="dataset").converts
    conversion = next((ref for ref in converts if ref.ref == PARQUET_CONVERSION), None)
    if conversion is None:
        raise DatasetSourceError(
            f"{hub_id} at {at} holds a loading script ({script}) and no data files, which datasets "
            f"no longer runs, and the Hub has no parquet conversion of it ({PARQUET_CONVERSION})"
            + (f": {fix}" if fix else "")
        )
    return DatasetSource(
        PARQUET_CONVERSION,
        f"{hub_id} at {at} holds a loading script ({script}), which datasets no longer runs: "
        f"loading the Hub's parquet conversion {PARQUET_CONVERSION} (commit {conversion.target_commit}; "
        f"set its hub_revisions entry to that SHA to pin it)",
    )
