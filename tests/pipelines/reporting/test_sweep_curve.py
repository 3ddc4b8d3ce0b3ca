"""The forgetting curve from a metrics table: one point per variant per metric, base line."""

import pandas as pd
import pytest

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
                         "delta_vs_base": value - 0.5, "p_value_vs_base": 0.5 / (i + 1),
                         "bootstrap_resamples": 1000})
    frame = pd.DataFrame(rows)
    # one test where no resample was as extreme: the floor 1/(1000+1) of the paired bootstrap
    frame.loc[(frame["metric"] == "accuracy") & (frame["model"] == "alpaca_100"), "p_value_vs_base"] = 1 / 1001
    return frame


ACCURACY_P = [0.5 / (i + 1) for i in range(1, 5)] + [1 / 1001]


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
    assert accuracy["p_value_vs_base"].tolist() == ACCURACY_P
    # Holm over the whole curve (3 metrics x 5 variants = 15 tests): the floor p is the smallest
    assert curve["p_holm_vs_base"].notna().sum() == 15
    assert accuracy["p_holm_vs_base"].iloc[-1] == pytest.approx(15 / 1001)


def test_holm_within_the_curve_and_p_at_the_floor_printed_as_a_bound():
    curve = forgetting_curve(_metrics(), VARIANTS, [("sentiment", "accuracy")])
    # by hand, 5 tests: sorted 1/1001 x 5; 0.1 x 4 = 0.4; 0.125 x 3, 1/6 x 2, 0.25 x 1 stay at 0.4
    assert curve["p_holm_vs_base"].tolist() == pytest.approx([0.4, 0.4, 0.4, 0.4, 5 / 1001])
    table = forgetting_curve_markdown(curve)
    assert "| 0.25 | FT-25% | 0.600 [0.500, 0.700] (p=0.167, Holm p=0.400) |" in table
    assert "| 1.00 | FT-100% | 0.750 [0.650, 0.850] (p < 0.001, Holm p ≤ 0.005) |" in table
    assert "family of the 5 comparisons with the base model on this curve" in table
    assert "smallest p-value is 1/(1000+1), printed as `p < 0.001`" in table


def test_markdown_and_plot():
    curve = forgetting_curve(_metrics(), VARIANTS, [("sentiment", "accuracy")])
    table = forgetting_curve_markdown(curve)
    assert table.count("\n") == 2 + 1 + len(VARIANTS) + 2  # header, base, variants, blank, family note
    assert "| — | base | 0.500 [0.400, 0.600] |" in table
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


def test_another_source_as_the_axis():
    """`reporting.forgetting_curve_axis: sentiment`: the column, table and plot name that source."""
    curve = forgetting_curve(_metrics(), VARIANTS, [("sentiment", "accuracy")], axis="sentiment")
    assert "sentiment_fraction" in curve.columns and "alpaca_fraction" not in curve.columns
    # drawn by the sentiment share: the all-Alpaca variant first
    assert curve["sentiment_fraction"].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert curve["model"].tolist() == list(reversed(BY_FRACTION))
    table = forgetting_curve_markdown(curve)
    assert table.startswith("| Sentiment fraction | model | sentiment accuracy |")
    assert "| 0.00 | FT-100% | 0.750 [0.650, 0.850]" in table
    figure = plot_forgetting_curve(curve)
    assert figure.axes[0].get_xlabel() == "Sentiment fraction of the training budget"


def test_default_axis_keeps_the_alpaca_column_and_labels():
    curve = forgetting_curve(_metrics(), VARIANTS, [("sentiment", "accuracy")])
    assert curve.columns[4] == "alpaca_fraction"
    assert forgetting_curve_markdown(curve).startswith("| Alpaca fraction | model |")
    assert plot_forgetting_curve(curve).axes[0].get_xlabel() == "Alpaca fraction of the training budget"


def test_unknown_axis_source_stops_naming_the_key_and_the_sources():
    from mift_kedro.config import ParameterError
    from mift_kedro.pipelines.reporting.params import check_curve_axis

    sources = {"sentiment": {}, "alpaca": {}}
    check_curve_axis({"forgetting_curve_axis": "sentiment"}, sources)
    check_curve_axis({}, sources)  # the default: alpaca
    with pytest.raises(ParameterError) as err:
        check_curve_axis({"forgetting_curve_axis": "dolly"}, sources)
    assert str(err.value) == (
        "reporting.forgetting_curve_axis: 'dolly' is not a configured source (`sources`: ['sentiment', 'alpaca'])"
    )
