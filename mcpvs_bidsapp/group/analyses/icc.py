"""Longitudinal consistency: ICCs of PVS volume across sessions (section 2.8)."""

from __future__ import annotations

import pandas as pd

from mcpvs_bidsapp.group import stats
from mcpvs_bidsapp.group.analyses import REGION_KEYS, Context

KEY = "icc"


def run(ctx: Context) -> dict | None:
    frame = icc_table(ctx.table, ctx.settings.group.min_group_size, ctx)
    if frame is None:
        return None
    ctx.write(frame, "group_stats_icc")
    return {"table": frame}


def icc_table(table: pd.DataFrame, min_n: int, ctx: Context) -> pd.DataFrame | None:
    """ICCs of PVS volume across sessions, for participants with the usual number of them."""
    long = table[table["session"] != "n/a"].drop_duplicates(["participant_id", "session"])
    if long.empty:
        return None
    counts = long.groupby("participant_id")["session"].count()
    counts = counts[counts >= 2]
    if counts.empty:
        return None
    k = int(counts.mode().max())
    subjects = counts[counts >= k].index
    long = long[long["participant_id"].isin(subjects)].copy()
    long["timepoint"] = long.groupby("participant_id").cumcount()
    long = long[long["timepoint"] < k]
    skipped = int((counts < k).sum())
    if skipped:
        ctx.note(KEY, f"ICC: {skipped} participant(s) with fewer than {k} sessions left out")
    vendors = long.groupby("participant_id")["vendor"].first()
    frames = []
    for region, key in REGION_KEYS.items():
        wide = long.pivot(
            index="participant_id", columns="timepoint", values=f"{key}_pvs_volume_mm3"
        ).dropna()
        sessions = ",".join(
            long.groupby("timepoint")["session"].agg(lambda s: "/".join(sorted(set(s))))
        )
        for v in ["all"] + (sorted(vendors.unique()) if vendors.nunique() > 1 else []):
            sub = wide if v == "all" else wide[vendors.reindex(wide.index) == v]
            if len(sub) < max(2, min_n if v != "all" else 2):
                continue
            res = stats.icc(sub.to_numpy())
            res.insert(0, "region", region)
            res.insert(1, "vendor", v)
            res["sessions"] = sessions
            frames.append(res)
    return pd.concat(frames, ignore_index=True) if frames else None
