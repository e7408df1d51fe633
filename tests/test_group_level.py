"""``mcpvs ... group`` on synthetic cohorts with known truth (planted effects, failures, ...)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mcpvs_bidsapp.config import Settings
from mcpvs_bidsapp.errors import GroupError, McpvsError
from mcpvs_bidsapp.group.collect import collect, normalise_vendor
from mcpvs_bidsapp.group.run import parse_visual_columns, run_group
from mcpvs_bidsapp.outputs.read import SidecarIndex
from mcpvs_bidsapp.synthetic.cohort import write_cohort


def _settings(root: Path, **kwargs) -> Settings:
    return Settings.from_options(
        root / "bids", root / "out", "group", work_dir=root / "work", **kwargs
    )


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)


@pytest.fixture(scope="module")
def aged_cohort(tmp_path_factory):
    """150 participants, PVSnm rising 3 ppm/year (BG) and 18 ppm/year (WM) with age,
    4 failed participants, 8 with manual masks."""
    root = tmp_path_factory.mktemp("aged")
    truth = write_cohort(
        root / "out", root / "bids", n=150, seed=11, age_effect=3.0, n_failed=4, n_manual=8
    )
    settings = _settings(
        root,
        covariates=["age", "hypertension", "wmh_norm"],
        visual_score_columns=["BG=bg_score", "wm_score"],
        manual_masks=root / "bids" / "derivatives" / "manual",
    )
    assert run_group(settings) == 0
    return root, truth


def test_planted_age_effect_is_found(aged_cohort):
    root, _ = aged_cohort
    reg = _read(root / "out" / "group_stats_regression.tsv")
    assert set(reg["model"]) == {"covariates", "covariates+vendor"}
    for outcome in ("bg_pvsnm", "wm_pvsnm"):
        for model in ("covariates", "covariates+vendor"):
            age = reg[(reg.outcome == outcome) & (reg.model == model) & (reg.term == "age")]
            assert len(age) == 1
            assert age["p"].iloc[0] < 0.05
            assert age["beta_std"].iloc[0] > 0
            assert age["beta_std_ci_low"].iloc[0] > 0
            assert age["n"].iloc[0] == 146  # 150 minus the 4 failed participants
    assert reg["term"].str.startswith("vendor[T.").any()
    assert (reg["r2"] > 0).all() and (reg["r2"] < 1).all()


def test_null_cohort_has_no_significant_age_effect(tmp_path):
    # One fixed draw (seed 7). Any single null cohort is significant with probability 0.05
    # (seeds 5 and 6 are such draws for WM), so the false-positive *rate* is checked in the
    # next test as well.
    write_cohort(tmp_path / "out", tmp_path / "bids", n=150, seed=7, age_effect=0.0)
    assert run_group(_settings(tmp_path, covariates=["age"])) == 0
    reg = _read(tmp_path / "out" / "group_stats_regression.tsv")
    age = reg[reg.term == "age"]
    assert len(age) == 4  # BG/WM x with/without vendor
    assert (age["p"] > 0.05).all()
    assert (age["beta_std_ci_low"] < 0).all() and (age["beta_std_ci_high"] > 0).all()


def test_null_false_positive_rate_is_nominal():
    """200 null cohorts through the same regression: about 5 % reject at alpha 0.05."""
    from mcpvs_bidsapp.group.stats import regression

    rng = np.random.default_rng(0)
    rejections = 0
    for _ in range(200):
        frame = pd.DataFrame(
            {
                "age": rng.uniform(55, 90, 100),
                "vendor": rng.choice(["GE", "Philips", "Siemens"], 100),
            }
        )
        frame["bg_pvsnm"] = rng.normal(200, 40, 100)
        res, _ = regression(frame, "bg_pvsnm", ["age"], "vendor")
        rejections += int(res.loc[res.term == "age", "p"].iloc[0] < 0.05)
    assert 2 <= rejections <= 20  # binomial(200, 0.05): 10 expected, P(outside) < 0.01


def test_cohort_table_columns_and_scanner(aged_cohort):
    root, truth = aged_cohort
    table = _read(root / "out" / "group_pvs.tsv")
    assert len(table) == len(truth) == 146
    for col in (
        "bg_pvsnm",
        "wm_pvs_volume_mm3",
        "whole_brain_pvs_count",
        "icv_mm3",
        "method",
        "model_checksum",
        "regions_method",
        "manufacturer",
        "magnetic_field_strength",
        "age",
        "hypertension",
        "vendor",
        "outlier_regions",
    ):
        assert col in table.columns, col
    merged = table.merge(truth, on="participant_id", suffixes=("", "_truth"))
    assert (merged["bg_pvs_volume_mm3"] - merged["bg_pvs_volume_mm3_truth"]).abs().max() < 1e-3
    # per-file sidecar gives the vendor, the top-level T1w.json the field strength
    assert (merged["manufacturer"] == merged["manufacturer_truth"]).all()
    assert (table["magnetic_field_strength"] == 3).all()
    assert set(table["vendor"]) == {"Siemens", "GE", "Philips"}
    assert (table["method"] == "nnunet").all()
    assert "<region>_pvsnm" in json.loads((root / "out" / "group_pvs.json").read_text())


def test_failures_are_listed(aged_cohort):
    root, truth = aged_cohort
    failures = _read(root / "out" / "group_failures.tsv")
    assert len(failures) == 4
    assert (failures["status"] == "failed").all()
    assert failures["error"].str.contains("4D").all()
    assert not set(failures["participant_id"]) & set(truth["participant_id"])


def test_visual_scores(aged_cohort):
    root, _ = aged_cohort
    sp = _read(root / "out" / "group_stats_visual_spearman.tsv")
    overall = sp[sp.vendor == "all"].set_index("region")
    assert set(overall.index) == {"BG", "WM"}
    assert (overall["rho"] > 0.3).all() and (overall["p"] < 0.001).all()
    anova = _read(root / "out" / "group_stats_visual_anova.tsv")
    assert (anova[anova.vendor == "all"]["p"] < 0.001).all()
    posthoc = _read(root / "out" / "group_stats_visual_posthoc.tsv")
    bg = posthoc[(posthoc.region == "BG") & (posthoc.vendor == "all")]
    assert len(bg) == 6  # 4 score groups
    extreme = bg[(bg.group1 == 1) & (bg.group2 == 4)].iloc[0]
    assert extreme["diff"] > 0 and extreme["p_adj"] < 0.001


def test_manual_mask_metrics_match_planted_overlap(aged_cohort):
    root, truth = aged_cohort
    per_run = _read(root / "out" / "group_manual_metrics.tsv")
    assert len(per_run) == 8
    merged = per_run.merge(truth.dropna(subset=["dice_true"]), on="participant_id")
    assert len(merged) == 8
    for metric in ("dice", "precision", "recall"):
        # the TSV keeps 6 significant digits
        assert (merged[metric] - merged[f"{metric}_true"]).abs().max() < 1e-5
    summary = _read(root / "out" / "group_stats_manual.tsv").set_index("vendor")
    assert summary.loc["all", "n"] == 8
    assert summary.loc["all", "dice_mean"] == pytest.approx(merged["dice"].mean())
    assert summary.loc["all", "volume_r"] > 0.9


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.targets: list[str] = []

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("href", "src") and value:
                self.targets.append(value)


def test_report_exists_offline_and_links_resolve(aged_cohort):
    root, _ = aged_cohort
    page = root / "out" / "group.html"
    text = page.read_text()
    assert "Dunnett" in text and "Multiple linear regression" in text
    assert not re.search(r"(src|href)=['\"]https?://", text)  # offline: no CDN
    parser = _Links()
    parser.feed(text)
    assert any(t.endswith(".svg") for t in parser.targets)
    for target in parser.targets:
        assert (page.parent / target).resolve().is_file(), target
    # outliers are flagged in the table and link to the participant's report
    table = _read(root / "out" / "group_pvs.tsv")
    for pid in table.loc[table["outlier_regions"].notna(), "participant_id"]:
        assert f"{pid}.html" in text


def test_icc_on_longitudinal_cohort(tmp_path):
    write_cohort(tmp_path / "out", tmp_path / "bids", n=40, seed=2, sessions=3, session_noise=0.05)
    assert run_group(_settings(tmp_path)) == 0
    icc = _read(tmp_path / "out" / "group_stats_icc.tsv")
    overall = icc[(icc.vendor == "all")].set_index(["region", "type"])
    assert overall.loc[("BG", "ICC2"), "n_targets"] == 40
    assert overall.loc[("BG", "ICC2"), "n_measurements"] == 3
    assert overall.loc[("BG", "ICC2"), "icc"] > 0.9
    assert overall.loc[("BG", "ICC2"), "p"] < 0.001
    # sessions are not independent: cross-sectional analyses use one row per participant
    table = _read(tmp_path / "out" / "group_pvs.tsv")
    assert len(table) == 120


def test_icc_is_low_when_sessions_disagree(tmp_path):
    write_cohort(tmp_path / "out", tmp_path / "bids", n=40, seed=2, sessions=2, session_noise=0.8)
    assert run_group(_settings(tmp_path)) == 0
    icc = _read(tmp_path / "out" / "group_stats_icc.tsv")
    assert icc[(icc.vendor == "all") & (icc.region == "BG")]["icc"].max() < 0.6


def test_mixed_methods_refused_then_split(tmp_path, capsys):
    write_cohort(tmp_path / "out", tmp_path / "bids", n=12, seed=1, method="nnunet")
    write_cohort(
        tmp_path / "out",
        tmp_path / "bids",
        n=10,
        seed=2,
        method="vesselness",
        subject_offset=100,
        write_bids=False,
    )
    assert run_group(_settings(tmp_path)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "vesselness" in err and "nnunet" in err and "--split-by-method" in err
    assert not (tmp_path / "out" / "group_pvs.tsv").exists()

    assert run_group(_settings(tmp_path, split_by_method=True)) == 0
    folders = sorted(p.name for p in (tmp_path / "out").glob("group-*"))
    assert folders == ["group-nnunet-mcpvsnet-ab12cd34-samseg", "group-vesselness-samseg"]
    ves = _read(tmp_path / "out" / "group-vesselness-samseg" / "group_pvs.tsv")
    assert len(ves) == 10 and (ves["method"] == "vesselness").all()
    assert (tmp_path / "out" / "group-vesselness-samseg" / "group.html").is_file()


def test_different_model_checksums_are_not_mixed(tmp_path, capsys):
    write_cohort(tmp_path / "out", tmp_path / "bids", n=8, seed=1)
    write_cohort(
        tmp_path / "out",
        tmp_path / "bids",
        n=8,
        seed=2,
        checksum="sha256:" + "f" * 64,
        subject_offset=50,
        write_bids=False,
    )
    assert run_group(_settings(tmp_path)) == 1
    assert "2 different methods/models" in capsys.readouterr().err


def test_different_n4_variants_are_not_mixed(tmp_path, capsys):
    """Same model, but N4 on the whole image vs inside the brain mask: different intensities."""
    write_cohort(tmp_path / "out", tmp_path / "bids", n=8, seed=1, n4_mask="whole-image")
    write_cohort(
        tmp_path / "out", tmp_path / "bids", n=8, seed=2, n4_mask="brain",
        subject_offset=50, write_bids=False,
    )  # fmt: skip
    assert run_group(_settings(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "2 different methods/models" in err and "n4whole" in err and "n4brain" in err
    assert run_group(_settings(tmp_path, split_by_method=True)) == 0
    folders = sorted(p.name for p in (tmp_path / "out").glob("group-*"))
    assert folders == [
        "group-nnunet-mcpvsnet-ab12cd34-samseg-n4brain",
        "group-nnunet-mcpvsnet-ab12cd34-samseg-n4whole",
    ]
    table = _read(tmp_path / "out" / folders[0] / "group_pvs.tsv")
    assert len(table) == 8 and (table["n4_mask"] == "brain").all()


def test_n4_variant_of_older_outputs_comes_from_the_preproc_sidecar(tmp_path):
    """Outputs without the measures sidecar's N4Mask: the desc-preproc_T1w.json N4 record."""
    write_cohort(tmp_path / "out", tmp_path / "bids", n=6, seed=1)
    for measures in (tmp_path / "out").rglob("*_desc-pvs_measures.tsv"):
        prefix = measures.name[: -len("_desc-pvs_measures.tsv")]
        (measures.parent / f"{prefix}_desc-preproc_T1w.json").write_text(
            json.dumps({"N4": {"N4Mask": "whole image (no -x)"}})
        )
    assert run_group(_settings(tmp_path)) == 0
    table = _read(tmp_path / "out" / "group_pvs.tsv")
    assert len(table) == 6 and (table["n4_mask"] == "whole-image").all()


