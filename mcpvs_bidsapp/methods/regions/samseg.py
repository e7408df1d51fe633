"""Region scheme ``samseg``: FreeSurfer Samseg (``samseg`` wheel from PyPI) and its labels.

The paper (Huang et al. 2024) ran Samseg from FreeSurfer 7.2 on every T1w and took its basal
ganglia and cerebral white matter labels as PVS regions, and an intracranial volume for PVSnm.
The PyPI ``samseg`` package is the same Python/GEMS code with the same atlas
(``20Subjects_smoothing2_down2_smoothingForAffine2``) inside the wheel, so it runs offline.

* :func:`run_samseg` runs ``run_samseg`` in a child process (its GEMS/ITK threads and its
  ~3 GiB are released when it exits) and converts ``seg.mgz`` to NIfTI on the input's exact grid.
* :func:`labels_to_regions` turns the Samseg labels into the brain mask and the region map
  (``spec.REGIONS_DSEG``); :func:`read_sbtiv` reads the intracranial volume.

The Nipype adaptors are in :mod:`mcpvs_bidsapp.interfaces.samseg`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nb
import numpy as np
from scipy import ndimage as ndi

from mcpvs_bidsapp.errors import SamsegError
from mcpvs_bidsapp.methods import register_region_scheme
from mcpvs_bidsapp.methods.base import Cite, step_mem_gb
from mcpvs_bidsapp.outputs.spec import Region

#: FreeSurfer LUT labels (as written by Samseg in seg.mgz; checked against the atlas'
#: compressionLookupTable.txt).  BG = caudate, putamen, pallidum: the striatum and pallidum
#: where basal-ganglia PVS are rated (Potter et al. 2015 scale the paper's radiologist used).
#: Nucleus accumbens (26/58) is left out on purpose: the ventral striatum / anterior perforated
#: substance is where PVS are seen in nearly every healthy adult and the paper's annotators did
#: not label them; thalamus (10/49) is not basal ganglia.
BG_LABELS = (11, 12, 13, 50, 51, 52)
#: cerebral white matter (2/41) plus Samseg's WM-hypointensities (77), which lie inside the
#: cerebral WM: T1-dark PVS and WMH can be labelled 77, and dropping them would cut the very
#: voxels we measure out of the WM region.  Cerebellar WM (7/46) is not cerebral WM.
WM_LABELS = (2, 41, 77)
#: labels that are not brain: unknown, skull, soft non-brain tissue, fluid inside the eyes.
NONBRAIN_LABELS = (0, 165, 258, 259)

#: run_samseg ``--options`` for each speed profile (see docs/preprocessing.md, "Samseg speed").
#: ``paper``: FreeSurfer's defaults, i.e. what the authors ran (2 mm level-1 mesh, then 1 mm
#: level-2 mesh, up to 100 iterations each).  ``fast``: the level-2 mesh is fitted at 2 mm
#: voxel spacing as well; the final segmentation is still computed on every native voxel with
#: the full level-2 atlas, so all labels we need are there.
SAMSEG_PROFILES: dict[str, dict] = {
    "paper": {},
    "fast": {
        "optimizationOptions": {
            "multiResolutionSpecification": [
                {"targetDownsampledVoxelSpacing": 2.0, "maximumNumberOfIterations": 100},
                {"targetDownsampledVoxelSpacing": 2.0, "maximumNumberOfIterations": 100},
            ]
        }
    },
}


def looks_skull_stripped(data: np.ndarray, zooms) -> bool:
    """True when the non-zero part of the image is brain-sized (already skull-stripped).

    A raw head keeps scalp, skull and noise around the brain: its non-background volume is
    3-6 L.  A stripped image has exact zeros outside a 0.8-2.3 L blob.  Cheap and
    deliberately conservative: it flags, never changes the processing.
    """
    finite = np.nan_to_num(data, nan=0.0)
    nonzero = finite != 0
    if nonzero.mean() > 0.7:  # no zero background at all: not stripped
        return False
    volume_l = nonzero.sum() * float(np.prod(zooms)) / 1e6
    return bool(0.8 < volume_l < 2.3)


def read_sbtiv(stats_file: str | Path) -> float:
    """sbTIV in mm³ from Samseg's ``sbtiv.stats`` (``# Measure Intra-Cranial, <v>, mm^3``)."""
    text = Path(stats_file).read_text()
    match = re.search(r"Intra-Cranial,\s*([0-9.eE+-]+)\s*,\s*mm\^3", text)
    if not match:
        raise SamsegError(f"{stats_file}: no 'Intra-Cranial' measure in Samseg's sbtiv.stats")
    return float(match.group(1))


