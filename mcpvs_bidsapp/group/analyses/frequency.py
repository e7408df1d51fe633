"""Cohort PVS frequency map: the share of participants with a PVS at each place, in MNI152.

Each participant's PVS mask is carried to nilearn's 1 mm MNI152 template (ICBM152 2009a
asymmetric, shipped in nilearn's wheel: no download) by an affine registration of its
brain-masked, FCM-normalised T1w (``spec.PREPROC_T1W``) to the template brain, with ANTsPy
through :mod:`mcpvs_bidsapp.registration` (one thread, a fixed seed: the same inputs give
the same map). The mask is warped with linear interpolation, so a voxel holds the fraction
of it a PVS covers; the map is the mean of those fractions over participants (one T1w per
participant), i.e. the expected share of participants with a PVS there.

An affine registration lines up the head and the large structures (basal ganglia,
ventricles, the centrum semiovale), not single vessels: the map shows where a cohort's PVS
concentrate and where a method puts false positives systematically (cortex, ventricle
walls), not the course of one PVS. Each participant's warped mask is kept in the work dir
(``<work>/group_frequency/``), keyed by its inputs' contents, so a rerun only registers new
ones; the
registrations run ``--nprocs`` at a time (about 15 s each on a loaded 2-core machine, most of
it the child process starting ANTs).
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import nibabel as nb
import numpy as np

from mcpvs_bidsapp.group.analyses import LOGGER, Context, pyplot
from mcpvs_bidsapp.outputs import spec

KEY = "frequency"
BEST_EFFORT = True  #: a registration failing loses this figure, not the group level
SPACE = spec.TEMPLATE_SPACE
#: the registration; a change here changes the cache key
#: (ANTsPy's own schedule for "Affine": its aff_* schedule keywords make antsRegistration
#: fail with this transform)
REGISTRATION = {"type_of_transform": "Affine", "aff_metric": "mattes"}
REG_SPACING_MM = 3.0
DISPLAY_SIGMA_MM = 2.0 / 2.3548  #: 2 mm FWHM, for the figure only


def template() -> tuple[nb.Nifti1Image, np.ndarray]:
    """nilearn's MNI152 1 mm template and its brain mask."""
    from nilearn import datasets

    tpl = datasets.load_mni152_template(resolution=1)
    brain = np.asanyarray(datasets.load_mni152_brain_mask(resolution=1).dataobj) > 0
    return tpl, brain


