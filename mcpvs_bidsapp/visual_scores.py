"""Estimated visual PVS scores: the paper's rating rules applied to a PVS mask.

Huang et al. (NeuroImage 2024, section 2.6, after Zhu et al. 2010) rated PVS on T1w images:

* basal ganglia (BG): 1 if fewer than 5 PVS, 2 for 5-10, 3 for more than 10 countable PVS,
  4 when they are uncountable;
* white matter (WM): 1 if fewer than 10 PVS in total, 2 for more than 10 in total but no more
  than 10 in any single section, 3 for 10-20 in the section with the most PVS, 4 for more
  than 20 in any single section.

A rater counts on axial sections, so the rules are applied here to the axial sections of the
image reoriented to RAS (whatever axis the image was stored along): on each section the PVS of
the region are counted as 8-connected components (a tube crossing the section is one dot, a
tube lying in it one line), and the section with the most of them is the one a rater would
use. The BG score is that section's count; the WM score combines it with the WM total, the
number of 3-D PVS clusters whose centroid lies in the WM (``pvs_count`` of the WM row of the
measures). With no PVS at all the BG section is the one where the BG is largest (where a rater
would look), and the WM section the one where the WM is largest.

What the paper leaves to the rater is fixed here and documented as ours, not the paper's:
"uncountable" BG PVS are more than :data:`BG_UNCOUNTABLE` on the section; a WM total of
exactly 10 counts as "more than 10" (the paper's bounds leave 10 itself unassigned), and a
section with exactly 10 as "no more than 10".
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nb
import numpy as np
from scipy import ndimage

from mcpvs_bidsapp.outputs.spec import CONNECTIVITY_26, Region

#: more BG PVS than this on the rating section count as "uncountable" (score 4); the paper
#: gives no number, a rater stops counting one by one about here
BG_UNCOUNTABLE = 20
#: 8-connectivity within a section (the 2-D counterpart of the clusters' 26-connectivity)
CONNECTIVITY_8 = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class VisualEstimate:
    """The estimated score of one region and where it was read."""

    region: str
    score: int
    count: int  #: PVS counted on the rating section
    section: int  #: its axial index in the image reoriented to RAS (as the report numbers it)
    total: int | None = None  #: WM: PVS clusters in the whole WM


def bg_score(count: int) -> int:
    """BG rule: <5 -> 1, 5-10 -> 2, >10 countable -> 3, uncountable -> 4."""
    if count > BG_UNCOUNTABLE:
        return 4
    if count > 10:
        return 3
    if count >= 5:
        return 2
    return 1


def wm_score(total: int, most_in_a_section: int) -> int:
    """WM rule: total <10 -> 1; else max per section <=10 -> 2, 11-20 -> 3, >20 -> 4."""
    if most_in_a_section > 20:
        return 4
    if most_in_a_section > 10:
        return 3
    if total >= 10:
        return 2
    return 1


def to_ras(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``data`` reoriented to the closest RAS orientation: axis 2 runs inferior to superior,
    so ``[:, :, k]`` is an axial section whatever the storage order."""
    ornt = nb.orientations.io_orientation(affine)
    return nb.orientations.apply_orientation(np.asanyarray(data), ornt)


def section_counts(mask: np.ndarray) -> np.ndarray:
    """PVS per axial section of a RAS-oriented mask (8-connected components)."""
    counts = np.zeros(mask.shape[2], dtype=int)
    for k in np.flatnonzero(mask.any(axis=(0, 1))):
        counts[k] = ndimage.label(mask[:, :, k], structure=CONNECTIVITY_8)[1]
    return counts


def _rating_section(counts: np.ndarray, region: np.ndarray) -> int:
    """The section with the most PVS; ties and no PVS go to where the region is largest."""
    area = region.sum(axis=(0, 1))
    return int(np.lexsort((area, counts))[-1])


def estimate(
    mask: np.ndarray, dseg: np.ndarray, affine: np.ndarray, wm_total: int | None = None
) -> dict[str, VisualEstimate]:
    """BG and WM estimates for a PVS mask and its regions image (same grid).

    ``wm_total``: PVS clusters in the WM (the measures' count); counted here when not given.
    """
    pvs = to_ras(mask, affine) > 0
    regions = to_ras(dseg, affine)
    out: dict[str, VisualEstimate] = {}
    bg = regions == Region.BG
    counts = section_counts(pvs & bg)
    k = _rating_section(counts, bg)
    out[Region.BG.label] = VisualEstimate(
        Region.BG.label, bg_score(int(counts[k])), int(counts[k]), k
    )
    wm = regions == Region.WM
    counts = section_counts(pvs & wm)
    k = _rating_section(counts, wm)
    if wm_total is None:
        wm_total = int(ndimage.label(pvs & wm, structure=CONNECTIVITY_26)[1])
    out[Region.WM.label] = VisualEstimate(
        Region.WM.label, wm_score(int(wm_total), int(counts[k])), int(counts[k]), k, int(wm_total)
    )
    return out
