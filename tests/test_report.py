"""The participant report: valid, self-contained HTML for a successful and a failed run."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from _report_data import RUN_ID, make_report_dataset

from mcpvs_bidsapp.reports.boilerplate import methods_boilerplate, references
from mcpvs_bidsapp.reports.participant import build_participant_report, t1w_metadata

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}  # fmt: skip
FIGURES = ["brainmask", "preproc", "regions", "pvsaxial", "pvscoronal", "pvssagittal",
           "pvszoomBG", "pvszoomCSO"]  # fmt: skip


class StrictHTML(HTMLParser):
    """Well-formedness checks that a browser would silently repair: they must not be needed."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.ids: list[str] = []
        self.imgs: list[str] = []
        self.links: list[str] = []
        self.doctype = False
        self.text: list[str] = []

    def handle_decl(self, decl):
        self.doctype |= decl.lower() == "doctype html"

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "img":
            self.imgs.append(attrs.get("src", ""))
            if not attrs.get("alt"):
                self.problems.append("img without alt")
        if tag in ("a", "link") and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "script" and attrs.get("src"):
            self.links.append(attrs["src"])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            if tag in self.stack:
                while self.stack.pop() != tag:
                    pass
            return
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def check_page(path: Path) -> StrictHTML:
    """Parse a report and assert what every report must satisfy; return the parse."""
    parser = StrictHTML()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    assert parser.doctype, "no <!DOCTYPE html>"
    assert not parser.problems, parser.problems
    assert not parser.stack, f"unclosed tags: {parser.stack}"
    assert len(parser.ids) == len(set(parser.ids)), "duplicate ids"
    for href in parser.links:
        assert not href.startswith(("http:", "https:", "//", "/")), f"not offline: {href}"
        if href.startswith("#"):
            assert href[1:] in parser.ids, f"dangling anchor {href}"
    for src in parser.imgs:
        assert not src.startswith(("http:", "https:", "//", "/", "data:")), src
        assert (path.parent / src).is_file(), f"missing image {src}"
    return parser


@pytest.fixture(scope="module")
def reports(tmp_path_factory, shared_data):
    tmp = tmp_path_factory.mktemp("report")
    bids, out = make_report_dataset(tmp, shared_data)
    pages = {label: build_participant_report(out, label, bids) for label in ("01", "02")}
    return bids, out, pages


@pytest.mark.slow  # real heads: builds the derivatives and two reports
def test_successful_participant_report(reports):
    _, out, pages = reports
    assert pages["01"] == out / "sub-01.html"
    page = check_page(pages["01"])
    text = " ".join(page.text)
    # one PNG per reportlet, named with the T1w prefix, under sub-01/figures
    assert sorted(page.imgs) == sorted(f"sub-01/figures/sub-01_desc-{k}.png" for k in FIGURES)
    # summary: scanner from the sidecar, method and its provenance, the measures table
    assert "Philips" in text and "Field strength (T)" in text
    assert "vesselness" in text and "scales_mm" in text
    measures = pd.read_csv(out / "sub-01/anat/sub-01_desc-pvs_measures.tsv", sep="\t")
    census = pd.read_csv(out / "sub-01/anat/sub-01_desc-pvs_clusters.tsv", sep="\t")
    whole = measures.set_index("region").loc["whole_brain"]
    assert whole.pvs_count == len(census) == 8  # the fixture's 3 BG + 5 WM tubes
    assert f"{whole.pvs_volume_mm3:.4g}" in text or f"{whole.pvs_volume_mm3:,.0f}" in text
    assert f"{whole.icv_mm3:,.0f}" in text
    assert "The trained mcPVS-Net model (an nnU-Net (Isensee et al., 2021)) was not used" in text
    assert "not from Samseg (Puonti et al., 2016)" in text
    assert "Tustison" in text and "Gorgolewski" in text and "Reinhold" in text
    assert "No errors." in text


@pytest.mark.slow  # real heads: builds the derivatives and two reports
def test_failed_participant_report_shows_what_failed(reports):
    _, out, pages = reports
    page = check_page(pages["02"])
    text = " ".join(page.text)
    assert "failed" in text and "vesselness failed (step t1w_sub_02.segment_wf)" in text
    crash = f"sub-02/log/{RUN_ID}/crash-20261125-120500-root-vesselness-ab12.txt"
    assert crash in page.links and "segment_wf.vesselness" in text
    raw = pages["02"].read_text()
    assert "<script>alert(1)</script>" not in raw and "&lt;script&gt;" in raw  # escaped
    assert page.imgs == ["sub-02/figures/sub-02_desc-input.png"]  # the input is still shown


@pytest.mark.slow  # real heads: builds the derivatives and two reports
def test_report_folder_can_be_copied(reports, tmp_path):
    _, out, _ = reports
    copy = tmp_path / "elsewhere"
    shutil.copytree(out, copy)
    for label in ("01", "02"):
        check_page(copy / f"sub-{label}.html")  # every image resolves in the copy


