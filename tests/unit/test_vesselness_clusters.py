"""The built-in method's learned cluster rule (mcpvs_bidsapp/vesselness_clusters.py).

The shipped model is JSON numbers that are read and checked, never run; a broken or unknown
model fails with one line that names the file or the name. Its effect on detection is
asserted on the MNI box of test_realistic_phantoms.py (a head it was not fitted on) there.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mcpvs_bidsapp import vesselness
from mcpvs_bidsapp import vesselness_clusters as vc


def test_shipped_model_is_plain_numbers_with_provenance():
    path = vc.MODEL_DIR / f"{vc.DEFAULT_MODEL}.json"
    raw = json.loads(path.read_text())
    model = vc.read_model(path)
    assert model.features == vc.FEATURES
    assert 0 < model.threshold < 1
    prov = model.provenance
    # fitted on the tune heads only: the report heads stay held out
    assert set(prov["heads"]) == {"niivue_otsu_t1w", "mne_sample_brain_t1w"}
    assert prov["script"] == "benchmarks/train_cluster_model.py"
    assert prov["rows"] > 1000 and 0 < prov["positive"] < prov["rows"]
    # the candidate parameters it was fitted for are today's defaults
    defaults = {k: v for k, v in vesselness.DEFAULT_PARAMS.items() if not k.startswith("cluster_")}
    assert model.candidate_params == defaults
    # nothing but numbers, strings and lists of them
    for key in ("mean", "scale", "coef"):
        assert all(isinstance(v, float) for v in raw[key])


def test_probability_is_the_logistic_of_the_standardised_features():
    m = vc.ClusterModel(
        name="t", features=("log_size", "csm_max_z"), mean=np.array([1.0, 5.0]),
        scale=np.array([2.0, 1.0]), coef=np.array([1.0, -0.5]), intercept=0.25, threshold=0.5,
    )  # fmt: skip
    x = np.array([[3.0, 7.0], [1.0, 5.0]])
    z = np.array([1.0 - 1.0 + 0.25, 0.25])
    np.testing.assert_allclose(m.probability(x), 1 / (1 + np.exp(-z)))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"kind": "pickle"}, "not a logistic cluster model"),
        ({"features": ["log_size", "os.system"]}, "features must be"),
        ({"coef": "__import__('os')"}, "'coef' must be a list"),
        ({"scale": [0.0] * len(vc.FEATURES)}, "'scale' must be positive"),
        ({"threshold": 1.5}, "'threshold' must be a number in (0, 1)"),
        ({"mean": [1.0]}, "'mean' must be a list of 14 numbers"),
    ],
)
def test_a_broken_model_file_fails_with_its_name(tmp_path, change, message):
    d = json.loads((vc.MODEL_DIR / f"{vc.DEFAULT_MODEL}.json").read_text())
    d.update(change)
    bad = tmp_path / "bad-model.json"
    bad.write_text(json.dumps(d))
    with pytest.raises(ValueError) as err:
        vc.read_model(bad)
    assert str(bad) in str(err.value) and message in str(err.value)


def test_an_unknown_model_name_is_refused_before_any_work():
    with pytest.raises(ValueError, match="unknown cluster model 'nope'"):
        vesselness.segment_pvs(
            np.ones((8, 8, 8), np.float32), np.full((8, 8, 8), 2), (1, 1, 1),
            params={"cluster_model": "nope"},
        )  # fmt: skip


def test_features_are_in_noise_units():
    """Scaling the contrast and the noise together (a second scanner's contrast at the same
    SNR) leaves the contrast and response features unchanged."""
    rng = np.random.default_rng(0)
    lab = np.zeros((20, 20, 20), int)
    lab[8:11, 9, 9] = 1
    lab[14, 14, 14] = 2
    csm = rng.normal(0, 0.02, lab.shape).astype(np.float32) + 0.1 * (lab > 0)
    resp = rng.normal(0, 1, lab.shape).astype(np.float32) + 5 * (lab > 0)
    kw = dict(resp=resp, back=np.ones(lab.shape, np.float32),
              depth=np.full(lab.shape, 5.0, np.float32), bg=np.zeros(lab.shape, bool),
              fluid_dist=None, seeds=lab == 1, iso=1.0)  # fmt: skip
    a = vc.cluster_features(lab, [1, 2], csm=csm, cv=csm, sd_c=0.02, t_abs=0.05, **kw)
    b = vc.cluster_features(lab, [1, 2], csm=2 * csm, cv=2 * csm, sd_c=0.04, t_abs=0.1, **kw)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    f = dict(zip(vc.FEATURES, a[0], strict=True))
    assert f["log_size"] == pytest.approx(np.log(3)) and f["seed"] == 1
    assert f["extent"] > 0.5 and f["extent2"] < 0.01  # a 3-voxel line
    assert a[1, vc.FEATURES.index("seed")] == 0
