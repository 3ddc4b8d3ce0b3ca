"""Kedro datasets for models: the base model reference and versioned LoRA adapters.

Both take any fsspec path, as kedro-datasets do (``data/06_models/...``, ``s3://...``,
``memory://...``; ``credentials`` and ``fs_args`` go to the filesystem). transformers and peft
read and write local directories only, so a model is written into a local temporary directory
and put to the filesystem, and read back by getting it into a local directory; on the local
filesystem both work in place.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
from kedro.io.core import (
    AbstractDataset,
    AbstractVersionedDataset,
    DatasetError,
    Version,
    get_filepath_str,
    get_protocol_and_path,
)

from mift_kedro import models

logger = logging.getLogger(__name__)

#: Written into every adapter directory: the base model it was trained on, and how loaded.
ADAPTER_META = "mift_adapter.json"


def _filesystem(
    filepath: str, version: Version | None, credentials: dict[str, Any] | None, fs_args: dict[str, Any] | None
) -> tuple[str, str, Any]:
    """Protocol, path and fsspec filesystem of ``filepath``, as kedro-datasets build them."""
    protocol, path = get_protocol_and_path(str(filepath), version)
    fs_args = dict(fs_args or {})
    if protocol == "file":
        fs_args.setdefault("auto_mkdir", True)
    return protocol, path, fsspec.filesystem(protocol, **dict(credentials or {}), **fs_args)


@contextmanager
def _local_dir_to_write(fs: Any, protocol: str, path: str) -> Iterator[Path]:
    """A local directory to write a model into; on another filesystem, a temporary one whose
    contents are put to ``path`` when the block ends without error."""
    if protocol == "file":
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="mift_model_") as tmp:
        yield Path(tmp)
        if fs.exists(path):
            fs.rm(path, recursive=True)  # replaced, not merged with what was there
        fs.put(f"{tmp}/", path, recursive=True)


@contextmanager
def _local_dir_to_read(fs: Any, protocol: str, path: str) -> Iterator[Path]:
    """``path`` as a local directory: itself on the local filesystem, else a temporary copy."""
    if protocol == "file":
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="mift_model_") as tmp:
        fs.get(f"{path}/", f"{tmp}/", recursive=True)
        yield Path(tmp)


def _link_or_copy(source: str, target: str) -> None:
    """A hard link where the filesystem allows (the files are never changed in place), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


