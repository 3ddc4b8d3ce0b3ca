"""A task of one's own by configuration only (docs/own_task.md): a 3-class source with string
labels and renamed columns (CSV and JSONL), a chat source in ShareGPT layout (Parquet) and
Alpaca, mixed three ways, through data_engineering -> training -> reporting with a tiny model;
and every bad configuration stopping before the first node with a line naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from mift_kedro.config import ParameterError
from mift_kedro.pipelines.data_engineering import nodes
from mift_kedro.pipelines.reporting import metrics as M
from tests.conftest import save_model_dir

#: Alpaca instructions by their first word: three classes with string labels.
CLASSES = {"generate": "GEN", "write": "WRITE", "describe": "DESC"}
LABELS = {"GEN": ["generation", "generate"], "WRITE": ["writing task", "write"], "DESC": "description"}


def _alpaca(shared_data: Path, split: str) -> pd.DataFrame:
    return pd.read_json(shared_data / "alpaca" / f"{split}.jsonl", lines=True, dtype=False)


def write_task_files(shared_data: Path, out: Path) -> dict[str, Path]:
    """The classification source's train (CSV) and test (JSONL) splits, with three test rows
    copied into train (the overlap the mix must remove), and a chat source (Parquet)."""
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for split in ("train", "test"):
        frame = _alpaca(shared_data, split)
        first = frame["instruction"].str.split().str[0].str.lower()
        task = pd.DataFrame({"query": frame["instruction"], "kind": first.map(CLASSES)}).dropna()
        files[split] = task
    files["train"] = pd.concat([files["train"], files["test"].iloc[:3]], ignore_index=True)
    files["train"].to_csv(out / "train.csv", index=False)
    files["test"].to_json(out / "test.jsonl", orient="records", lines=True)
    chats = _alpaca(shared_data, "train").iloc[-120:]
    conversations = [
        [{"from": "human", "value": f"{r.instruction}\n\n{r.input}".strip()}, {"from": "gpt", "value": r.output}]
        for r in chats.itertuples()
    ]
    pd.DataFrame({"conversations": conversations[:100]}).to_parquet(out / "chats_train.parquet")
    pd.DataFrame({"conversations": conversations[100:]}).to_parquet(out / "chats_test.parquet")
    return {"train": out / "train.csv", "test": out / "test.jsonl",
            "chats_train": out / "chats_train.parquet", "chats_test": out / "chats_test.parquet"}


def task_parameters(files: dict[str, Path]) -> dict:
    """The environment's parameters: three sources, two mixes, two evaluation sets."""
    return {
        "sources": {
            "topics": {
                "kind": "classification",
                "files": {"train": str(files["train"]), "test": str(files["test"])},
                "fields": {"text": "query", "label": "kind"},
                "labels": LABELS,
                "template": "Which kind of request is this? Answer with one of: {labels}.\n\n{query}",
            },
            "chats": {
                "kind": "chat",
                "files": {"train": str(files["chats_train"]), "test": str(files["chats_test"])},
                "fields": {"messages": "conversations", "role": "from", "content": "value",
                           "user": "human", "assistant": "gpt"},
            },
            "alpaca": {"kind": "instruction", "files": {"train": "alpaca/train.jsonl", "test": "alpaca/test.jsonl"}},
        },
        "eval_sets": {
            "topics": {"size": 6, "table": "T", "max_new_tokens": 4},
            "chats": {"size": 3, "max_new_tokens": 6},
        },
        "variants": {
            "topics_only": {"display_name": "FT-Topics", "budget": 9, "mix": {"topics": 1.0}},
            "three_way": {"display_name": "FT-ThreeWay", "budget": 10,
                          "mix": {"topics": 0.6, "chats": 0.2, "alpaca": 0.2}},
        },
    }


@pytest.fixture
def task_project(kedro_project, shared_data, tmp_path):
    files = write_task_files(shared_data, tmp_path / "task")
    env = kedro_project / "conf" / "my_task"
    env.mkdir()
    (env / "parameters.yml").write_text(yaml.safe_dump(task_parameters(files), sort_keys=False))
    bootstrap_project(kedro_project)
    return kedro_project


def _latest(path: Path) -> Path:
    (version,) = sorted(p for p in path.iterdir() if p.is_dir())
    return version / path.name


def _run(project: Path, pipelines: list[str], **runtime_params):
    with KedroSession.create(project_path=project, env="my_task", runtime_params=runtime_params or None) as session:
        return session.run(pipeline_names=pipelines)