def test_no_outputs_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    assert run_group(_settings(tmp_path)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no participant outputs" in err


def test_unknown_covariate_is_one_clear_error(tmp_path, capsys):
    write_cohort(tmp_path / "out", tmp_path / "bids", n=10, seed=1)
    assert run_group(_settings(tmp_path, covariates=["age", "bmi"])) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bmi" in err and "participants.tsv" in err


def test_success_without_outputs_and_newest_status_win(tmp_path):
    write_cohort(tmp_path / "out", tmp_path / "bids", n=3, seed=1)
    anat = tmp_path / "out" / "sub-00002" / "anat"
    for path in anat.glob("*_desc-pvs_measures.*"):
        path.unlink()
    # a newer invocation of sub-00003 failed: it is listed, its older outputs are kept
    newer = tmp_path / "out" / "sub-00003" / "log" / "20991231-000000_ffffff"
    newer.mkdir(parents=True)
    (newer / "mcpvs_status.json").write_text(
        json.dumps(
            {
                "run_id": "20991231-000000_ffffff",
                "participant_label": "00003",
                "runs": [
                    {
                        "source": "sub-00003/anat/sub-00003_T1w.nii.gz",
                        "entities": {"subject": "00003"},
                        "status": "failed",
                        "error": "disk full",
                    }
                ],
            }
        )
    )
    coll = collect(tmp_path / "out", tmp_path / "bids")
    assert list(coll.table["participant_id"]) == ["sub-00001", "sub-00003"]
    failures = coll.failures.set_index("participant_id")
    assert "no desc-pvs_measures.tsv" in failures.loc["sub-00002", "error"]
    assert failures.loc["sub-00003", "error"].startswith("disk full")


def test_broken_measures_file_names_the_file(tmp_path):
    write_cohort(tmp_path / "out", tmp_path / "bids", n=2, seed=1)
    tsv = tmp_path / "out" / "sub-00001" / "anat" / "sub-00001_desc-pvs_measures.tsv"
    tsv.write_text("region\tfoo\nBG\t1\n")
    with pytest.raises(McpvsError, match="sub-00001_desc-pvs_measures.tsv: missing column"):
        collect(tmp_path / "out", tmp_path / "bids")


def test_sidecar_inheritance(tmp_path):
    (tmp_path / "sub-01" / "ses-1" / "anat").mkdir(parents=True)
    (tmp_path / "T1w.json").write_text('{"Manufacturer": "GE", "MagneticFieldStrength": 1.5}')
    (tmp_path / "acq-fast_T1w.json").write_text('{"MagneticFieldStrength": 3}')
    (tmp_path / "sub-01" / "sub-01_T1w.json").write_text('{"Manufacturer": "Philips"}')
    index = SidecarIndex(tmp_path)
    assert index.metadata({"sub": "01", "ses": "1"}) == {
        "Manufacturer": "Philips",
        "MagneticFieldStrength": 1.5,
    }
    assert index.metadata({"sub": "01", "ses": "1", "acq": "fast"})["MagneticFieldStrength"] == 3
    assert index.metadata({"sub": "02"})["Manufacturer"] == "GE"


def test_vendor_names_and_visual_column_specs():
    assert normalise_vendor("SIEMENS") == normalise_vendor("Siemens Healthineers") == "Siemens"
    assert normalise_vendor("GE MEDICAL SYSTEMS") == "GE"
    assert normalise_vendor("Philips Medical Systems") == "Philips"
    assert normalise_vendor("n/a") is None
    assert parse_visual_columns(["BG=bgs", "wm_score", "total"]) == [
        ("BG", "bgs"),
        ("WM", "wm_score"),
        ("whole_brain", "total"),
    ]
    with pytest.raises(GroupError, match="region must be"):
        parse_visual_columns(["XX=col"])


def test_participant_level_error_without_source_and_uncompressed_input(tmp_path):
    """Status entries as cli/run.py writes them: a participant-wide error has source None;
    an uncompressed .nii input must still match its outputs."""
    write_cohort(tmp_path / "out", tmp_path / "bids", n=2, seed=1)
    log = tmp_path / "out" / "sub-00009" / "log" / "20261125-130000_aaaaaa"
    log.mkdir(parents=True)
    (log / "mcpvs_status.json").write_text(
        json.dumps(
            {
                "run_id": "20261125-130000_aaaaaa",
                "participant_label": "00009",
                "runs": [
                    {
                        "source": None,
                        "entities": {"subject": "00009"},
                        "status": "failed",
                        "error": "sub-00009: no T1w image found",
                    }
                ],
            }
        )
    )
    newer = tmp_path / "out" / "sub-00001" / "log" / "20991231-000000_bbbbbb"
    newer.mkdir(parents=True)
    (newer / "mcpvs_status.json").write_text(
        json.dumps(
            {
                "run_id": "20991231-000000_bbbbbb",
                "participant_label": "00001",
                "runs": [
                    {
                        "source": "sub-00001/anat/sub-00001_T1w.nii",
                        "entities": {"subject": "00001"},
                        "status": "success",
                        "error": None,
                    }
                ],
            }
        )
    )
    coll = collect(tmp_path / "out", tmp_path / "bids")
    assert list(coll.failures["participant_id"]) == ["sub-00009"]
    assert coll.failures["error"].iloc[0] == "sub-00009: no T1w image found"


def test_participants_vendor_column_is_kept_apart_and_usable(tmp_path):
    """participants.tsv may have its own ``vendor`` column (as the demo dataset does)."""
    write_cohort(tmp_path / "out", tmp_path / "bids", n=30, seed=3)
    parts = pd.read_csv(tmp_path / "bids" / "participants.tsv", sep="\t")
    parts["vendor"] = ["United Imaging"] * 15 + ["Canon"] * 15
    parts.to_csv(tmp_path / "bids" / "participants.tsv", sep="\t", index=False)
    coll = collect(tmp_path / "out", tmp_path / "bids")
    assert set(coll.table["vendor"]) == {"Siemens", "GE", "Philips"}  # from the sidecars
    assert "participants_vendor" in coll.table.columns
    coll = collect(tmp_path / "out", tmp_path / "bids", vendor_column="vendor")
    assert set(coll.table["vendor"]) == {"United Imaging", "Canon"}
    with pytest.raises(GroupError, match="--vendor-column scanner"):
        collect(tmp_path / "out", tmp_path / "bids", vendor_column="scanner")
    settings = _settings(tmp_path, covariates=["age"], vendor_column="vendor")
    assert run_group(settings) == 0
    reg = _read(tmp_path / "out" / "group_stats_regression.tsv")
    assert set(reg.loc[reg.term.str.startswith("vendor["), "term"]) == {"vendor[T.United Imaging]"}
    # the participants' column as a covariate next to the vendor dummies is collinear:
    # the vendor model is reported as not fitted instead of giving arbitrary coefficients
    settings = _settings(tmp_path, covariates=["age", "vendor"], vendor_column="vendor")
    assert run_group(settings) == 0
    reg = _read(tmp_path / "out" / "group_stats_regression.tsv")
    assert set(reg["model"]) == {"covariates"}
    assert "collinear" in (tmp_path / "out" / "group.html").read_text()


def test_tiny_cohort_reports_what_cannot_be_fitted(tmp_path):
    """Two participants (as in ``mcpvs demo``): no model can be fitted, and that is said."""
    write_cohort(tmp_path / "out", tmp_path / "bids", n=2, seed=1, n_manual=2)
    settings = _settings(
        tmp_path,
        covariates=["age"],
        visual_score_columns=["BG=bg_score"],
        manual_masks=tmp_path / "bids" / "derivatives" / "manual",
    )
    assert run_group(settings) == 0
    reg_text = (tmp_path / "out" / "group_stats_regression.tsv").read_text()
    assert reg_text.startswith("outcome\tmodel\tterm\tbeta_std")
    assert len(reg_text.splitlines()) == 1
    assert "not fitted" in (tmp_path / "out" / "group.html").read_text()
    assert len(_read(tmp_path / "out" / "group_manual_metrics.tsv")) == 2


def test_sessions_tsv_values_override_participants(tmp_path):
    write_cohort(tmp_path / "out", tmp_path / "bids", n=3, seed=2, sessions=2)
    (tmp_path / "bids" / "sub-00001" / "sub-00001_sessions.tsv").write_text(
        "session_id\tage\tmmse\nses-1\t70.5\t29\nses-2\t72.0\tn/a\n"
    )
    table = collect(tmp_path / "out", tmp_path / "bids").table.set_index(
        ["participant_id", "session"]
    )
    assert table.loc[("sub-00001", "1"), "age"] == 70.5
    assert table.loc[("sub-00001", "2"), "age"] == 72.0
    assert table.loc[("sub-00001", "1"), "mmse"] == 29
    assert np.isnan(table.loc[("sub-00001", "2"), "mmse"])
    parts = pd.read_csv(tmp_path / "bids" / "participants.tsv", sep="\t").set_index(
        "participant_id"
    )
    assert table.loc[("sub-00002", "2"), "age"] == parts.loc["sub-00002", "age"]


def test_unwritable_output_is_one_clear_error(tmp_path, capsys):
    write_cohort(tmp_path / "out", tmp_path / "bids", n=3, seed=1)
    (tmp_path / "out" / "group_failures.tsv").mkdir()  # a folder where a table must go
    assert run_group(_settings(tmp_path)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "group_failures.tsv" in err