def _key(*paths: Path) -> str:
    """The cache key: the files' contents (a resumed participant run rewrites its derivatives
    with new times but the same bytes) and the registration settings."""
    digest = hashlib.sha1(repr(sorted(REGISTRATION.items())).encode())
    digest.update(str(REG_SPACING_MM).encode())
    for path in paths:
        with open(path, "rb") as fobj:
            for block in iter(lambda f=fobj: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def warp_to_template(preproc: Path, mask: Path, cache: Path, template_brain: Path) -> Path:
    """The PVS mask on the template grid (fraction covered, uint8 x 1/255), from the cache
    when its inputs have not changed."""
    from mcpvs_bidsapp.registration import RegistrationJob, Warp, run_registration

    out = cache / f"{mask.name.split('.')[0]}_{_key(preproc, mask)}.nii.gz"
    if out.exists():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mcpvs_freq_") as tmp:
        tmp = Path(tmp)
        moving = nb.load(str(preproc))
        pvs = nb.load(str(mask))
        # float copies: ANTs reads uint8 masks as such and interpolates them poorly
        nb.Nifti1Image(np.asanyarray(pvs.dataobj, dtype=np.float32), pvs.affine).to_filename(
            tmp / "pvs.nii.gz"
        )
        nb.Nifti1Image(np.asanyarray(moving.dataobj, dtype=np.float32), moving.affine).to_filename(
            tmp / "moving.nii.gz"
        )
        run_registration(
            RegistrationJob(
                fixed_file=str(template_brain),
                moving_file=str(tmp / "moving.nii.gz"),
                warps=[Warp(str(tmp / "pvs.nii.gz"), str(tmp / "warped.nii.gz"), "linear")],
                reg_spacing_mm=REG_SPACING_MM,
                registration_kwargs=REGISTRATION,
            )
        )
        warped = nb.load(str(tmp / "warped.nii.gz"))
        data = np.clip(np.asanyarray(warped.dataobj, dtype=np.float32), 0, 1)
        img = nb.Nifti1Image(np.round(data * 255).astype(np.uint8), warped.affine)
        img.header.set_slope_inter(1 / 255, 0)
        partial = out.with_name(f".{out.name}")
        img.to_filename(partial)
        partial.replace(out)
    return out


def run(ctx: Context) -> dict | None:
    cross = ctx.cross
    inputs = []
    for rec in cross.itertuples(index=False):
        anat = (ctx.output_dir / rec.measures_file).parent
        preproc = anat / spec.PREPROC_T1W.name(rec.prefix)
        mask = anat / spec.PVS_MASK.name(rec.prefix)
        if preproc.is_file() and mask.is_file():
            inputs.append((rec.participant_id, preproc, mask))
    if not inputs:
        return None  # outputs without images (e.g. tables only): no map
    missing = len(cross) - len(inputs)
    if missing:
        ctx.note(KEY, f"{missing} participant(s) without a preprocessed T1w or PVS mask left out")
    tpl, brain = template()
    cache = Path(ctx.settings.execution.work_dir) / "group_frequency"
    t0 = time.time()
    total = None
    with tempfile.TemporaryDirectory(prefix="mcpvs_tpl_") as tmp:
        tpl_brain = Path(tmp) / "template_brain.nii.gz"
        data = np.asanyarray(tpl.dataobj, dtype=np.float32) * brain
        nb.Nifti1Image(data, tpl.affine).to_filename(tpl_brain)
        used = 0
        # each registration is a child process of its own: run --nprocs of them at once
        workers = max(1, int(getattr(ctx.settings.execution, "nprocs", 1) or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {
                pool.submit(warp_to_template, preproc, mask, cache, tpl_brain): pid
                for pid, preproc, mask in inputs
            }
            for n, future in enumerate(as_completed(futures), start=1):
                pid = futures[future]
                try:
                    warped = future.result()
                except Exception as err:  # one failed registration loses one participant
                    ctx.note(KEY, f"{pid}: not registered to {SPACE} ({err})")
                    continue
                values = np.asanyarray(nb.load(str(warped)).dataobj, dtype=np.float32)
                total = values if total is None else total + values
                used += 1
                if n % 25 == 0:
                    LOGGER.info("frequency map: %d of %d participants", n, len(inputs))
    if total is None:
        return None
    freq = (total / used) * brain
    out = ctx.dest / spec.GROUP_FREQUENCY_MAP
    img = nb.Nifti1Image(freq.astype(np.float32), tpl.affine)
    img.header.set_xyzt_units("mm")
    from mcpvs_bidsapp.outputs.write import atomic_path, write_json

    with atomic_path(out) as tmp_out:
        img.to_filename(tmp_out)
    write_json(
        spec.sidecar_path(out),
        {
            "Description": "share of participants with a PVS at each voxel (mean of the "
            "linearly warped PVS masks, one T1w per participant)",
            "Space": SPACE,
            "Template": "nilearn load_mni152_template(resolution=1)",
            "Registration": {
                "Package": "antspyx",
                **REGISTRATION,
                "RegistrationSpacingMm": REG_SPACING_MM,
            },  # fmt: skip
            "NParticipants": used,
            "Sources": [str(m.relative_to(ctx.output_dir)) for _, _, m in inputs],
        },
    )
    ctx.files["frequency_map"] = out
    _figure(ctx, freq, tpl, brain, used)
    LOGGER.info("frequency map of %d participants in %.0f s", used, time.time() - t0)
    return {"figures": ["frequency_map"], "n": used, "file": out.name, "space": SPACE}


def _figure(ctx: Context, freq: np.ndarray, tpl, brain: np.ndarray, n: int) -> None:
    from scipy import ndimage

    plt = pyplot()
    smooth = ndimage.gaussian_filter(freq, DISPLAY_SIGMA_MM) * brain
    anat = np.asanyarray(tpl.dataobj, dtype=np.float32)
    zs = np.flatnonzero(brain.any(axis=(0, 1)))
    lo, hi = zs[0] + int(0.35 * len(zs)), zs[0] + int(0.88 * len(zs))
    sections = np.linspace(lo, hi, 10).round().astype(int)
    vmax = max(float(np.percentile(smooth[brain], 99.9)), 1e-3)
    fig, axes = plt.subplots(2, 5, figsize=(12.5, 6.2), facecolor="black")
    for ax, z in zip(axes.flat, sections, strict=True):
        ax.imshow(anat[:, :, z].T, cmap="gray", origin="lower", interpolation="nearest")
        shown = np.ma.masked_less(smooth[:, :, z].T, vmax * 0.05)
        im = ax.imshow(shown, cmap="hot", vmin=0, vmax=vmax, origin="lower", alpha=0.85,
                       interpolation="nearest")  # fmt: skip
        ax.set_axis_off()
        ax.text(0.02, 0.98, f"z = {z + tpl.affine[2, 3]:.0f} mm", transform=ax.transAxes,
                color="white", fontsize=10, va="top")  # fmt: skip
    fig.subplots_adjust(left=0, right=0.92, bottom=0, top=0.93, wspace=0.02, hspace=0.04)
    cax = fig.add_axes([0.93, 0.1, 0.015, 0.75])
    bar = fig.colorbar(im, cax=cax)
    bar.set_label("share of participants with a PVS (smoothed)", color="white")
    bar.ax.yaxis.set_tick_params(color="white", labelcolor="white")
    bar.ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{100 * v:.0f} %"))
    fig.suptitle(f"PVS frequency in {SPACE}, {n} participant(s); left on the left",
                 color="white", fontsize=11)  # fmt: skip
    ctx.figure(fig, "frequency_map", fmt="png")