def test_three_sources_mix_with_exact_counts_and_no_evaluation_overlap(task_project):
    _run(task_project, ["data_engineering"])
    data = task_project / "data"
    evals = {s: pd.read_json(_latest(data / "05_model_input" / "eval" / f"{s}.jsonl"), lines=True, dtype=False)
             for s in ("topics", "chats")}
    assert len(evals["topics"]) == 6 and evals["topics"]["label"].value_counts().to_dict() == {"GEN": 2, "WRITE": 2, "DESC": 2}
    assert len(evals["chats"]) == 3
    eval_texts = {nodes.overlap_key(t) for frame in evals.values() for t in frame["text"]}
    pool = pd.read_json(_latest(data / "03_primary" / "topics_train.jsonl"), lines=True, dtype=False)
    overlapping = int(pool["text"].map(nodes.overlap_key).isin(eval_texts).sum())
    assert overlapping >= 1  # test rows copied into train that the evaluation set drew
    for variant, expected in (("topics_only", {"topics": 9}), ("three_way", {"topics": 6, "chats": 2, "alpaca": 2})):
        training = pd.read_json(_latest(data / "05_model_input" / variant / "training_set.jsonl"), lines=True, dtype=False)
        report = json.loads(_latest(data / "08_reporting" / variant / "mix_report.json").read_text())
        assert training["source"].value_counts().to_dict() == expected == report["by_source"]
        assert report["removed_eval_overlap"]["topics"] == overlapping
        counts = report["by_label"]["topics"]
        assert sum(counts.values()) == expected["topics"] and max(counts.values()) - min(counts.values()) <= 1
        prompts = {nodes.overlap_key(p[-1]["content"].split("\n\n", 1)[-1]) for p in training["prompt"]}
        assert not prompts & eval_texts
    chat = training[training["source"] == "chats"].iloc[0]
    assert [m["role"] for m in chat["prompt"]] == ["user"] and chat["completion"][0]["role"] == "assistant"
    # the larger budget's topics examples contain the smaller one's first draws (nested)
    topics_only = pd.read_json(_latest(data / "05_model_input" / "topics_only" / "training_set.jsonl"), lines=True, dtype=False)
    assert set(training.loc[training["source"] == "topics", "id"]) <= set(topics_only["id"])


@pytest.mark.slow
def test_own_task_from_files_to_report_with_a_tiny_model(task_project, embedded_tokenizer, tiny_roberta_dir, tmp_path):
    base = save_model_dir(tmp_path / "tiny", embedded_tokenizer, hidden_size=32)
    _run(task_project, ["data_engineering", "training", "reporting"], **{
        "base_model.source": "local", "base_model.name": str(base),
        "training.quantization": "none", "training.max_steps": 1, "training.effective_batch_size": 4,
        "training.batch_size": 4, "training.save_steps": 100,
        "reporting.bertscore.model_type": str(tiny_roberta_dir), "reporting.bertscore.num_layers": 2,
        "reporting.bootstrap.resamples": 20,
    })
    reporting = task_project / "data" / "08_reporting"
    scores = pd.read_json(_latest(reporting / "per_example_scores.jsonl"), lines=True, dtype=False)
    topics = scores[scores["eval_set"] == "topics"]
    assert len(topics) == 3 * 6  # base and two variants
    # the confusion matrix holds, per model, the parser's reading of each answer
    confusion = pd.read_csv(_latest(reporting / "tables" / "confusion_topics.csv"))
    assert list(confusion.columns) == ["model", "display_name", "true_label", "GEN", "WRITE", "DESC", "invalid"]
    for model, group in topics.groupby("model"):
        expected = pd.DataFrame(0, index=list(LABELS), columns=[*LABELS, "invalid"])
        for label, prediction in zip(group["label"], group["prediction"], strict=True):
            parsed, reason = M.parse_answer(prediction, LABELS)
            expected.loc[label, "invalid" if parsed is None else parsed] += 1
            assert (reason is None) == (parsed is not None)
        table = confusion[confusion["model"] == model].set_index("true_label")[[*LABELS, "invalid"]]
        assert table.equals(expected.astype(table.dtypes.iloc[0]))
    assert (topics["invalid_reason"].isna() == topics["predicted_label"].notna()).all()
    metrics = pd.read_csv(_latest(reporting / "metrics.csv"))
    topic_metrics = set(metrics.loc[metrics["eval_set"] == "topics", "metric"])
    assert {"accuracy", "macro_f1", "invalid_rate", "recall/GEN", "recall/WRITE", "recall/DESC"} <= topic_metrics
    assert {"bleu", "rougeL", "bertscore_f1"} <= set(metrics.loc[metrics["eval_set"] == "chats", "metric"])
    assert "accuracy" not in set(metrics.loc[metrics["eval_set"] == "chats", "metric"])
    curve = pd.read_csv(_latest(reporting / "forgetting_curve.csv"))  # the configured sets, not sentiment's
    assert list(dict.fromkeys(zip(curve["eval_set"], curve["metric"], strict=True)))[:4] == [
        ("topics", "accuracy"), ("topics", "macro_f1"), ("chats", "rougeL"), ("chats", "bertscore_f1")]
    tables = reporting / "tables"
    assert _latest(tables / "table_T.md").read_text().startswith("## Evaluation set topics")
    assert _latest(tables / "table_chats.csv").is_file()
    assert (reporting / "plots" / "confusion_topics.png").is_dir()
    assert "Evaluation set chats" in _latest(reporting / "report.html").read_text()