def run_samseg(
    in_file: str | Path, out_dir: str | Path, *, num_threads: int = 1, profile: str = "fast"
) -> dict:
    """Run Samseg on one T1w in a child process; its labels on the input's native grid.

    Returns ``seg`` (NIfTI path), ``sbtiv_mm3``, ``stats``, ``out_dir``, ``skull_stripped`` and
    ``icv_source``.
    """
    in_file = Path(in_file)
    work = Path(out_dir)
    out_dir = work / "samseg"
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "samseg.cli.run_samseg",
        "-i",
        str(in_file),
        "-o",
        str(out_dir),
        "--threads",
        str(num_threads),
    ]
    options = SAMSEG_PROFILES[profile]
    if options:
        opt_file = out_dir / "samseg_options.json"
        opt_file.write_text(json.dumps(options, indent=2))
        cmd += ["--options", str(opt_file)]
    env = dict(os.environ)
    nthreads = str(num_threads)
    env.update(OMP_NUM_THREADS=nthreads, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=nthreads)
    log = out_dir / "samseg.log"
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, check=False)
    seg_mgz = out_dir / "seg.mgz"
    if proc.returncode != 0 or not seg_mgz.exists():
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        raise SamsegError(
            f"{in_file.name}: Samseg failed (exit {proc.returncode}): {tail} (log: {log})"
        )
    img = nb.load(str(in_file))
    stripped = looks_skull_stripped(np.asanyarray(img.dataobj), img.header.get_zooms()[:3])
    source = f"Samseg sbTIV (samseg {_samseg_version()}, profile {profile})"
    if stripped:
        source += "; input looks skull-stripped, so sbTIV misses extra-cerebral CSF"
    return {
        "seg": str(seg_to_native(seg_mgz, in_file, work / "samseg_seg.nii.gz")),
        "sbtiv_mm3": read_sbtiv(out_dir / "sbtiv.stats"),
        "stats": str(out_dir / "samseg.stats"),
        "out_dir": str(out_dir),
        "skull_stripped": stripped,
        "icv_source": source,
    }


def _samseg_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("samseg")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


def seg_to_native(seg_file: str | Path, ref_file: str | Path, out_file: str | Path) -> Path:
    """Write Samseg's labels as NIfTI with the reference's exact shape, affine and header.

    Samseg writes ``seg.mgz`` on the input's own voxel grid (it un-crops into a copy of the
    input geometry), so no resampling is needed; we check that the grids agree to 1e-3 mm and
    then reuse the reference header so that the affine is bit-identical to the input's.
    """
    seg = nb.load(str(seg_file))
    ref = nb.load(str(ref_file))
    if seg.shape[:3] != ref.shape[:3] or not np.allclose(seg.affine, ref.affine, atol=1e-3):
        raise SamsegError(
            f"{Path(ref_file).name}: Samseg output grid {seg.shape[:3]} does not match the "
            f"input grid {ref.shape[:3]}"
        )
    data = np.asanyarray(seg.dataobj).astype(np.int16).reshape(ref.shape[:3])
    hdr = ref.header.copy()
    hdr.set_data_dtype(np.int16)
    out = nb.Nifti1Image(data, ref.affine, hdr)
    out.header.set_slope_inter(1, 0)
    out.to_filename(str(out_file))
    return Path(out_file)


