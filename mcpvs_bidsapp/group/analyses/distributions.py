"""PVSnm by region and by scanner vendor: dots for every T1w, boxes only for large groups."""

from __future__ import annotations

from mcpvs_bidsapp.group.analyses import Context, pyplot, strip

KEY = "distributions"
REGION_COLUMNS = (("bg_pvsnm", "BG"), ("wm_pvsnm", "WM"), ("whole_brain_pvsnm", "whole brain"))


def run(ctx: Context) -> dict:
    plt = pyplot()
    table = ctx.table
    regions = [(c, n) for c, n in REGION_COLUMNS if c in table]
    fig, axes = plt.subplots(1, len(regions), figsize=(3.0 * len(regions), 3.4), squeeze=False)
    for ax, (col, name) in zip(axes[0], regions, strict=True):
        strip(ax, [table[col].to_numpy()], [name])
        ax.set_ylabel("PVSnm (ppm of ICV)")
    fig.tight_layout()
    figures = [ctx.figure(fig, "pvsnm_by_region")]

    vendors = sorted(table["vendor"].unique())
    fig, axes = plt.subplots(
        1, len(regions), figsize=(max(3.2, 1.1 * len(vendors) + 1.2) * len(regions), 3.6),
        squeeze=False,
    )  # fmt: skip
    for ax, (col, name) in zip(axes[0], regions, strict=True):
        strip(ax, [table.loc[table["vendor"] == v, col].to_numpy() for v in vendors], vendors)
        ax.set_title(name)
        ax.set_ylabel("PVSnm (ppm of ICV)")
    fig.tight_layout()
    figures.append(ctx.figure(fig, "pvsnm_by_vendor"))
    counts = (
        table.groupby("vendor")["participant_id"].nunique().rename("participants").reset_index()
    )
    return {"figures": ["pvsnm_by_region", "pvsnm_by_vendor"], "vendor_counts": counts}