class BaseModelDataset(AbstractDataset[Any, str]):
    """The base model's record: a local model directory, or where the model comes from.

    ``save`` takes what the ``prepare_base_model`` node returns and only writes: a
    :class:`mift_kedro.models.ConvertedModel` (the embedded GGUF model, converted by the node)
    is copied to ``filepath`` (hard links on the local filesystem; skipped when ``filepath``
    already holds a model of the same source and name) with its record,
    ``filepath/mift_model_source.json``; a :class:`mift_kedro.models.ModelSource` (a Hub id
    with its revision, or a local directory) is only recorded, with the chat template to use
    when the tokenizer has none. ``load`` returns the record directory as a local path, the *ref* that
    :func:`mift_kedro.models.load_causal_lm` and :func:`~mift_kedro.models.load_tokenizer`
    resolve through the record, so every node and every adapter gets the same revision and
    template without passing parameters around.

    ``filepath`` may be any fsspec path. Off the local filesystem, ``load`` gets the record
    (and a conversion) into ``local_dir`` (default ``~/.cache/mift_kedro/base_models/
    <protocol>/<path>``) when that copy holds another record, and returns that directory:
    models load from local files, and adapters record it as their base.

    Examples:
        ```yaml
        base_model:
          type: mift_kedro.datasets.BaseModelDataset
          filepath: data/06_models/base_model
        ```

        >>> from mift_kedro.datasets import BaseModelDataset
        >>> from mift_kedro.models import ModelSource, resolve
        >>> dataset = BaseModelDataset(filepath=tmp_path / "base_model")
        >>> dataset.save(ModelSource(source="hub", name="NousResearch/Llama-2-7b-chat-hf",
        ...                          revision="351844e75ed0bcbbe3f10671b3c808d2b83894ee"))
        >>> resolve(dataset.load()).revision  # doctest: +SKIP
        '351844e75ed0bcbbe3f10671b3c808d2b83894ee'
    """

    def __init__(
        self,
        *,
        filepath: str,
        local_dir: str | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._protocol, path, self._fs = _filesystem(filepath, None, credentials, fs_args)
        self._filepath = PurePosixPath(path)
        cache = Path.home() / ".cache" / "mift_kedro" / "base_models" / self._protocol / path.lstrip("/")
        self._local_dir = Path(local_dir) if local_dir else cache
        self.metadata = metadata

    def _path(self, *names: str) -> str:
        return get_filepath_str(self._filepath.joinpath(*names), self._protocol)

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "protocol": self._protocol}

    def _exists(self) -> bool:
        return self._fs.exists(self._path(models.SOURCE_FILE))

    def _record(self) -> dict[str, Any] | None:
        file = self._path(models.SOURCE_FILE)
        return json.loads(self._fs.cat_file(file)) if self._fs.exists(file) else None

    def load(self) -> str:
        record = self._record()
        if record is None:
            raise models.ModelNotFoundError(
                f"No base model at {self._path()}: prepare it once with `kedro run --pipelines "
                "training` (or `kedro run --nodes prepare_base_model`); with `--namespaces`, "
                "the shared prepare_base_model node does not run."
            )
        if self._protocol == "file":
            return str(Path(self._filepath))
        local = self._local_dir
        if models.read_source(local) != record:  # the record is written last: a copy is whole
            local.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(
                dir=local.parent, prefix=f".{local.name}.", ignore_cleanup_errors=True
            ) as tmp:
                self._fs.get(f"{self._path()}/", f"{tmp}/", recursive=True)
                shutil.rmtree(local, ignore_errors=True)
                Path(tmp).rename(local)
            logger.info("Base model record %s copied to %s", self._path(), local)
        return str(local)

    def save(self, data: models.ModelSource | models.ConvertedModel) -> None:
        directory = data.directory if isinstance(data, models.ConvertedModel) else None
        data = data.source if isinstance(data, models.ConvertedModel) else data
        if not isinstance(data, models.ModelSource):
            raise DatasetError(
                f"BaseModelDataset saves a ModelSource or ConvertedModel, got {type(data).__name__}"
            )
        recorded = self._record()
        converted = self._fs.exists(self._path("config.json"))
        if directory is not None:
            if converted and recorded and (recorded["source"], recorded["name"]) == (data.source, data.name):
                logger.info("Base model already at %s", self._path())
                if recorded == data.to_dict():
                    return  # nothing to write: runs sharing the directory never see it change
            else:
                self._write_model(Path(directory))
        elif data.source == "embedded" and not converted:
            raise DatasetError(
                f"No converted model at {self._path()} to record {data.name!r} for: save the "
                "ConvertedModel that prepare_base_model returns (`kedro run --nodes prepare_base_model`)."
            )
        elif converted and data.source != "embedded":
            self._fs.rm(self._path(), recursive=True)  # never leave a stale converted model behind
        # written whole under another name, then renamed: a reader never sees half a record
        partial = self._path(f".{models.SOURCE_FILE}.partial")
        self._fs.pipe_file(partial, json.dumps(data.to_dict(), indent=2).encode())
        self._fs.mv(partial, self._path(models.SOURCE_FILE))

    def _write_model(self, directory: Path) -> None:
        """Replace what is at ``filepath`` with the model files of a local ``directory``."""
        path = self._path()
        if self._fs.exists(path):
            self._fs.rm(path, recursive=True)
        if self._protocol == "file":
            shutil.copytree(directory, path, copy_function=_link_or_copy)  # no second copy on disk
        else:
            self._fs.put(f"{directory}/", path, recursive=True)


