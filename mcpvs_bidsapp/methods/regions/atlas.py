"""Region scheme ``fast``: Samseg's own atlas priors registered to the subject with ANTsPy.

No package ships a basal-ganglia atlas offline (nilearn's MNI152 has GM/WM maps but no nuclei,
TemplateFlow needs downloads), but the Samseg wheel does: its level-2 tetrahedral mesh holds
prior probabilities of all 44 structures on its 1 mm head template.  We rasterise that mesh
once (GEMS, ~30 s), keep three maps (BG = caudate+putamen+pallidum, cerebral WM, brain) in a
cache, and for each subject register the template brain to the subject brain (affine + SyN on
a 2 mm grid, ANTsPy) and pull the maps onto the subject's native grid.  Because the priors are
the very ones Samseg starts from, the fast path and the Samseg path define the regions the
same way; only the subject-specific fit (Samseg's intensity model and mesh deformation) is
replaced by a registration.  docs/preprocessing.md reports their agreement (Dice).
The brain mask comes from deepbet; the Nipype adaptors are
:class:`mcpvs_bidsapp.interfaces.regions_fast.AtlasPriors` (the registration, beside N4) and
:class:`~mcpvs_bidsapp.interfaces.regions_fast.AtlasRegions` (the region map, whose WM border
follows the N4-corrected intensities: on the raw T1w a strong bias field shrank the WM by 40 %,
issue #17, item 2).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from pathlib import Path

import nibabel as nb
import numpy as np
from scipy import ndimage as ndi

from mcpvs_bidsapp.methods import register_region_scheme
from mcpvs_bidsapp.methods.base import Cite, step_mem_gb
from mcpvs_bidsapp.methods.regions.samseg import BG_LABELS, NONBRAIN_LABELS, WM_LABELS
from mcpvs_bidsapp.orientation import deobliqued_copy
from mcpvs_bidsapp.outputs.spec import Region
from mcpvs_bidsapp.registration import DEFAULT_SEED, RegistrationJob, Warp, run_registration

ATLAS_NAME = "20Subjects_smoothing2_down2_smoothingForAffine2"
#: the same WM labels as the Samseg path (cerebral WM + WM-hypointensities)
WM_PRIOR_LABELS = WM_LABELS
#: channels of the cached prior image
PRIOR_CHANNELS = ("BG", "WM", "brain")
#: registration grid (mm): 2 mm keeps SyN at ~1/8 of the 1 mm cost, and BG/WM are large
REG_SPACING_MM = 2.0
#: template-to-subject affine + SyN, both with Mattes MI
REGISTRATION_PARAMETERS = {
    "type_of_transform": "SyN",
    "aff_metric": "mattes",
    "aff_iterations": [500, 200, 50],
    "aff_shrink_factors": [4, 2, 1],
    "aff_smoothing_sigmas": [2, 1, 0],
    "syn_metric": "mattes",
    "reg_iterations": [40, 20],
    "grad_step": 0.2,
    "flow_sigma": 3,
    "total_sigma": 0,
}


def samseg_atlas_dir() -> Path:
    from samseg import SAMSEGDIR

    return Path(SAMSEGDIR) / "atlas" / ATLAS_NAME


def cache_dir() -> Path:
    """``$MCPVS_CACHE_DIR`` or ``$XDG_CACHE_HOME/mcpvs`` (``~/.cache/mcpvs``)."""
    env = os.environ.get("MCPVS_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mcpvs"


def atlas_priors(cache: Path | None = None) -> Path:
    """The cached BG/WM/brain prior maps on Samseg's template grid (built on first use)."""
    from importlib.metadata import version as _version

    cache = Path(cache) if cache is not None else cache_dir()
    version = _version("samseg")  # samseg.__version__ reads "0+unknown" in the wheel
    out = cache / f"samseg-{version}_{ATLAS_NAME}_priors.nii.gz"
    if out.exists():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    img = build_atlas_priors()
    # write-then-rename, so two processes building the cache at once never see half a file
    fd, tmp = tempfile.mkstemp(dir=cache, suffix=".nii.gz")
    os.close(fd)
    img.to_filename(tmp)
    os.replace(tmp, out)
    return out


@contextlib.contextmanager
def _native_stdout_to_log(what: str):
    """Send what native code prints on file descriptor 1 to the log (DEBUG), not the console.

    Samseg's gems prints "Read mesh collection: <path>" from C++ when it reads the atlas;
    ``contextlib.redirect_stdout`` cannot catch that, so the descriptor itself is swapped.
    """
    log = logging.getLogger("mcpvs")
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace").strip()
            if text:
                log.debug("%s: %s", what, text)


