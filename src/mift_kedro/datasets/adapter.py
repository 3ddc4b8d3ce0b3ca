"""Kedro datasets for models: the base model reference and versioned LoRA adapters.

Both live on the local filesystem (model directories written by ``save_pretrained``).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io.core import AbstractDataset, AbstractVersionedDataset, DatasetError, Version

from mift_kedro import models

logger = logging.getLogger(__name__)

#: Written into every adapter directory: the base model it was trained on, and how loaded.
ADAPTER_META = "mift_adapter.json"


class BaseModelDataset(AbstractDataset[Any, str]):
    """The base model's record: a local model directory, or where the model comes from.

    ``save`` takes a :class:`mift_kedro.models.ModelSource` and writes it to
    ``filepath/mift_model_source.json``. The embedded GGUF model is also converted into a
    safetensors directory at ``filepath`` (skipped when the directory already holds a
    conversion of the same file, so only the first run pays ~40 s); a Hub id (with its
    revision) or a local directory is only recorded, with the chat template to use when the
    tokenizer has none. ``load`` returns ``filepath``, the *ref* that
    :func:`mift_kedro.models.load_causal_lm` and :func:`~mift_kedro.models.load_tokenizer`
    resolve through the record, so every node and every adapter gets the same revision and
    template without passing parameters around.

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

    def __init__(self, *, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}

    def _exists(self) -> bool:
        return (self._filepath / models.SOURCE_FILE).is_file()

    def load(self) -> str:
        if models.read_source(self._filepath) is None:
            raise models.ModelNotFoundError(
                f"No base model at {self._filepath}: prepare it once with `kedro run --pipelines "
                "training` (or `kedro run --nodes prepare_base_model`); with `--namespaces`, "
                "the shared prepare_base_model node does not run."
            )
        return str(self._filepath)

    def save(self, data: models.ModelSource) -> None:
        if not isinstance(data, models.ModelSource):
            raise DatasetError(f"BaseModelDataset saves a ModelSource, got {type(data).__name__}")
        recorded = models.read_source(self._filepath)
        if data.source == "embedded":
            if recorded and (recorded["source"], recorded["name"]) == (data.source, data.name) and (
                self._filepath / "config.json"
            ).is_file():
                logger.info("Base model already converted at %s", self._filepath)
            else:
                models.convert_embedded(data.name, self._filepath)
        else:
            if (self._filepath / "config.json").is_file():
                shutil.rmtree(self._filepath)  # never leave a stale converted model behind
            self._filepath.mkdir(parents=True, exist_ok=True)
        models.write_source(self._filepath, data)


class AdapterDataset(AbstractVersionedDataset[Any, Any]):
    """A versioned LoRA adapter: ``PeftModel.save_pretrained`` plus the tokenizer.

    ``save`` takes a trained ``peft.PeftModel`` and writes the adapter weights, its config,
    the tokenizer (chat template included) and which base model and quantization it was
    trained on. ``load`` rebuilds the base with :func:`mift_kedro.models.load_causal_lm` and
    returns the ``PeftModel`` in eval mode, ready to ``generate``.

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

    def __init__(
        self,
        *,
        filepath: str,
        version: Version | None = None,
        load_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            filepath=PurePosixPath(Path(filepath).as_posix()),
            version=version,
            exists_function=os.path.exists,
            glob_function=glob.glob,
        )
        self._load_args = dict(load_args or {})
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version, "load_args": self._load_args}

    def _exists(self) -> bool:
        try:
            return (Path(self._get_load_path()) / ADAPTER_META).is_file()
        except DatasetError:
            return False

    def load(self) -> Any:
        from peft import PeftModel

        path = Path(self._get_load_path())
        meta_file = path / ADAPTER_META
        if not meta_file.is_file():
            raise DatasetError(f"{path} is not an adapter written by AdapterDataset (no {ADAPTER_META})")
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
        path = Path(self._get_save_path())
        config = data.peft_config[data.active_adapter]
        base_ref = config.base_model_name_or_path
        quantization = "4bit" if getattr(data.get_base_model(), "is_loaded_in_4bit", False) else "none"
        # peft's "auto" would compare vocabulary sizes with the base's config.json, which a
        # record directory does not hold; the vocabulary is never resized here, so only
        # LoRA-targeted embedding layers are saved (what "auto" decides when they are targeted).
        targets = getattr(config, "target_modules", None) or []
        data.save_pretrained(
            str(path), save_embedding_layers=any(name in targets for name in EMBEDDING_LAYER_NAMES)
        )
        models.load_tokenizer(base_ref).save_pretrained(str(path))
        (path / ADAPTER_META).write_text(
            json.dumps({"base_model": base_ref, "quantization": quantization}, indent=2)
        )
