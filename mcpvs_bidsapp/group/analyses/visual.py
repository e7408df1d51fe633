"""PVS volume against rated visual scores: Spearman, ANOVA, Dunnett's T3 (section 2.7, Fig. 2)."""

from __future__ import annotations

import pandas as pd

from mcpvs_bidsapp.errors import GroupError
from mcpvs_bidsapp.group import stats
from mcpvs_bidsapp.group.analyses import REGION_KEYS, REGIONS, Context, pyplot, resolve_columns

KEY = "visual"


def parse_visual_columns(specs: list[str]) -> list[tuple[str, str]]:
    """``BG=bg_score`` -> (BG, bg_score); a bare column gets its region from a ``bg``/``wm``
    name prefix, else whole_brain."""
    out = []
    for item in specs:
        region, sep, column = item.partition("=")
        if not sep:
            column = item
            low = item.lower()
            region = "BG" if low.startswith("bg") else "WM" if low.startswith("wm") else ""
            region = region or "whole_brain"
        canon = {r.lower(): r for r in REGIONS}.get(region.strip().lower())
        if canon is None:
            raise GroupError(f"--visual-score-columns {item}: region must be BG, WM or whole_brain")
        out.append((canon, column.strip()))
    return out


def rated_pairs(ctx: Context) -> list[tuple[str, str]]:
    """(region, participants.tsv column) of every --visual-score-columns entry (checked)."""
    pairs = parse_visual_columns(ctx.settings.group.visual_score_columns)
    columns = resolve_columns(ctx.table, [c for _, c in pairs], "--visual-score-columns")
    return [(region, col) for (region, _), col in zip(pairs, columns, strict=True)]


def label(value) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:g}"


def run(ctx: Context) -> dict | None:
    if not ctx.settings.group.visual_score_columns:
        return None
    pairs = rated_pairs(ctx)
    cross = ctx.cross
    min_n = ctx.settings.group.min_group_size
    sp_rows, an_rows, ph_frames = [], [], []
    vendors = ["all"] + (ctx.vendors if len(ctx.vendors) > 1 else [])
    for region, column in pairs:
        volume = f"{REGION_KEYS[region]}_pvs_volume_mm3"
        for v in vendors:
            sub = cross if v == "all" else cross[cross["vendor"] == v]
            score = pd.to_numeric(sub[column], errors="coerce")
            head = {"region": region, "score_column": column, "vendor": v}
            sp_rows.append(head | stats.spearman(sub[volume], score))
            kept, dropped = stats.split_groups(sub[volume], score, min_n)
            kept = {label(k): x for k, x in kept.items()}
            an_rows.append(
                head
                | {
                    "groups": ",".join(kept) or "n/a",
                    "excluded_groups": ",".join(
                        f"{label(k)}(n={len(x)})" for k, x in dropped.items()
                    )
                    or "n/a",
                }
                | stats.oneway_anova(kept)
            )
            if len(kept) >= 2:
                ph = stats.dunnett_t3(kept)
                for i, (key, val) in enumerate(head.items()):
                    ph.insert(i, key, val)
                ph_frames.append(ph)
            elif v == "all":
                ctx.note(
                    KEY,
                    f"{region} ({column}): fewer than two score groups of at least {min_n} "
                    "participants (--min-group-size); no ANOVA or post-hoc test",
                )
    spearman = pd.DataFrame(sp_rows)
    anova = pd.DataFrame(an_rows)
    posthoc = pd.concat(ph_frames, ignore_index=True) if ph_frames else pd.DataFrame()
    ctx.write(spearman, "group_stats_visual_spearman")
    ctx.write(anova, "group_stats_visual_anova")
    ctx.write(posthoc, "group_stats_visual_posthoc")
    figures = [_figure(ctx, cross, region, column, posthoc) for region, column in pairs]
    return {
        "spearman": spearman,
        "anova": anova,
        "posthoc": posthoc,
        "pairs": pairs,
        "volume_figures": figures,
        "min_group_size": min_n,
    }


def _stars(p: float) -> str:
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


def _figure(ctx: Context, cross, region: str, column: str, posthoc) -> str:
    from mcpvs_bidsapp.group.analyses import strip

    plt = pyplot()
    key = REGION_KEYS[region]
    score = pd.to_numeric(cross[column], errors="coerce")
    levels = sorted(score.dropna().unique())
    data = [cross.loc[score == lv, f"{key}_pvs_volume_mm3"].dropna().to_numpy() for lv in levels]
    fig, ax = plt.subplots(figsize=(4.8, 3.8))
    strip(ax, data, [label(lv) for lv in levels])
    ax.set_xlabel(f"rated score ({column})")
    ax.set_ylabel(f"{region} PVS volume (mm³)")
    if not posthoc.empty:
        ph = posthoc[
            (posthoc["region"] == region)
            & (posthoc["score_column"] == column)
            & (posthoc["vendor"] == "all")
        ]
        top = max((d.max() for d in data if len(d)), default=1.0)
        step = 0.07 * top
        pos = {label(lv): i + 1 for i, lv in enumerate(levels)}
        level_y = top
        for rec in ph.itertuples():
            star = _stars(rec.p_adj)
            if not star or rec.group1 not in pos or rec.group2 not in pos:
                continue
            level_y += step
            x1, x2 = pos[rec.group1], pos[rec.group2]
            ax.plot([x1, x1, x2, x2], [level_y - step / 3, level_y, level_y, level_y - step / 3],
                    color="k", lw=0.8)  # fmt: skip
            ax.text((x1 + x2) / 2, level_y, star, ha="center", va="bottom")
    name = f"visual_volume_{key}_{column}"
    ctx.figure(fig, name)
    return name