@pytest.mark.slow  # real heads: builds the derivatives and two reports
def test_missing_derivative_still_gives_a_report(reports, tmp_path):
    bids, out, _ = reports
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    (copy / "sub-01/anat/sub-01_desc-regions_dseg.nii.gz").unlink()
    page = check_page(build_participant_report(copy, "01", bids))
    text = " ".join(page.text)
    assert "not drawn: missing sub-01_desc-regions_dseg.nii.gz" in text
    assert "sub-01/figures/sub-01_desc-pvsaxial.png" in page.imgs
    assert "sub-01/figures/sub-01_desc-regions.png" not in page.imgs
    assert not (copy / "sub-01/figures/sub-01_desc-regions.png").exists()  # no stale figure


@pytest.mark.slow  # real heads: builds the derivatives and two reports
def test_reports_only_rebuilds_from_disk(reports, tmp_path):
    from mcpvs_bidsapp.cli.run import main

    bids, out, _ = reports
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    (copy / "sub-01.html").unlink()
    shutil.rmtree(copy / "sub-01" / "figures")
    code = main([str(bids), str(copy), "participant", "--participant-label", "01",
                 "--reports-only"])  # fmt: skip
    assert code == 0
    page = check_page(copy / "sub-01.html")
    assert len(page.imgs) == len(FIGURES)


def test_participant_never_run(tmp_path):
    page = check_page(build_participant_report(tmp_path, "09"))
    assert "No mcpvs_status.json found for sub-09" in " ".join(page.text)


def test_sidecar_inheritance(tmp_path):
    (tmp_path / "sub-01" / "anat").mkdir(parents=True)
    (tmp_path / "T1w.json").write_text(json.dumps({"Manufacturer": "GE", "EchoTime": 0.003}))
    (tmp_path / "sub-01" / "anat" / "sub-01_run-1_T1w.json").write_text(
        json.dumps({"Manufacturer": "Siemens", "MagneticFieldStrength": 3})
    )
    (tmp_path / "sub-01" / "anat" / "sub-01_run-2_T1w.json").write_text(
        json.dumps({"Manufacturer": "Philips"})
    )
    meta = t1w_metadata(tmp_path, "sub-01/anat/sub-01_run-1_T1w.nii.gz")
    assert meta == {"Manufacturer": "Siemens", "EchoTime": 0.003, "MagneticFieldStrength": 3}


def test_boilerplate_cites_what_ran():
    refs = references()
    assert {"huang2024mcpvsnet", "isensee2021nnunet", "puonti2016samseg", "tustison2010n4",
            "reinhold2019fcm", "gorgolewski2011nipype"} <= set(refs)  # fmt: skip
    nnunet = methods_boilerplate({"Method": "nnunet", "Regions": "samseg",
                                  "Model name": "mcpvsnet"})  # fmt: skip
    text = " ".join(nnunet["paragraphs"])
    assert "(Isensee et al., 2021)" in text and "(Puonti et al., 2016)" in text
    assert len(nnunet["references"]) == len(set(nnunet["references"]))
    assert any(r.startswith("Isensee F, Jaeger PF") for r in nnunet["references"])


def test_nnunet_provenance_is_shown(tmp_path):
    """A model's name, checksum, folds and device reach the summary and the methods text."""
    from mcpvs_bidsapp.reports.participant import _provenance

    sidecar = {
        "Method": "nnunet",
        "Model": {"Name": "mcpvsnet", "Checksum": "sha256:abc123", "Configuration": "3d_fullres",
                  "Folds": [0, 1, 2, 3, 4], "Device": "cuda"},
        "RegionsMethod": "samseg",
    }  # fmt: skip
    prov = _provenance(sidecar)
    assert prov["Model checksum"] == "sha256:abc123" and prov["Model folds"] == "0, 1, 2, 3, 4"
    text = " ".join(methods_boilerplate(prov)["paragraphs"])
    assert "mcpvsnet (checksum sha256:abc123; configuration 3d_fullres; folds 0, 1, 2, 3, 4)" in (
        text
    )


def test_boilerplate_says_which_brain_mask_and_n4_ran():
    """Samseg's mask and the authors' whole-image N4 with a model; deepbet and -x otherwise."""
    from mcpvs_bidsapp.outputs.provenance import N4Mask

    model = " ".join(methods_boilerplate({
        "Method": "nnunet", "Regions": "samseg", "N4": N4Mask.WHOLE_IMAGE.description,
    }, n4_mask=N4Mask.WHOLE_IMAGE)["paragraphs"])  # fmt: skip
    assert "brain-extracted with Samseg (Puonti et al., 2016)" in model
    assert "with the whole field of view as its mask" in model and "deepbet" not in model
    builtin = " ".join(methods_boilerplate({
        "Method": "vesselness", "Regions": "fast", "N4": N4Mask.BRAIN.description,
    }, n4_mask=N4Mask.BRAIN)["paragraphs"])  # fmt: skip
    assert "brain-extracted with deepbet" in builtin and "N4 (Tustison" in builtin
    assert "within the brain mask" in builtin and "whole field of view" not in builtin


def test_boilerplate_without_any_success_claims_no_segmentation():
    text = " ".join(methods_boilerplate({})["paragraphs"])
    assert "No T1w image of this participant was segmented" in text
    assert "regions method" not in text and "Frangi" not in text
