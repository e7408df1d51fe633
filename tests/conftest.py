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
