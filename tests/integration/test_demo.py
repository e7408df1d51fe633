"""``mcpvs demo`` run twice, as a new user would: the second run resumes and recomputes nothing,
and its reports open in Chromium with every figure and a drawn viewer.

To keep CI short the demo here has one participant on a 2 mm copy of its phantom (the real
pipeline, the demo's own options: fast regions, the built-in method, then the group level);
``make demo`` runs the full one.
"""

from __future__ import annotations

import json
import shutil

import nibabel as nb
import numpy as np
import pytest

from mcpvs_bidsapp.outputs import spec

pytestmark = pytest.mark.slow


def _downsampled(phantom_from_mni):
    """phantom_from_mni at 2 mm (block means for the image, block maxima for the masks)."""

    def wrapped(**kwargs):
        imgs = phantom_from_mni(**kwargs)
        out = []
        for k, img in enumerate(imgs):
            data = np.asanyarray(img.dataobj)
            shape = tuple(s // 2 * 2 for s in data.shape)
            blocks = data[: shape[0], : shape[1], : shape[2]].reshape(
                shape[0] // 2, 2, shape[1] // 2, 2, shape[2] // 2, 2
            )
            small = blocks.mean((1, 3, 5)) if k == 0 else blocks.max((1, 3, 5))
            affine = img.affine.copy()
            affine[:3, :3] *= 2
            affine[:3, 3] += 0.5 * np.diag(img.affine)[:3]
            out.append(nb.Nifti1Image(small.astype(data.dtype), affine))
        return tuple(out)

    return wrapped


@pytest.fixture(scope="module")
def demo_twice(tmp_path_factory):
    from mcpvs_bidsapp.cli import demo
    from mcpvs_bidsapp.synthetic import phantoms

    dest = tmp_path_factory.mktemp("demo") / "demo"
    patch = pytest.MonkeyPatch()
    patch.setattr(demo, "DEMO_PARTICIPANTS", {"01": demo.DEMO_PARTICIPANTS["02"]})
    patch.setattr(phantoms, "phantom_from_mni", _downsampled(phantoms.phantom_from_mni))
    try:
        codes = [demo.main([str(dest), "--nprocs", "2"]) for _ in range(2)]
    finally:
        patch.undo()
    return dest, codes


def _statuses(out):
    logs = sorted((out / "sub-01" / "log").glob(f"*/{spec.STATUS_FILE}"))
    return [json.loads(p.read_text()) for p in logs]


def test_a_rerun_of_the_demo_recomputes_no_step(demo_twice):
    dest, codes = demo_twice
    assert codes == [0, 0]
    first, second = _statuses(dest / "derivatives" / "mcpvs")
    steps1, steps2 = first["runs"][0]["steps"], second["runs"][0]["steps"]
    assert steps1["run"] == steps1["total"] - 1 and steps1["reused"] == 0
    # the resumed run: every step from the work dir, only the writer rewrote its files
    assert steps2 == {"total": steps1["total"], "run": 0, "reused": steps1["total"] - 1,
                      "written": 1, "failed": 0}  # fmt: skip
    marker = json.loads((dest / "mcpvs-demo.json").read_text())
    assert list(marker["participants"]) == ["01"]


def test_the_demo_mask_is_not_the_cortex(demo_twice):
    """The demo's group table scores the built-in method against the inserted truth. On fast
    regions it used to trace the WM border (full-size demo Dice 0.26 / 0.66; issue #15); with
    the deep-WM closing and the fast-regions edge rule it is 0.76 / 0.79 at 1 mm. This 2 mm
    copy measured Dice 0.20, precision 0.21 before and 0.31 / 0.52 after (at 2 mm the method
    misses most of the thin PVS: recall 0.22); with the learned cluster rule, fitted on 1 mm
    heads, Dice 0.246 (clean-checkout CI run; a loss listed in docs/builtin-method.md); with
    its refit clusters-logistic-v2 (2026-12-03) 0.256, precision 0.72, recall 0.16; with the
    fluid-relative thresholds and clusters-logistic-v3 (2026-12-06, clean-checkout CI run)
    0.208, precision 0.62, recall 0.13. The loss is the relative fluid level (the measured
    fluid ratio 0.372 against 0.355 at the absolute level): the same preprocessed copy gives
    0.250 / 0.665 with ``fluid_level_relative`` 0, 0.255 / 0.705 with both thresholds absolute
    (v3); listed in docs/builtin-method.md, and the floor sits below today's figure."""
    import csv

    dest, _ = demo_twice
    table = dest / "derivatives" / "mcpvs" / "group_manual_metrics.tsv"
    with table.open() as fh:
        (row,) = list(csv.DictReader(fh, delimiter="\t"))
    assert float(row["precision"]) > 0.4
    assert float(row["dice"]) > 0.19


def test_the_2mm_copy_carries_the_coarse_voxels_flag(demo_twice):
    """At 2 mm the method misses most PVS (above: recall 0.13), so the numbers carry the
    coarse_voxels QC flag: in the measures sidecar, the report's banner and the group
    table's qc_flags."""
    import csv

    dest, _ = demo_twice
    out = dest / "derivatives" / "mcpvs"
    (sidecar,) = (out / "sub-01" / "anat").glob(f"*_{spec.MEASURES.entities}.json")
    flags = {f["flag"]: f["message"] for f in json.loads(sidecar.read_text())["QCFlags"]}
    assert "2x2x2 mm" in flags["coarse_voxels"]
    assert flags["coarse_voxels"] in (out / "sub-01.html").read_text()
    with (out / "group_pvs.tsv").open() as fh:
        (row,) = list(csv.DictReader(fh, delimiter="\t"))
    assert "coarse_voxels" in row["qc_flags"].split(";")


def test_every_figure_of_the_demo_exists(demo_twice):
    from mcpvs_bidsapp.reports.layout import VIEWER, load_layout

    dest, _ = demo_twice
    out = dest / "derivatives" / "mcpvs"
    for reportlet in load_layout().participant:
        name = f"sub-01_desc-{reportlet.key}.{'js' if reportlet.key == VIEWER else 'png'}"
        assert (spec.figures_dir(out, "01") / name).stat().st_size > 1000, name
    page = (out / "sub-01.html").read_text()
    assert "not drawn" not in page and "viewer not built" not in page
    group = (out / spec.GROUP_REPORT).read_text()
    for name in ("pvsnm_by_region", "pvsnm_by_vendor", "frequency_map", "manual_volume"):
        assert f"{spec.GROUP_FIGURES_DIR}/{name}." in group, name
    assert (out / spec.GROUP_FREQUENCY_MAP).is_file()
    assert "sub-01.html" in group  # the participant table links its report


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed")
def test_the_demo_reports_open_in_chromium_and_the_viewer_draws(demo_twice, tmp_path):
    from test_report_browser import ARTEFACTS, _not_blank, render

    dest, _ = demo_twice
    copy = tmp_path / "copied"
    shutil.copytree(dest / "derivatives" / "mcpvs", copy)
    participant = render(copy / "sub-01.html", viewer_shots=tmp_path / "shots")
    assert not participant["errors"], participant["errors"]
    assert all(complete and width for _, complete, width in participant["images"])
    assert [v["state"] for v in participant["viewers"]] == ["ready"]
    assert _not_blank(tmp_path / "shots" / "viewer-0.png")
    shutil.copyfile(tmp_path / "shots" / "viewer-0.png", ARTEFACTS / "demo-viewer.png")
    group = render(copy / spec.GROUP_REPORT, screenshot=ARTEFACTS / "demo-group.png")
    assert not group["errors"], group["errors"]
    assert group["images"] and all(c and w for _, c, w in group["images"])
