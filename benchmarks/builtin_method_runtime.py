"""Runtime of the built-in method and how it scales with image size (MNI phantom, offline).

    PYTHONPATH=. OMP_NUM_THREADS=2 python benchmarks/builtin_method_runtime.py

Times ``segment_pvs`` on nilearn's MNI152 phantom (moderate load) at 1 mm and resampled to
0.8 mm isotropic (1.95× the voxels), and on a 1×1×2 mm version (0.5×). Prints seconds,
voxel counts and seconds per million BG ∪ WM voxels.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mcpvs_bidsapp import vesselness  # noqa: E402
from mcpvs_bidsapp.synthetic import phantoms  # noqa: E402


def main() -> int:
    img, truth, brain, regions = phantoms.phantom_from_mni("moderate", seed=0)
    a = np.asarray(img.dataobj, np.float32)[:, :, :188]  # even slice count
    r = np.asarray(regions.dataobj)[:, :, :188]
    cases = {
        "1.0 mm iso": (a, r, (1.0, 1.0, 1.0)),
        "0.8 mm iso": (
            ndi.zoom(a, 1.25, order=1),
            ndi.zoom(r, 1.25, order=0),
            (0.8, 0.8, 0.8),
        ),
        "1x1x2 mm": (0.5 * (a[:, :, 0::2] + a[:, :, 1::2]), r[:, :, 0::2], (1.0, 1.0, 2.0)),
    }
    for name, (im, reg, zooms) in cases.items():
        n_roi = int(np.isin(reg, (1, 2)).sum())
        t0 = time.perf_counter()
        _, mask, _ = vesselness.segment_pvs(im, reg, zooms)
        dt = time.perf_counter() - t0
        vol = mask.sum() * float(np.prod(zooms))
        print(
            f"{name:12s} shape={im.shape} BG+WM voxels={n_roi / 1e6:.2f} M  "
            f"time={dt:6.1f} s  ({dt / (n_roi / 1e6):.1f} s per M voxels)  PVS={vol:.0f} mm3",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