def labels_to_regions(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Samseg labels → (brain mask, region map in ``outputs.spec.Region`` codes).

    Brain = every Samseg label but unknown, skull, soft tissue and eye fluid (so it includes the
    ventricles and sulcal/extra-cerebral CSF, like an SPM/deepbet brain mask), with enclosed
    holes filled.  Small enclosed islands of another label inside BG or WM (a T1-dark PVS
    labelled CSF/vessel/hypointensity) are given to the region that surrounds them, because a
    PVS must not cut itself out of the region it is counted in.
    """
    brain = ~np.isin(labels, NONBRAIN_LABELS)
    brain = ndi.binary_fill_holes(brain)
    bg = np.isin(labels, BG_LABELS)
    wm = np.isin(labels, WM_LABELS)
    bg = _fill_small_holes(bg, max_voxels=50)
    wm = _fill_small_holes(wm, max_voxels=50) & ~bg
    dseg = np.zeros(labels.shape, dtype=np.uint8)
    dseg[brain] = Region.OTHER
    dseg[wm & brain] = Region.WM
    dseg[bg & brain] = Region.BG
    return brain.astype(np.uint8), dseg


def _fill_small_holes(mask: np.ndarray, max_voxels: int) -> np.ndarray:
    """Fill holes (components of ~mask not touching the outside) of at most ``max_voxels``."""
    filled = ndi.binary_fill_holes(mask)
    holes = filled & ~mask
    if not holes.any():
        return mask
    lab, n = ndi.label(holes)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    small = sizes <= max_voxels
    small[0] = False
    return mask | small[lab]


class SamsegScheme:
    """``--regions samseg`` (the default, as in the paper): brain mask, BG (caudate, putamen,
    pallidum), cerebral WM and sbTIV all from Samseg's labels (~5 min per 1 mm head on 2 cores
    with the ``fast`` profile; docs/preprocessing.md)."""

    name = "samseg"
    summary = "FreeSurfer Samseg as in the paper (~5-10 min per head)"
    #: peak memory (GB) of Samseg and of the label step on a 1 mm whole head
    samseg_gb = 6.0
    labels_gb = 1.5

    def __init__(self, profile: str = "fast"):
        self.profile = profile

    def mem_gb(self, n_voxels: int) -> float:
        return step_mem_gb(self.samseg_gb, n_voxels)

    def init_workflow(self, *, omp_nthreads: int, n_voxels: int, name: str = "regions_wf"):
        from nipype.interfaces import utility as niu
        from nipype.pipeline import engine as pe

        from mcpvs_bidsapp.interfaces.samseg import Samseg, SamsegRegions
        from mcpvs_bidsapp.methods.base import REGION_OUTPUTS

        workflow = pe.Workflow(name=name)
        inputnode = pe.Node(niu.IdentityInterface(fields=["t1w"]), name="inputnode")
        outputnode = pe.Node(niu.IdentityInterface(fields=list(REGION_OUTPUTS)), name="outputnode")
        outputnode.inputs.regions_method = self.name
        samseg = pe.Node(
            Samseg(num_threads=omp_nthreads, profile=self.profile),
            name="samseg",
            n_procs=omp_nthreads,
            mem_gb=self.mem_gb(n_voxels),
        )
        labels = pe.Node(
            SamsegRegions(), name="regions", mem_gb=step_mem_gb(self.labels_gb, n_voxels)
        )
        workflow.connect([
            (inputnode, samseg, [("t1w", "in_file")]),
            (samseg, labels, [("out_seg", "in_seg")]),
            (samseg, outputnode, [("sbtiv_mm3", "icv_mm3"), ("icv_source", "icv_source")]),
            (labels, outputnode, [("out_mask", "brain_mask"), ("out_dseg", "dseg")]),
        ])  # fmt: skip
        return workflow

    def extraction_text(self, cite: Cite) -> str:
        return f"brain-extracted with Samseg {cite('puonti2016samseg')}"

    def regions_text(self, cite: Cite) -> str:
        return f"Samseg {cite('puonti2016samseg')}, which also gave the intracranial volume"


register_region_scheme(SamsegScheme())
