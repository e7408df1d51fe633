"""Reproducible ANTsPy registration: the same inputs give byte-identical warps, on any machine.

Two things made ``ants.registration`` differ run to run (measured on a 2 mm head, Samseg
priors warped by affine + SyN with Mattes MI; largest voxel difference of the warped priors):

* ANTsPy 0.6 silently ignores a ``random_seed=`` keyword; ``antsRegistration`` then seeds its
  metric sampler from the clock (0.96).  ANTsPy's only seed hook is ``ants.config._random_seed``,
  which it turns into ``--random-seed``.
* ITK's Mattes mutual information adds every thread's samples into one joint histogram in
  arrival order, so with more than one thread the result changes even with a fixed seed (0.97).
  Global correlation, mean squares and CC did not, but Mattes is the metric the regions were
  validated with.  ITK reads ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` once per process, so
  setting it inside a worker that already ran ITK (Nipype's MultiProc reuses workers) is too
  late.

So the registration runs in a child process with one ITK thread and a fixed seed: with a fixed
seed and one thread, two runs were identical (0.0), and the result no longer depends on
``--omp-nthreads`` or on the node a SLURM task lands on.  One thread costs little wall time in
the workflow, where N4 runs beside the registration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: the seed every registration of the app uses unless told otherwise
DEFAULT_SEED = 1


@dataclass
class Warp:
    """One image to carry from the moving space onto the fixed image's full grid."""

    moving_file: str
    out_file: str
    interpolator: str = "linear"


@dataclass
class RegistrationJob:
    """Everything the child needs: files, ``ants.registration`` keywords and the warps."""

    fixed_file: str
    moving_file: str
    warps: list[Warp]
    #: register on this isotropic grid (mm); the warps still land on the fixed full grid
    reg_spacing_mm: float | None = 2.0
    seed: int = DEFAULT_SEED
    registration_kwargs: dict = field(default_factory=dict)


def run_registration(job: RegistrationJob) -> None:
    """Run ``job`` in a child process with one ITK thread and a fixed seed; raise on failure."""
    with tempfile.TemporaryDirectory(prefix="mcpvs_reg_") as tmp:
        job_file = Path(tmp) / "job.json"
        job_file.write_text(json.dumps(asdict(job)))
        env = dict(os.environ, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS="1", OMP_NUM_THREADS="1")
        proc = subprocess.run(
            [sys.executable, "-m", "mcpvs_bidsapp.registration", str(job_file)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"ANTs registration of {Path(job.moving_file).name} failed: {last}")


def _run_in_child(job_file: str) -> None:
    import ants

    raw = json.loads(Path(job_file).read_text())
    job = RegistrationJob(**{**raw, "warps": [Warp(**w) for w in raw["warps"]]})
    # ANTsPy's only seed hook (see the module docstring); becomes --random-seed
    ants.config._random_seed = job.seed
    fixed_full = ants.image_read(job.fixed_file)
    moving_full = ants.image_read(job.moving_file)
    if job.reg_spacing_mm:
        spacing = (float(job.reg_spacing_mm),) * 3
        fixed = ants.resample_image(fixed_full, spacing, use_voxels=False, interp_type=0)
        moving = ants.resample_image(moving_full, spacing, use_voxels=False, interp_type=0)
    else:
        fixed, moving = fixed_full, moving_full
    with tempfile.TemporaryDirectory(prefix="mcpvs_reg_tx_") as tmp:
        reg = ants.registration(
            fixed, moving, outprefix=str(Path(tmp) / "reg_"), **job.registration_kwargs
        )
        for warp in job.warps:
            out = ants.apply_transforms(
                fixed_full,
                ants.image_read(warp.moving_file),
                reg["fwdtransforms"],
                interpolator=warp.interpolator,
            )
            out.to_file(warp.out_file)


if __name__ == "__main__":
    _run_in_child(sys.argv[1])
