"""Reporting under `accelerate launch`: each process answers its share of an evaluation set
and every process gets all answers back in input order, identical to a one-process run; the
main process alone scores BERTScore, and every process gets its scores.

Two CPU ranks over gloo, as torch.distributed.run would start them, each with the same tiny
random Llama (seeded) and the embedded tokenizer.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from mift_kedro.chat import assistant_message, user_message
from tests import processes

WORLD = 2
#: 7 prompts: an uneven split (4 + 3), of different lengths, so batches differ per rank
PROMPTS = [
    ("Classify the sentiment.", "I love it"),
    ("Write a very long poem about the sea, the sky and everything in between.", ""),
    ("Hi", ""),
    ("Translate into French.", "The library opens at nine o'clock every morning."),
    ("Sum", "2 + 2"),
    ("Name three colours.", ""),
    ("Summarise.", "Kedro pipelines are made of nodes that read and write datasets."),
]
PARAMS = {"max_new_tokens": {"sentiment": 6, "out_of_sample": 10, "alpaca": 10}, "batch_size": 2,
          "torch_threads": 1}


def _eval_sets() -> dict[str, pd.DataFrame]:
    frame = pd.DataFrame({
        "id": [f"p{i}" for i in range(len(PROMPTS))],
        "prompt": [user_message(i, x) for i, x in PROMPTS],
        "completion": [assistant_message("positive")] * len(PROMPTS),
    })
    return {"sentiment": frame.assign(label=1), "alpaca": frame.iloc[2:].assign(label=None)}


def _predictions(tokenizer_dir: str) -> pd.DataFrame:
    from transformers import AutoTokenizer

    from mift_kedro.pipelines.reporting import nodes
    from tests.conftest import tiny_llama

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = tiny_llama(tokenizer, 48).eval()  # seeded: the same weights in every process
    return nodes.predict(model, tokenizer, _eval_sets(), PARAMS, model_name="m", display_name="M")


def _scores(predictions: pd.DataFrame, bertscore_dir: str) -> pd.DataFrame:
    from mift_kedro.pipelines.reporting import nodes

    params = {**PARAMS, "bertscore": {"model_type": bertscore_dir, "num_layers": 2}}
    sources = {"sentiment": {"kind": "classification", "files": {"test": "t.jsonl"},
                             "labels": {0: "negative", 1: "positive"}},
               "alpaca": {"kind": "instruction", "files": {"test": "a.jsonl"}}}
    eval_sets = {"sentiment": {"table": "A"}, "alpaca": {"table": "C"}}
    return nodes.score_predictions(params, sources, eval_sets, predictions)


def _rank(rank: int, port: int, tokenizer_dir: str, out: str, bertscore_dir: str) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )
    from accelerate import PartialState

    state = PartialState(cpu=True, timeout=timedelta(seconds=60))
    calls = []
    from mift_kedro.pipelines.reporting import nodes

    generate = nodes.generate

    def counting_generate(model, tokenizer, prompts, **kwargs):
        calls.append(len(prompts))
        return generate(model, tokenizer, prompts, **kwargs)

    nodes.generate = counting_generate
    frame = _predictions(tokenizer_dir)
    frame.assign(prompts_generated_here=sum(calls)).to_json(Path(out, f"{rank}.jsonl"), orient="records", lines=True)
    bertscore_f1, scored = nodes.M.bertscore_f1, []
    nodes.M.bertscore_f1 = lambda preds, refs, **kwargs: scored.append(len(preds)) or bertscore_f1(preds, refs, **kwargs)
    scores = _scores(frame[frame["eval_set"] == "alpaca"], bertscore_dir)
    scores.assign(rows_scored_here=sum(scored)).to_json(Path(out, f"scores{rank}.jsonl"), orient="records", lines=True)
    state.wait_for_everyone()
    state.destroy_process_group()


@pytest.mark.slow
def test_two_processes_share_the_prompts_and_give_one_process_answers(tmp_path, embedded_tokenizer_dir, tiny_roberta_dir):
    processes.spawn_ranks(
        _rank, (processes.free_port(), str(embedded_tokenizer_dir), str(tmp_path), str(tiny_roberta_dir)), WORLD,
        timeout=240,
    )

    single = _predictions(str(embedded_tokenizer_dir))
    columns = ["eval_set", "id", "prompt_text", "prediction", "prompt_tokens", "completion_tokens"]
    ranks = [pd.read_json(tmp_path / f"{rank}.jsonl", lines=True) for rank in range(WORLD)]
    for frame in ranks:  # every process holds every answer, in input order, as one process would
        assert frame[columns].to_dict("records") == single[columns].to_dict("records")
    # ... and generated only its share: 4 + 3 sentiment prompts, 3 + 2 Alpaca ones
    assert [int(frame["prompts_generated_here"].iloc[0]) for frame in ranks] == [4 + 3, 3 + 2]

    # BERTScore: scored by the main process only, its scores on every process
    single_scores = _scores(single[single["eval_set"] == "alpaca"], str(tiny_roberta_dir))
    scores = [pd.read_json(tmp_path / f"scores{rank}.jsonl", lines=True) for rank in range(WORLD)]
    assert [int(frame["rows_scored_here"].iloc[0]) for frame in scores] == [5, 0]
    for frame in scores:
        assert frame["bertscore_f1"].tolist() == pytest.approx(single_scores["bertscore_f1"].tolist())