class AdapterDataset(AbstractVersionedDataset[Any, Any]):
    """A versioned LoRA adapter: ``PeftModel.save_pretrained`` plus the tokenizer.

    ``save`` takes a trained ``peft.PeftModel`` and writes the adapter weights, its config,
    the tokenizer (chat template included) and which base model and quantization it was
    trained on. ``load`` rebuilds the base with :func:`mift_kedro.models.load_causal_lm` and
    returns the ``PeftModel`` in eval mode, ready to ``generate``. ``filepath`` may be any
    fsspec path (``s3://bucket/adapters/custom_only``), versioned like kedro-datasets.

    Examples:
        ```yaml
        "{variant}.adapter":
          type: mift_kedro.datasets.AdapterDataset
          filepath: data/06_models/{variant}/adapter
          versioned: true
          load_args: {device: cpu}   # optional; default: this process's GPU, else CPU
        ```

        >>> from mift_kedro.datasets import AdapterDataset
        >>> dataset = AdapterDataset(filepath=tmp_path / "adapter")
        >>> dataset.save(peft_model)  # doctest: +SKIP
        >>> model = dataset.load()  # doctest: +SKIP
        >>> model.generate(**inputs, max_new_tokens=5)  # doctest: +SKIP
    """

    def __init__(  # noqa: PLR0913
        self,
        *,
        filepath: str,
        version: Version | None = None,
        load_args: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._protocol, path, self._fs = _filesystem(filepath, version, credentials, fs_args)
        super().__init__(
            filepath=PurePosixPath(path),
            version=version,
            exists_function=self._fs.exists,
            glob_function=self._fs.glob,
        )
        self._load_args = dict(load_args or {})
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": str(self._filepath), "protocol": self._protocol, "version": self._version,
            "load_args": self._load_args,
        }

    def _exists(self) -> bool:
        try:
            load_path = get_filepath_str(self._get_load_path(), self._protocol)
        except DatasetError:
            return False
        return self._fs.exists(f"{load_path}/{ADAPTER_META}")

    def load(self) -> Any:
        from peft import PeftModel

        load_path = get_filepath_str(self._get_load_path(), self._protocol)
        with _local_dir_to_read(self._fs, self._protocol, load_path) as path:
            meta_file = path / ADAPTER_META
            if not meta_file.is_file():
                raise DatasetError(f"{load_path} is not an adapter written by AdapterDataset (no {ADAPTER_META})")
            meta = json.loads(meta_file.read_text())
            quantization = self._load_args.get("quantization") or meta["quantization"]
            base = models.load_causal_lm(
                meta["base_model"], quantization=quantization, device=self._load_args.get("device")
            )
            model = PeftModel.from_pretrained(base, str(path), is_trainable=False)
        model.eval()
        return model

    def save(self, data: Any) -> None:
        from peft import PeftModel
        from peft.utils.constants import EMBEDDING_LAYER_NAMES

        if not isinstance(data, PeftModel):
            raise DatasetError(f"AdapterDataset saves a peft.PeftModel, got {type(data).__name__}")
        config = data.peft_config[data.active_adapter]
        base_ref = config.base_model_name_or_path
        quantization = "4bit" if getattr(data.get_base_model(), "is_loaded_in_4bit", False) else "none"
        # peft's "auto" would compare vocabulary sizes with the base's config.json, which a
        # record directory does not hold; the vocabulary is never resized here, so only
        # LoRA-targeted embedding layers are saved (what "auto" decides when they are targeted).
        targets = getattr(config, "target_modules", None) or []
        save_path = get_filepath_str(self._get_save_path(), self._protocol)
        with _local_dir_to_write(self._fs, self._protocol, save_path) as path:
            data.save_pretrained(
                str(path), save_embedding_layers=any(name in targets for name in EMBEDDING_LAYER_NAMES)
            )
            models.load_tokenizer(base_ref).save_pretrained(str(path))
            (path / ADAPTER_META).write_text(
                json.dumps({"base_model": base_ref, "quantization": quantization}, indent=2)
            )
        self._invalidate_cache()

    def _release(self) -> None:
        super()._release()
        self._invalidate_cache()

    def _invalidate_cache(self) -> None:
        """Forget the filesystem's cached listings (a new version was written)."""
        self._fs.invalidate_cache(get_filepath_str(self._filepath, self._protocol))