BAD = [
    (lambda p: p["sources"]["topics"]["fields"].update(txt="query"), r"sources\.topics: fields\.txt: Extra inputs"),
    (lambda p: p["sources"]["topics"]["labels"].pop("DESC"), r"sources\.topics\.labels: .* label\(s\) \['DESC'\] that the map lacks"),
    (lambda p: p["variants"]["three_way"]["mix"].update(alpaca=0.3), r"variants\.three_way\.mix: mix fractions sum to 1\.1"),
    (lambda p: p["variants"]["topics_only"].update(budget=900), r"variants\.topics_only\.budget: 900 examples of source 'topics' need up to 300 of each label"),
    (lambda p: p["sources"]["topics"].update(template="{query} {context}"), r"sources\.topics: template: placeholder\(s\) \['context'\] name no text field"),
    (lambda p: p["eval_sets"].update(extra={"source": "nowhere"}), r"eval_sets\.extra\.source: unknown source 'nowhere'"),
    (lambda p: p["sources"]["topics"]["fields"].update(label="category"), r"sources\.topics\.fields\.label: no column 'category'"),
]


@pytest.mark.parametrize(("change", "message"), BAD, ids=[
    "unknown_field", "label_missing_from_map", "fractions_not_summing_to_1", "too_few_per_label",
    "placeholder_without_field", "unknown_eval_source", "missing_label_column",
])
def test_bad_configuration_stops_before_the_first_node(task_project, change, message):
    path = task_project / "conf" / "my_task" / "parameters.yml"
    params = yaml.safe_load(path.read_text())
    change(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(ParameterError, match=message) as error:
        _run(task_project, ["data_engineering"])
    assert any(len(line) < 400 and "." in line for line in str(error.value).splitlines())
    assert not (task_project / "data" / "03_primary").exists()  # no node ran


@pytest.mark.parametrize(("files", "message"), [
    ({"train": "missing/train.csv"}, r"sources\.topics\.files\.train: missing/train\.csv not found"),
    ({"train": "train.xlsx"}, r"sources\.topics\.files\.train: train\.xlsx is not one of \['\.csv'"),
], ids=["missing_file", "unsupported_format"])
def test_bad_files_stop_before_the_first_node(task_project, files, message):
    path = task_project / "conf" / "my_task" / "parameters.yml"
    params = yaml.safe_load(path.read_text())
    params["sources"]["topics"]["files"].update(files)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(ParameterError, match=message):
        _run(task_project, ["data_engineering"])
    assert not (task_project / "data" / "03_primary").exists()


@pytest.mark.parametrize(("answer", "label", "reason"), [
    ("Writing task.", "WRITE", None),               # a multi-word answer phrase
    ("write", "WRITE", None),                       # a synonym
    ("Writing task, not a description", "WRITE", None),  # the phrase it starts with decides
    ("This asks for a description.", "DESC", None),  # the only label named
    ("generation or description?", "GEN", None),
    ("I am not sure about description versus generation", None, M.SEVERAL_LABELS),
    ("A writing", None, M.NO_LABEL),                # a word of a phrase is not the phrase
    ("   ", None, M.EMPTY_ANSWER),
])
def test_answer_parser_reads_phrases_and_synonyms_and_says_why_invalid(answer, label, reason):
    assert M.parse_answer(answer, LABELS) == (label, reason)


def test_unknown_curve_axis_stops_before_the_first_node(task_project):
    """`reporting.forgetting_curve_axis` names a source; a name that is none stops in one line."""
    with pytest.raises(ParameterError) as error:
        _run(task_project, ["data_engineering"], reporting={"forgetting_curve_axis": "dolly"})
    (line,) = [x for x in str(error.value).splitlines() if "forgetting_curve_axis" in x]
    assert "reporting.forgetting_curve_axis: 'dolly' is not a configured source" in line
    assert "['topics', 'chats', 'alpaca']" in line
    assert not (task_project / "data" / "03_primary").exists()  # no node ran
