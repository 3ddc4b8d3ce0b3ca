"""The forgetting curve from a metrics table: one point per variant per metric, base line."""

import pandas as pd

from mift_kedro.pipelines.reporting.sweep import (
    forgetting_curve,
    forgetting_curve_markdown,
    plot_forgetting_curve,
)

VARIANTS = {
    f"alpaca_{int(f * 100)}": {"display_name": f"FT-{int(f * 100)}%", "mix": {"sentiment": 1 - f, "alpaca": f}}
    for f in (0.0, 0.25, 0.5, 0.75, 1.0)
}
VARIANTS["alpaca_0"]["mix"] = {"sentiment": 1.0}  # an absent source counts as fraction 0
BY_FRACTION = list(VARIANTS)
VARIANTS = dict(reversed(VARIANTS.items()))  # declared in any order, drawn by fraction


def _metrics() -> pd.DataFrame:
    rows = []
    for eval_set, metric in [("sentiment", "accuracy"), ("sentiment", "macro_f1"), ("alpaca", "rougeL"), ("alpaca", "bleu")]:
        for i, model in enumerate(["base", *BY_FRACTION]):
            value = 0.5 + 0.05 * i
            rows.append({"eval_set": eval_set, "metric": metric, "model": model, "display_name": model,
                         "value": value, "ci_low": value - 0.1, "ci_high": value + 0.1,
                         "delta_vs_base": value - 0.5, "p_value_vs_base": 0.5 / (i + 1)})
    return pd.DataFrame(rows)


def test_one_point_per_variant_per_metric():
    curve = forgetting_curve(_metrics(), VARIANTS)
    # out_of_sample metrics are absent from this table: skipped, not invented
    # in the order of the curve's metrics: in-domain skill first
    assert list(dict.fromkeys(zip(curve["eval_set"], curve["metric"]))) == [("sentiment", "accuracy"), ("sentiment", "macro_f1"), ("alpaca", "rougeL")]
    assert len(curve) == 3 * len(VARIANTS)
    accuracy = curve[curve["metric"] == "accuracy"]
    assert accuracy["alpaca_fraction"].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert (accuracy["base_value"] == 0.5).all()
    assert accuracy["value"].tolist() == [0.55, 0.6, 0.65, 0.7, 0.75]
    assert accuracy["p_value_vs_base"].tolist() == [0.5 / (i + 1) for i in range(1, 6)]


def test_markdown_and_plot():
    curve = forgetting_curve(_metrics(), VARIANTS, [("sentiment", "accuracy")])
    table = forgetting_curve_markdown(curve)
    assert table.count("\n") == 2 + 1 + len(VARIANTS)
    assert "| 0.25 | FT-25% | 0.600 [0.500, 0.700] |" in table
    figure = plot_forgetting_curve(curve)
    axis = figure.axes[0]
    assert axis.get_title() == "sentiment: accuracy"
    assert len(axis.lines) >= 2  # the variants' curve and the base model line


def test_curve_datasets_are_versioned_and_previewable_in_viz(kedro_project):
    """The project's catalog keeps every run's curve and gives kedro-viz a table and an image."""
    from kedro.config import OmegaConfigLoader
    from kedro.io import DataCatalog

    catalog = DataCatalog.from_config(OmegaConfigLoader(str(kedro_project / "conf"), base_env="base", default_run_env="local")["catalog"])
    curve = forgetting_curve(_metrics(), VARIANTS)
    for name, data in [("forgetting_curve", curve), ("forgetting_curve_md", forgetting_curve_markdown(curve)),
                       ("plot_forgetting_curve", plot_forgetting_curve(curve))]:
        dataset = catalog.get(name)
        assert dataset._version is not None, f"{name} is not versioned"
        catalog.save(name, data)
    assert catalog.load("forgetting_curve")[["model", "value"]].equals(curve[["model", "value"]])
    table = catalog.get("forgetting_curve").preview(nrows=20)
    assert table["columns"][:3] == ["eval_set", "metric", "model"] and len(table["data"]) == 15
    assert len(catalog.get("plot_forgetting_curve").preview()) > 1000  # a base64 PNG
