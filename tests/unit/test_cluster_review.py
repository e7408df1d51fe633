"""The visual-review score of benchmarks/builtin_method_real_pvs.py (``review``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import builtin_method_real_pvs as rp  # noqa: E402


def test_each_cluster_takes_the_label_reviewed_within_one_voxel(tmp_path, monkeypatch):
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-10.0, -10.0, -10.0]  # world = index - 10
    mask = np.zeros((20, 20, 20), np.uint8)
    mask[2, 2, 2:5] = 1  # cluster A
    mask[10, 10, 10] = 1  # cluster B
    mask[15, 15, 15] = 1  # cluster C: never reviewed
    labels = [
        [-8.0, -8.0, -6.0, 1, 3],  # on A
        [-8.0, -8.0, -8.0, 2, 3],  # also A: PVS-like wins over unsure
        [1.0, 0.0, 0.0, 0, 1],  # one voxel beside B
        [5.0, 5.0, 0.0, 1, 1],  # on no cluster
    ]
    path = tmp_path / "review.json"
    path.write_text(json.dumps({"heads": {"h": {"labels": labels}}}))
    monkeypatch.setattr(rp, "CLUSTER_REVIEW", path)
    dots = tmp_path / "dots.json"
    dots.write_text(json.dumps({"heads": {}}))
    monkeypatch.setattr(rp, "LABELS", dots)
    out = rp.score_review(mask, affine, "h")
    assert (out["pvs_like"], out["not_pvs"], out["unsure"], out["unreviewed"]) == (1, 1, 0, 1)
    assert out["pvs_like_fraction"] == 0.5
    assert out["single_voxel"] == {"clusters": 2, "pvs_like": 0, "not_pvs": 1, "unsure": 0}
    assert out["unsure_on_labelled_pvs"] == 0 and out["either_pvs_like_fraction"] == 0.5
    assert rp.score_review(mask, affine, "other head") is None


def test_the_dot_review_can_lift_an_unsure_cluster_not_a_rejected_one(tmp_path, monkeypatch):
    """``either``: a cluster left "unsure" on the mask's views counts as PVS-like when the
    independent dot review labelled a PVS-like dot on it; one judged "not" in either review
    never does."""
    affine = np.eye(4)
    mask = np.zeros((20, 20, 20), np.uint8)
    mask[2, 2, 2] = mask[8, 8, 8] = mask[14, 14, 14] = 1  # three single-voxel clusters
    review, dots = tmp_path / "review.json", tmp_path / "dots.json"
    review.write_text(
        json.dumps(
            {
                "heads": {
                    "h": {
                        "labels": [
                            [2.0, 2.0, 2.0, 2, 1],
                            [8.0, 8.0, 8.0, 2, 1],
                            [14.0, 14.0, 14.0, 0, 1],
                        ]
                    }
                }
            }
        )
    )
    dots.write_text(
        json.dumps({"heads": {"h": {"labels": [[2.0, 2.0, 3.0, 1], [14.0, 14.0, 14.0, 1]]}}})
    )
    monkeypatch.setattr(rp, "CLUSTER_REVIEW", review)
    monkeypatch.setattr(rp, "LABELS", dots)
    out = rp.score_review(mask, affine, "h")
    assert (out["pvs_like"], out["unsure"], out["not_pvs"]) == (0, 2, 1)
    assert out["single_voxel"]["clusters"] == 3 and out["unsure_on_labelled_pvs"] == 1
    assert out["either_pvs_like_fraction"] == 1 / 3


def test_the_shipped_review_covers_the_philips_head():
    doc = json.loads(rp.CLUSTER_REVIEW.read_text())
    head = doc["heads"]["philips_adni_sag3d_mprage_t1w"]
    rows = head["labels"]
    # one row per cluster of the reviewed mask, plus the rows added for later masks' new clusters
    assert len(rows) == head["mask"]["clusters"] + head["mask"].get("added_rows", 0)
    assert {int(r[3]) for r in rows} <= {0, 1, 2}
