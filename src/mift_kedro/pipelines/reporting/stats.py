"""What a bootstrap p-value can say: its resampling floor, and Holm's correction for a family.

* **Floor.** :func:`metrics.paired_bootstrap` returns ``(1 + #{resamples as extreme}) / (B + 1)``,
  so the smallest value it can give is ``1 / (B + 1)`` (0.000999 for B = 1000): a p-value there
  means "no resample was as extreme", not a measurement. :func:`format_p` prints it as a bound
  (``p < 0.001``).
* **Holm.** A table compares every fine-tuned model with the base model on every metric, so it
  tests a *family* of hypotheses; the smallest of ~16 raw p-values is small by chance alone.
  :func:`holm` is Holm's (1979) step-down adjustment, which controls the family-wise error rate
  without assuming independence: sort the m p-values, multiply the i-th smallest by
  ``m - i + 1``, make the sequence non-decreasing, cap at 1. (Written here because statsmodels,
  whose ``multipletests(method="holm")`` does the same, is not a dependency of the project.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd


def p_floor(resamples: int) -> float:
    """The smallest p-value ``resamples`` bootstrap resamples can give: ``1 / (resamples + 1)``."""
    return 1.0 / (int(resamples) + 1.0)


def at_floor(p: float, resamples: int | None) -> bool:
    """True when ``p`` is the resampling floor (no resample was as extreme as the observation)."""
    if resamples is None or _missing(resamples) or _missing(p):
        return False
    return p <= p_floor(int(resamples)) * (1 + 1e-9)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values, in the input order; NaN (no test) stays NaN and is not counted."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    m = len(tested)
    if m == 0:
        return out
    order = tested[np.argsort(p[tested], kind="stable")]
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out


def holm_is_bound(pvalues: Sequence[float], resamples: Sequence[float | None]) -> np.ndarray:
    """Which Holm-adjusted values are upper bounds: those that change when the p-values at the
    resampling floor (themselves upper bounds) are lowered to 0."""
    p = np.asarray(pvalues, dtype=float)
    floored = np.array([at_floor(v, r) for v, r in zip(p, resamples, strict=True)], dtype=bool)
    if not floored.any():
        return np.zeros(p.shape, dtype=bool)
    return ~np.isclose(holm(p), holm(np.where(floored, 0.0, p)), rtol=0, atol=1e-12)


def format_p(p: float, resamples: int | None = None, *, bound: bool = False, digits: int = 3) -> str:
    """``p=0.063``; at the floor of ``resamples`` resamples ``p < 0.001`` (the floor rounded up
    to one significant digit); ``bound=True`` (an upper bound for another reason) ``p ≤ 0.016``."""
    if _missing(p):
        return "p n/a"
    if at_floor(p, resamples):
        floor = p_floor(int(resamples))
        shown = _round_up(floor)
        return f"p < {shown:g}" if shown > floor else f"p ≤ {shown:g}"
    return f"p ≤ {p:.{digits}f}" if bound else f"p={p:.{digits}f}"


def format_value(value: float, metric: str) -> str:
    """A metric's value as the tables print it: BLEU (0-100) with one decimal, the rest three."""
    if _missing(value):
        return "n/a"
    return f"{value:.1f}" if metric == "bleu" else f"{value:.3f}"


def _round_up(value: float) -> float:
    """``value`` rounded up to one significant digit (0.000999 -> 0.001, 0.00498 -> 0.005)."""
    exponent = math.floor(math.log10(value))
    scale = 10.0 ** exponent
    return math.ceil(round(value / scale, 9)) * scale


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def comparison_texts(family: pd.DataFrame) -> pd.Series:
    """``p=0.063, Holm p=0.380`` for each row of one family of comparisons (rows of one table),
    empty where the row has no test (the base model).

    Reads ``p_value_vs_base``, and ``bootstrap_resamples`` for the floor when present; Holm is
    computed within ``family`` (the ``p_holm_vs_base`` a frame carries may belong to another)."""
    p = family["p_value_vs_base"].astype(float).to_numpy()
    resamples = (
        family["bootstrap_resamples"].tolist() if "bootstrap_resamples" in family else [None] * len(p)
    )
    adjusted, bound = holm(p), holm_is_bound(p, resamples)
    texts = [
        "" if np.isnan(raw) else f"{format_p(raw, r)}, Holm {format_p(adj, r, bound=b)}"
        for raw, adj, b, r in zip(p, adjusted, bound, resamples, strict=True)
    ]
    return pd.Series(texts, index=family.index, dtype=object)


def family_note(family: pd.DataFrame, scope: str) -> str:
    """The sentence that states a table's family of comparisons and how its p-values read."""
    tests = int(family["p_value_vs_base"].notna().sum())
    resamples = family["bootstrap_resamples"].dropna() if "bootstrap_resamples" in family else []
    floor = ""
    if len(resamples):
        b = int(resamples.iloc[0])
        floor = (
            f" With {b} resamples the smallest p-value is 1/({b}+1), printed as "
            f"`{format_p(p_floor(b), b)}`; Holm values computed from it are upper bounds (`≤`)."
        )
    return (
        f"p: two-sided paired bootstrap against the base model. Holm p: adjusted over the family "
        f"of the {tests} comparisons with the base model {scope}, which bounds the chance of any "
        f"false positive among them.{floor}"
    )
