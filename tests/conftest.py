"""Shared fixtures: where the real test images live, and skips that say why."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("NIPYPE_NO_ET", "1")  # no online version check from Nipype

#: ../shared/data beside the project checkout (read-only in CI)
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real images of ../shared/data; skip with the reason when they are absent."""
    if not (SHARED_DATA / "t1w").is_dir():
        pytest.skip(f"real test images not found at {SHARED_DATA} (see README, 'Tests')")
    return SHARED_DATA


@pytest.fixture(scope="session")
def philips_t1w(shared_data: Path) -> Path:
    """Raw Philips ADNI-protocol MPRAGE, full head, 1 mm."""
    return shared_data / "t1w" / "philips_adni_sag3d_mprage_t1w.nii.gz"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny nnU-Net v2 model really trained on synthetic tubes (built once per session, in a
    child process; ``MCPVS_TEST_NNUNET_CACHE=DIR`` keeps it between sessions)."""
    from nnunet_tiny import build_tiny_model

    cache = os.environ.get("MCPVS_TEST_NNUNET_CACHE")
    workdir = Path(cache) if cache else tmp_path_factory.getbasetemp() / "tiny_nnunet"
    return build_tiny_model(workdir)


@pytest.fixture(scope="session")
def tiny_v1_model_dir(tmp_path_factory) -> Path:
    """A tiny nnU-Net v1 (nnunet 1.7.1) model trained with v1's own planner and nnUNetTrainerV2
    on synthetic tubes (built once per session, ~1 min, in a child process;
    ``MCPVS_TEST_NNUNET_V1_CACHE=DIR`` keeps it between sessions)."""
    import importlib.util

    if importlib.util.find_spec("nnunet") is None:  # not imported here: it prints a banner
        pytest.skip("nnU-Net v1 (nnunet==1.7.1) is not installed")
    from nnunet_v1_tiny import build_tiny_v1_model

    cache = os.environ.get("MCPVS_TEST_NNUNET_V1_CACHE")
    workdir = Path(cache) if cache else tmp_path_factory.getbasetemp() / "tiny_nnunet_v1"
    return build_tiny_v1_model(workdir)


#: the MNI152 box the built-in method's phantom tests crop (voxels of nilearn's 1 mm template):
#: both basal ganglia and the periventricular / central WM, small enough for fast tests, large
#: enough to hold BG and WM tubes
MNI_BOX = (slice(45, 155), slice(70, 190), slice(55, 135))


@pytest.fixture(scope="session")
def mni_box():
    """nilearn's MNI152 template and its regions (``phantoms.mni_regions``) cropped to
    :data:`MNI_BOX`: ``(t1w, affine, brain, regions)``, read-only, built once per session."""
    from mcpvs_bidsapp.synthetic import phantoms

    t, aff, brain, regions = phantoms.mni_regions()
    aff = aff.copy()
    aff[:3, 3] = aff[:3, :3] @ [s.start for s in MNI_BOX] + aff[:3, 3]
    box = (t[MNI_BOX].copy(), aff, brain[MNI_BOX].copy(), regions[MNI_BOX].copy())
    for arr in box:
        arr.flags.writeable = False
    return box


@pytest.fixture(scope="session")
def realistic_mni_box(mni_box):
    """The realistic MNI box (issue #15): a moderate load of realistic PVS with every cohort
    mimic (seed 1), noise 0.03, a 10 % bias field; ``(phantom, image, affine)``. Built once per
    session (7 s) for test_realistic_phantoms and test_vesselness; the image is read-only."""
    from mcpvs_bidsapp.synthetic import phantoms, realistic

    t, aff, brain, regions = mni_box
    ph = realistic.insert_realistic_pvs(
        t, aff, brain, regions == 2, regions == 1, load="moderate", seed=1,
        mimics=realistic.MIMICS, regions=regions,
    )  # fmt: skip
    img = phantoms.degrade(
        ph.image, seed=11, bias_strength=0.1, noise_sd=0.03, reference=1.0, mask=brain
    )
    img.flags.writeable = False
    return ph, img, aff


@pytest.fixture(scope="session")
def realistic_mni_default(realistic_mni_box):
    """The built-in method with today's defaults on :func:`realistic_mni_box`:
    ``(probseg, mask, used parameters)``, computed once per session (5 s)."""
    from mcpvs_bidsapp import vesselness

    ph, img, aff = realistic_mni_box
    return vesselness.segment_pvs(img, ph.regions, (1, 1, 1), affine=aff)


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests skip with the reason where torch sees no CUDA GPU (checked once)."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; torch sees none here")
    for item in gpu_items:
        item.add_marker(skip)
