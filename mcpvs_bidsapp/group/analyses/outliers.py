"""Outliers: PVSnm outside Tukey's fences (1.5 IQR) in a region, flagged per T1w."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mcpvs_bidsapp.group import stats
from mcpvs_bidsapp.group.analyses import REGION_KEYS


def flag(table: pd.DataFrame) -> pd.DataFrame:
    """The table with ``outlier_regions`` (comma-separated region keys, or n/a) last."""
    flags = [
        np.where(stats.tukey_outliers(table[f"{key}_pvsnm"]), key, "")
        for key in REGION_KEYS.values()
        if f"{key}_pvsnm" in table
    ] or [np.full(len(table), "")]
    table["outlier_regions"] = [
        ",".join(f for f in row if f) or "n/a" for row in zip(*flags, strict=True)
    ]
    return table[[c for c in table.columns if c != "outlier_regions"] + ["outlier_regions"]]