def build_atlas_priors(num_threads: int = 1) -> nb.Nifti1Image:
    """Rasterise Samseg's level-2 mesh on its template grid → 4D (BG, WM, brain) float32."""
    from samseg import gems

    atlas = samseg_atlas_dir()
    template = nb.load(str(atlas / "template.nii.gz"))
    gems.setGlobalDefaultNumberOfThreads(max(1, num_threads))
    collection = gems.KvlMeshCollection()
    with _native_stdout_to_log("samseg atlas"):
        collection.read(str(atlas / "atlas_level2.txt.gz"))
    # mesh nodes are in template voxel coordinates, so no transform is needed
    priors = collection.reference_mesh.rasterize(template.shape[:3], -1)  # uint16, x65535
    fs_to_index = {}
    for line in (atlas / "compressionLookupTable.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            fs_to_index[int(parts[0])] = int(parts[1])

    def summed(labels) -> np.ndarray:
        idx = [fs_to_index[label] for label in labels]
        return priors[..., idx].astype(np.float32).sum(-1) / 65535.0

    brain_labels = [lab for lab in fs_to_index if lab not in NONBRAIN_LABELS]
    data = np.stack(
        [summed(BG_LABELS), summed(WM_PRIOR_LABELS), summed(brain_labels)], axis=-1
    ).clip(0, 1)
    hdr = nb.Nifti1Header()
    hdr.set_data_dtype(np.float32)
    return nb.Nifti1Image(data.astype(np.float32), template.affine, hdr)


def register_atlas(
    t1w: nb.Nifti1Image,
    brain_mask: np.ndarray,
    priors_file: Path,
    *,
    seed: int = DEFAULT_SEED,
) -> np.ndarray:
    """Warp the (BG, WM, brain) priors onto the T1w's native grid; returns (X, Y, Z, 3).

    Reproducible: one ITK thread and a fixed seed in a child process (see
    :mod:`mcpvs_bidsapp.registration` for what made it differ run to run).
    """
    priors_img = nb.load(str(priors_file))
    priors = np.asanyarray(priors_img.dataobj, dtype=np.float32)
    template = nb.load(str(samseg_atlas_dir() / "template.nii.gz"))
    tpl_brain = np.asanyarray(template.dataobj, dtype=np.float32) * (priors[..., 2] > 0.5)

    with tempfile.TemporaryDirectory(prefix="mcpvs_atlas_") as tmp:
        tmp = Path(tmp)
        # the subject in its voxel frame (orientation.deobliqued_copy): an oblique copy of a
        # head gives the registration the same problem as the straight one; the warped priors
        # are voxel maps of the subject's grid, whatever its affine says
        data = np.asanyarray(t1w.dataobj, dtype=np.float32)
        frame = deobliqued_copy(t1w).affine
        hdr = nb.Nifti1Header()
        hdr.set_data_dtype(np.float32)
        subject = nb.Nifti1Image(np.where(brain_mask > 0, data, 0), frame, hdr)
        subject.set_qform(frame, code=1)
        subject.set_sform(frame, code=1)
        subject.to_filename(tmp / "subject_brain.nii.gz")
        nb.Nifti1Image(tpl_brain, template.affine).to_filename(tmp / "template_brain.nii.gz")
        warps = []
        for k in range(len(PRIOR_CHANNELS)):
            nb.Nifti1Image(priors[..., k], priors_img.affine).to_filename(tmp / f"p{k}.nii.gz")
            warps.append(Warp(str(tmp / f"p{k}.nii.gz"), str(tmp / f"w{k}.nii.gz"), "linear"))
        run_registration(
            RegistrationJob(
                fixed_file=str(tmp / "subject_brain.nii.gz"),
                moving_file=str(tmp / "template_brain.nii.gz"),
                warps=warps,
                reg_spacing_mm=REG_SPACING_MM,
                seed=seed,
                registration_kwargs=REGISTRATION_PARAMETERS,
            )
        )
        # read back with nibabel: same voxel order as the input file, whatever ANTs did
        warped = [np.asanyarray(nb.load(w.out_file).dataobj) for w in warps]
    return np.stack(warped, axis=-1).astype(np.float32)


def priors_to_regions(
    warped: np.ndarray, brain_mask: np.ndarray, t1w: np.ndarray | None = None
) -> np.ndarray:
    """Region map (``outputs.spec.Region`` codes) from warped priors inside the brain mask.

    BG: warped BG prior > 0.5.  WM: warped cerebral-WM prior > 0.5, then refined with the
    subject's own intensities when the T1w is given: voxels of WM intensity (brightest of three
    classes, closed to keep dark PVS inside where the WM prior exceeds ``CLOSING_MIN_PRIOR``)
    within 2 voxels of the prior's WM are added and
    cortex-intensity voxels are dropped, so the WM border follows this brain's gyri rather than
    the average atlas.
    """
    brain = brain_mask > 0
    bg = (warped[..., 0] > 0.5) & brain
    wm_prior = warped[..., 1]
    wm = (wm_prior > 0.5) & brain
    if t1w is not None:
        wm_int = _wm_intensity_mask(t1w, brain, wm_prior)
        near = ndi.binary_dilation(wm, iterations=2)
        wm = ((wm & wm_int) | (near & wm_int & (wm_prior > 0.2))) & brain
        wm = _keep_large(wm, min_voxels=1000)
    wm &= ~bg
    dseg = np.zeros(brain.shape, dtype=np.uint8)
    dseg[brain] = Region.OTHER
    dseg[wm] = Region.WM
    dseg[bg] = Region.BG
    return dseg


#: the WM-intensity mask's closing (which keeps dark PVS inside the WM) adds voxels only where
#: the warped WM prior exceeds this: deep WM. Closed everywhere, it bridged thin gyri and the
#: built-in method traced the cortex (issue #15: 477 of 618 clusters on the Philips head lay
#: mostly outside Samseg's BG and WM; demo Dice 0.26 / 0.66); measured in docs/preprocessing.md
CLOSING_MIN_PRIOR = 0.6


def _wm_intensity_mask(t1w: np.ndarray, brain: np.ndarray, wm_prior: np.ndarray) -> np.ndarray:
    from skimage.filters import threshold_multiotsu

    smooth = ndi.gaussian_filter(t1w.astype(np.float32), 0.75)
    thr = threshold_multiotsu(smooth[brain], classes=3)
    wm = (smooth > thr[-1]) & brain
    closed = ndi.binary_closing(wm, iterations=2) & brain
    return wm | (closed & (wm_prior > CLOSING_MIN_PRIOR))


def _keep_large(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[lab]


class AtlasScheme:
    """``--regions fast``: deepbet brain mask + Samseg's atlas priors registered with ANTsPy
    (no Samseg fit); ICV is the brain-mask volume. About 3 min per 1 mm head on 2 cores;
    agreement with Samseg in docs/preprocessing.md."""

    name = "fast"
    summary = "deepbet + Samseg's atlas priors registered with ANTsPy (~2-3 min)"
    #: its WM refinement reads intensities: it gets the run's N4 node (``bias_correction``)
    uses_bias_corrected = True
    #: peak memory (GB) on a 1 mm whole head; deepbet resamples to 256^3 whatever the input
    brain_extraction_gb = 2.5
    registration_gb = 3.0
    labels_gb = 1.5

    def mem_gb(self, n_voxels: int) -> float:
        return max(
            step_mem_gb(self.brain_extraction_gb, n_voxels, fixed=True),
            step_mem_gb(self.registration_gb, n_voxels),
        )

    def init_workflow(
        self, *, omp_nthreads: int, n_voxels: int, name: str = "regions_wf", bias_correction=None
    ):
        """``bias_correction``: the run's N4 node (``workflows.regions.init_regions_wf``
        gives it); the WM refinement reads its output."""
        from nipype.interfaces import utility as niu
        from nipype.pipeline import engine as pe

        from mcpvs_bidsapp.interfaces.brain import DeepBetBrainMask
        from mcpvs_bidsapp.interfaces.regions_fast import AtlasPriors, AtlasRegions
        from mcpvs_bidsapp.methods.base import REGION_OUTPUTS

        if bias_correction is None:
            raise ValueError(f"region scheme {self.name!r} needs the run's N4 node")
        workflow = pe.Workflow(name=name)
        inputnode = pe.Node(niu.IdentityInterface(fields=["t1w"]), name="inputnode")
        outputnode = pe.Node(niu.IdentityInterface(fields=list(REGION_OUTPUTS)), name="outputnode")
        outputnode.inputs.regions_method = self.name
        outputnode.inputs.icv_source = "brain-mask volume (deepbet; --regions fast)"
        brain = pe.Node(
            DeepBetBrainMask(num_threads=omp_nthreads),
            name="brain_extraction",
            n_procs=omp_nthreads,
            mem_gb=step_mem_gb(self.brain_extraction_gb, n_voxels, fixed=True),
        )
        # one thread: the registration is only reproducible single-threaded (see
        # mcpvs_bidsapp.registration); N4 uses the other cores meanwhile
        register = pe.Node(
            AtlasPriors(),
            name="atlas_registration",
            n_procs=1,
            mem_gb=step_mem_gb(self.registration_gb, n_voxels),
        )
        regions = pe.Node(
            AtlasRegions(), name="regions_fast", mem_gb=step_mem_gb(self.labels_gb, n_voxels)
        )
        workflow.connect([
            (inputnode, brain, [("t1w", "in_file")]),
            (inputnode, register, [("t1w", "in_file")]),
            (brain, register, [("out_mask", "in_mask")]),
            (register, regions, [("out_priors", "in_priors")]),
            (brain, regions, [("out_mask", "in_mask")]),
            (inputnode, bias_correction, [("t1w", "in_file")]),
            (brain, bias_correction, [("out_mask", "in_mask")]),
            (bias_correction, regions, [("out_file", "in_file")]),
            (brain, outputnode, [("out_mask", "brain_mask"), ("brain_volume_mm3", "icv_mm3")]),
            (regions, outputnode, [("out_dseg", "dseg")]),
        ])  # fmt: skip
        return workflow

    def extraction_text(self, cite: Cite) -> str:
        return f"brain-extracted with deepbet {cite('fisch2024deepbet')}"

    def regions_text(self, cite: Cite) -> str:
        return (
            f"mcpvs's '{self.name}' regions method (intracranial volume from the brain mask; "
            f"see the measures sidecar), not from Samseg {cite('puonti2016samseg')} as in the "
            "original work"
        )


register_region_scheme(AtlasScheme())
