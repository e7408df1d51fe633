"""Multiple linear regression of PVSnm on covariates, with and without vendor (Table 3)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mcpvs_bidsapp.group import stats
from mcpvs_bidsapp.group.analyses import Context, resolve_columns

KEY = "regression"
OUTCOMES = ("bg_pvsnm", "wm_pvsnm")


def run(ctx: Context) -> dict | None:
    if not ctx.settings.group.covariates:
        return None
    covariates = resolve_columns(ctx.table, ctx.settings.group.covariates, "--covariates")
    cross = ctx.cross
    vendor = "vendor" if len(ctx.vendors) > 1 else None
    # an unknown vendor is a missing value for the models, not a vendor of its own
    frame = cross.assign(vendor=cross["vendor"].replace("n/a", np.nan))
    frames = []
    for outcome in OUTCOMES:
        models = [("covariates", None)] + ([("covariates+vendor", "vendor")] if vendor else [])
        for name, vcol in models:
            res, notes = stats.regression(frame, outcome, covariates, vcol)
            for note in notes:
                ctx.note(KEY, note if "reference level" in note else f"{outcome} ({name}): {note}")
            if not res.empty:
                res.insert(1, "model", name)
                frames.append(res)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    ctx.write(table, "group_stats_regression")
    return {"table": table, "covariates": list(ctx.settings.group.covariates)}
