"""Training-seed variance: `training_seeds` as data, one training and reporting namespace per
(variant, seed) on the variant's one training set, the seed reaching the trainer, and the
spread over seeds beside the bootstrap CIs (one seed: everything as before)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from mift_kedro.config import ParameterError, trained_models, training_seeds
from mift_kedro.parameters import validate_parameters
from mift_kedro.pipelines import training
from mift_kedro.pipelines.reporting import nodes, report, seeds, sweep
from tests.pipelines.training.test_training import (  # noqa: F401
    VARIANT,
    lora_state,
    sentiment_rows,
    tiny_model_dir,
    tiny_training,
)

SEEDS = [42, 43, 44]
DEFAULT_VARIANTS = {"custom_only", "both_instructions"}


def _namespaces(pipe) -> set[str]:
    return {n.namespace for n in pipe.nodes if n.namespace}


def _bound_seed(node) -> int:
    return node.func.keywords["seed"]


# --- the pipelines: a namespace per (variant, seed), one data mix per variant ----------------


@pytest.mark.slow
def test_seeds_env_builds_a_namespace_per_variant_and_seed(kedro_project):
    from kedro.framework.project import pipelines

    bootstrap_project(kedro_project)
    with KedroSession.create(project_path=kedro_project, env="seeds") as session:
        context = session.load_context()
        assert context.params["training_seeds"] == SEEDS and context.params["seed"] == 42
        assert set(context.params["variants"]) == DEFAULT_VARIANTS  # the demo's two variants
        models = {f"{v}_s{s}" for v in DEFAULT_VARIANTS for s in SEEDS}
        assert _namespaces(pipelines["data_engineering"]) == DEFAULT_VARIANTS  # one data mix per variant
        assert _namespaces(pipelines["training"]) == models
        assert _namespaces(pipelines["reporting"]) == models | {"base"}
        train = {n.namespace: n for n in pipelines["training"].nodes if n.name.endswith(".train_adapter")}
        for variant in DEFAULT_VARIANTS:
            for seed in SEEDS:
                node = train[f"{variant}_s{seed}"]
                # every seed reads the variant's one training set, and trains with its own seed
                assert node.inputs[:2] == ["base_model", f"{variant}.training_set"]
                assert _bound_seed(node) == seed
                assert f"{variant}_s{seed}.adapter" in node.outputs
        # the training sets come from data_engineering: nothing per seed is made there
        assert {i for i in pipelines["training"].inputs() if i.endswith("training_set")} == {
            f"{v}.training_set" for v in DEFAULT_VARIANTS}
        assert {f"{v}.training_set" for v in DEFAULT_VARIANTS} <= pipelines["data_engineering"].all_outputs()
        generation = {n.namespace: n for n in pipelines["reporting"].nodes if n.name.endswith(".generate_predictions")}
        assert "custom_only_s43.adapter" in generation["custom_only_s43"].inputs
        assert "params:variants.custom_only" in generation["custom_only_s43"].inputs
        assert generation["custom_only_s43"].func.keywords == {"model_name": "custom_only_s43", "training_seed": 43}
        assert {"seed_summary", "seed_summary_md"} <= pipelines["reporting"].all_outputs()


@pytest.mark.slow
def test_one_seed_keeps_the_variant_namespaces_and_follows_seed(kedro_project):
    """The default `training_seeds` is `[seed]`: the namespaces are the variants' as before, and
    `--params seed=7` moves the training seed with the data seed, as it always did."""
    from kedro.framework.project import pipelines

    bootstrap_project(kedro_project)
    for runtime, seed in (({}, 42), ({"seed": 7}, 7)):
        with KedroSession.create(project_path=kedro_project, runtime_params=runtime) as session:
            assert session.load_context().params["training_seeds"] == [seed]
            assert _namespaces(pipelines["training"]) == DEFAULT_VARIANTS
            assert _namespaces(pipelines["reporting"]) == DEFAULT_VARIANTS | {"base"}
            train = [n for n in pipelines["training"].nodes if n.name == "custom_only.train_adapter"]
            assert _bound_seed(train[0]) == seed and "seed_in_name" not in train[0].func.keywords


def test_one_seed_pipeline_has_the_same_nodes_and_datasets_as_before():
    old = training.create_pipeline(variants=["custom_only", "both_instructions"])  # trains at params:seed
    new = training.create_pipeline(variants=["custom_only", "both_instructions"], seeds=[42])
    assert {n.name for n in new.nodes} == {n.name for n in old.nodes}
    assert new.all_outputs() == old.all_outputs()
    assert new.inputs() == old.inputs() - {"params:seed"}


def test_model_names_and_display_names():
    variants = {"custom_only": {"display_name": "FT-CustomOnly"}, "both_instructions": {"display_name": "FT-Both"}}
    one = trained_models(variants, [42])
    assert [(m.name, m.variant, m.seed, m.display_name) for m in one] == [
        ("custom_only", "custom_only", 42, "FT-CustomOnly"), ("both_instructions", "both_instructions", 42, "FT-Both")]
    several = trained_models(variants, [43, 42])
    assert [m.name for m in several] == ["custom_only_s43", "custom_only_s42", "both_instructions_s43", "both_instructions_s42"]
    assert several[0].display_name == "FT-CustomOnly (seed 43)"


@pytest.mark.parametrize(
    ("seeds_value", "message"),
    [([], "non-empty list"), ([42, 42], "lists a seed twice"), ([42, "x"], "not integers"), (7, "non-empty list")],
)
def test_bad_training_seeds_are_named(seeds_value, message):
    params = {"seed": 42, "variants": {"v": {"display_name": "V"}}, "training_seeds": seeds_value}
    with pytest.raises(ParameterError, match=message) as error:
        training_seeds(params)
    assert "training_seeds" in str(error.value)
    assert training_seeds({"seed": 5, "variants": {}}) == [5]  # absent: one training at `seed`


def test_validation_rejects_a_model_name_that_clashes():
    base = {
        "seed": 1,
        "sources": {"sentiment": {"kind": "classification", "files": {"train": "t.jsonl", "test": "t.jsonl"},
                                  "labels": {0: "negative", 1: "positive"}}},
        "eval_sets": {"sentiment": {"size": 4}},
        "variants": {"v": {"display_name": "V", "budget": 4, "mix": {"sentiment": 1.0}},
                     "v_s1": {"display_name": "W", "budget": 4, "mix": {"sentiment": 1.0}}},
    }
    assert training_seeds({**base, "training_seeds": [1]}) == [1]
    with pytest.raises(ParameterError, match=r"training_seeds.*'v_s1'.*clash"):
        training_seeds({**base, "training_seeds": [1, 2]})
    # the hook's validation of all parameter blocks reports it too
    with pytest.raises(ParameterError, match=r"training_seeds.*lists a seed twice"):
        validate_parameters({**base, "training_seeds": [1, 1]})


# --- the seed reaches the trainer --------------------------------------------------------------


@pytest.mark.slow
def test_each_seed_namespace_trains_its_own_adapter_on_the_shared_training_set(tiny_model_dir, tmp_path):  # noqa: F811
    """The training pipeline run by Kedro's runner: two seeds of one variant read the same
    training set and give different adapters; a seed trained again gives the same one."""
    from kedro.io import DataCatalog, MemoryDataset
    from kedro.runner import SequentialRunner

    from mift_kedro.pipelines.training import nodes as training_nodes

    params = tiny_training(tmp_path / "run", max_steps=2)
    pipe = training.create_pipeline(variants=["v"], seeds=[1, 2]).filter(
        node_names=["v_s1.train_adapter", "v_s2.train_adapter"])
    assert pipe.inputs() == {"base_model", "v.training_set", "params:variants.v", "params:training"}
    data = {"base_model": str(tiny_model_dir), "v.training_set": sentiment_rows(8),
            "params:variants.v": VARIANT, "params:training": params}
    catalog = DataCatalog({name: MemoryDataset(value, copy_mode="assign") for name, value in data.items()})
    outputs = SequentialRunner().run(pipe, catalog)  # the free outputs, as MemoryDatasets

    first, second = lora_state(outputs["v_s1.adapter"].load()), lora_state(outputs["v_s2.adapter"].load())
    assert first.keys() == second.keys() and first
    assert any(not np.allclose(first[k].numpy(), second[k].numpy()) for k in first), "seeds 1 and 2 gave the same adapter"
    records = {m: outputs[f"{m}.training_metrics"].load() for m in ("v_s1", "v_s2")}
    assert [(r["seed"], r["variant"]) for r in records.values()] == [(1, "FT-Test (seed 1)"), (2, "FT-Test (seed 2)")]
    assert records["v_s1"]["checkpoint_dir"] != records["v_s2"]["checkpoint_dir"]  # per seed: resume and retrain
    assert records["v_s1"]["examples"] == records["v_s2"]["examples"] == 8

    again, record = training_nodes.train_adapter(
        str(tiny_model_dir), sentiment_rows(8), VARIANT, tiny_training(tmp_path / "again", max_steps=2), seed=1)
    assert record["seed"] == 1 and record["variant"] == "FT-Test"  # called alone: the variant's name
    for key, value in first.items():
        np.testing.assert_allclose(lora_state(again)[key].numpy(), value.numpy(), rtol=1e-5, atol=1e-7)


# --- the spread over seeds ---------------------------------------------------------------------

VARIANTS = {
    "custom_only": {"display_name": "FT-CustomOnly", "mix": {"sentiment": 1.0}},
    "both_instructions": {"display_name": "FT-Both", "mix": {"sentiment": 0.5, "alpaca": 0.5}},
}
#: accuracy and ROUGE-L per model; the base model's first
VALUES = {
    "base": (0.60, 0.20),
    "custom_only_s42": (0.70, 0.25), "custom_only_s43": (0.74, 0.21), "custom_only_s44": (0.75, 0.24),
    "both_instructions_s42": (0.66, 0.30), "both_instructions_s43": (0.62, 0.26), "both_instructions_s44": (0.70, 0.28),
}


def _metrics(values: dict[str, tuple[float, float]], names: dict[str, str]) -> pd.DataFrame:
    rows = []
    for k, (eval_set, metric) in enumerate([("sentiment", "accuracy"), ("alpaca", "rougeL")]):
        base = values["base"][k]
        for model, pair in values.items():
            v = pair[k]
            rows.append({
                "eval_set": eval_set, "model": model, "display_name": names[model], "metric": metric,
                "value": v, "ci_low": v - 0.05, "ci_high": v + 0.05, "n": 100, "higher_is_better": True,
                "delta_vs_base": np.nan if model == "base" else v - base, "delta_ci_low": np.nan,
                "delta_ci_high": np.nan, "p_value_vs_base": np.nan if model == "base" else 0.2,
                "p_holm_vs_base": np.nan, "bootstrap_resamples": 1000,
            })
    return pd.DataFrame(rows)


def _several() -> pd.DataFrame:
    names = {"base": "Base", **{m.name: m.display_name for m in trained_models(VARIANTS, SEEDS)}}
    return _metrics(VALUES, names)


def test_summary_is_mean_sd_min_max_over_seeds_by_hand():
    summary, markdown = nodes.build_seed_summary(_several(), VARIANTS, SEEDS)
    row = summary[(summary["metric"] == "accuracy") & (summary["variant"] == "custom_only")].iloc[0]
    # by hand: 0.70, 0.74, 0.75 -> mean 0.73; deviations -0.03, 0.01, 0.02; sd = sqrt(0.0014 / 2)
    assert row["mean"] == pytest.approx(0.73)
    assert row["sd"] == pytest.approx(math.sqrt(0.0014 / 2))
    assert (row["min"], row["max"], row["n_seeds"]) == (0.70, 0.75, 3)
    assert row["seeds"] == "42,43,44" and row["models"] == "custom_only_s42,custom_only_s43,custom_only_s44"
    assert row["base_value"] == 0.60 and row["mean_delta_vs_base"] == pytest.approx(0.13)
    assert row["display_name"] == "FT-CustomOnly"
    both = summary[(summary["metric"] == "rougeL") & (summary["variant"] == "both_instructions")].iloc[0]
    # 0.30, 0.26, 0.28 -> mean 0.28, sd 0.02 (deviations 0.02, -0.02, 0)
    assert (both["mean"], both["sd"], both["min"], both["max"]) == pytest.approx((0.28, 0.02, 0.26, 0.30))
    assert len(summary) == 2 * 2  # (accuracy, ROUGE-L) x two variants
    assert "| Accuracy | 0.600 | 0.730 ± 0.026 (0.700–0.750) | 0.660 ± 0.040 (0.620–0.700) |" in markdown
    assert "3 training seeds per variant (42, 43, 44)" in markdown

    # a model missing from the metrics is left out, and the count says so
    partial = seeds.seed_summary(_several().query("model != 'custom_only_s44'"), VARIANTS, SEEDS)
    row = partial[(partial["metric"] == "accuracy") & (partial["variant"] == "custom_only")].iloc[0]
    assert (row["n_seeds"], row["seeds"], row["mean"]) == (2, "42,43", pytest.approx(0.72))
    assert row["sd"] == pytest.approx(math.sqrt(0.0008))


def test_tables_and_curve_show_the_spread_beside_each_variants_seeds():
    metrics = _several()
    summary, _ = nodes.build_seed_summary(metrics, VARIANTS, SEEDS)
    frame, markdown = nodes.build_table(metrics, summary, eval_set="sentiment")
    header = markdown.split("| Metric |")[1].split("\n")[0]
    columns = [c.strip() for c in header.strip(" |").split("|")]
    assert columns == ["Base", "FT-CustomOnly (seed 42)", "FT-CustomOnly (seed 43)", "FT-CustomOnly (seed 44)",
                       "FT-CustomOnly over 3 seeds", "FT-Both (seed 42)", "FT-Both (seed 43)", "FT-Both (seed 44)",
                       "FT-Both over 3 seeds"]
    accuracy = markdown.split("| Accuracy |")[1].split("\n")[0]
    assert "| 0.730 ± 0.026 (0.700–0.750) |" in accuracy and "0.700 [0.650, 0.750] (Δ +0.100" in accuracy
    assert "mean ± sample standard deviation (min–max)" in markdown
    assert frame.loc[0, "FT-CustomOnly seed_mean"] == pytest.approx(0.73)
    assert frame.loc[0, "FT-Both seed_max"] == pytest.approx(0.70) and frame.loc[0, "FT-Both n_seeds"] == 3

    curve, curve_md, figure = nodes.build_forgetting_curve(
        metrics, VARIANTS, {"max_new_tokens": {"sentiment": 4, "out_of_sample": 8, "alpaca": 8}}, SEEDS, summary)
    assert len(curve) == 2 * 6 and set(curve["model"]) == {m.name for m in trained_models(VARIANTS, SEEDS)}
    rows = [line.split(" | ")[1] for line in curve_md.splitlines()[2:9]]
    assert rows == ["base", "FT-CustomOnly (seed 42)", "FT-CustomOnly (seed 43)", "FT-CustomOnly (seed 44)",
                    "FT-CustomOnly over 3 seeds", "FT-Both (seed 42)", "FT-Both (seed 43)"]
    assert "| 0.00 | FT-CustomOnly over 3 seeds | 0.730 ± 0.026 (0.700–0.750) | 0.233 ± 0.021 (0.210–0.250) |" in curve_md
    axis = figure.axes[0]
    (means,) = [c for c in axis.containers if c.get_label() == "mean over seeds (± sd)"]
    assert list(means.lines[0].get_ydata()) == pytest.approx([0.73, 0.66])  # by fraction: 0, then 0.5
    html = report.render_report(metrics, pd.DataFrame(columns=["model", "display_name", "eval_set", "id"]),
                                {"seed": 1}, curve, None, summary)
    assert "<h2 id='seeds'>Spread over training seeds</h2>" in html and html.count("over 3 seeds") >= 4


def test_one_seed_output_is_unchanged():
    """With one seed per variant every table, the curve and the report are exactly what they
    were without a seed summary; the summary says there is no spread to show."""
    one = {"base": VALUES["base"], "custom_only": VALUES["custom_only_s42"], "both_instructions": VALUES["both_instructions_s42"]}
    metrics = _metrics(one, {"base": "Base", "custom_only": "FT-CustomOnly", "both_instructions": "FT-Both"})
    summary, markdown = nodes.build_seed_summary(metrics, VARIANTS, [42])
    assert (summary["n_seeds"] == 1).all() and summary["sd"].isna().all()
    assert markdown.startswith("_One training seed per variant")
    for eval_set in ("sentiment", "alpaca"):
        with_summary = nodes.build_table(metrics, summary, eval_set=eval_set)
        without = (report.table_frame(metrics, eval_set), report.table_markdown(metrics, eval_set))
        assert with_summary[0].equals(without[0]) and with_summary[1] == without[1]
    params = {"max_new_tokens": {"sentiment": 4, "out_of_sample": 8, "alpaca": 8}}
    curve, curve_md, _ = nodes.build_forgetting_curve(metrics, VARIANTS, params, [42], summary)
    assert curve.equals(sweep.forgetting_curve(metrics, VARIANTS))
    assert curve_md == sweep.forgetting_curve_markdown(curve)
    assert "seed" not in curve_md and "± " not in curve_md
    empty = pd.DataFrame(columns=["model", "display_name", "eval_set", "id"])
    html = report.render_report(metrics, empty, {"seed": 1}, curve, None, summary)
    assert "Spread over training seeds" not in html

