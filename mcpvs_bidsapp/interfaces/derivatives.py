"""Commit the derivatives of one T1w, all together and atomically.

Why not niworkflows' DerivativesDataSink: it writes each file as its node finishes and in
place, so a crash later in the workflow leaves a partial set behind and a crash while writing
leaves a half file. Here one node, run only when every step of the T1w has succeeded, stages
every file under a temporary name beside its final one and renames them all at the end.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nb
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    Directory,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from mcpvs_bidsapp.bids import T1wInput
from mcpvs_bidsapp.engine.processes import held_signals
from mcpvs_bidsapp.errors import OutputFolderError
from mcpvs_bidsapp.orientation import to_grid
from mcpvs_bidsapp.outputs import spec
from mcpvs_bidsapp.outputs.provenance import Key, N4Mask, n4_label, software_versions
from mcpvs_bidsapp.outputs.read import t1w_entities, written_by_mcpvs
from mcpvs_bidsapp.outputs.write import resolve_target, stage


class _WriteInputSpec(BaseInterfaceInputSpec):
    base_directory = Directory(mandatory=True, desc="output_dir (derivatives root)")
    bids_dir = Directory(mandatory=True, desc="input BIDS root, for BIDS URIs")
    source_file = File(exists=True, mandatory=True, desc="the input T1w")
    brain_mask = File(exists=True, mandatory=True)
    preproc_t1w = File(exists=True, mandatory=True)
    regions_dseg = File(exists=True, mandatory=True)
    pvs_mask = File(exists=True, mandatory=True)
    pvs_probseg = File(exists=True, mandatory=True)
    measures = File(exists=True, mandatory=True)
    clusters = File(exists=True, mandatory=True)
    segment_parameters = traits.Dict(mandatory=True, desc="Method, Parameters/Model, ...")
    n4_parameters = traits.Dict({}, usedefault=True)
    fcm_parameters = traits.Dict({}, usedefault=True)
    regions_method = traits.Str(mandatory=True)
    icv_source = traits.Str(mandatory=True)
    warnings = traits.List(traits.Str, [], usedefault=True)
    wmh_file = File(desc="WMH mask used for the overlap, if any")
    lesion_file = File(desc="lesion mask given for this T1w, if any")
    qc_flags = traits.Dict({}, usedefault=True, desc="QCFlags / QCChecks (measures.qc_flags)")


class _WriteOutputSpec(TraitedSpec):
    out_files = traits.List(File(exists=True), desc="every file written")


class WriteDerivatives(SimpleInterface):
    """Write the BIDS-Derivatives of one T1w (images, sidecars, tables) atomically."""

    input_spec = _WriteInputSpec
    output_spec = _WriteOutputSpec

    def _run_interface(self, runtime):
        inputs = self.inputs
        out_root = Path(inputs.base_directory)
        bids_dir = Path(inputs.bids_dir)
        source = Path(inputs.source_file)
        t1w = T1wInput(path=source, entities=t1w_entities(source))
        anat = out_root / t1w.anat_dir
        prefix = t1w.prefix

        def rel(derivative: spec.Derivative) -> str:
            return str((t1w.anat_dir / derivative.name(prefix)).as_posix())

        raw_uri = f"bids:raw:{source.relative_to(bids_dir).as_posix()}"
        versions = software_versions()
        seg = dict(inputs.segment_parameters)
        method = seg.get(Key.METHOD, "unknown")
        model = seg.get(Key.MODEL) or {}
        common = {Key.SOFTWARE_VERSIONS: versions}
        if inputs.warnings:
            common[Key.WARNINGS] = list(inputs.warnings)

        ref = nb.load(str(source))
        images = {
            spec.BRAIN_MASK: (
                inputs.brain_mask,
                {
                    Key.SOURCES: [raw_uri],
                    "Type": "Brain",
                    Key.REGIONS_METHOD: inputs.regions_method,
                },
            ),
            spec.PREPROC_T1W: (
                inputs.preproc_t1w,
                {
                    Key.SOURCES: [raw_uri, rel(spec.BRAIN_MASK)],
                    "SkullStripped": True,
                    Key.DESCRIPTION: spec.PREPROC_T1W.description,
                    Key.N4: dict(inputs.n4_parameters),
                    Key.INTENSITY_NORMALIZATION: dict(inputs.fcm_parameters),
                },
            ),
            spec.REGIONS_DSEG: (
                inputs.regions_dseg,
                {
                    Key.SOURCES: [raw_uri],
                    Key.REGIONS_METHOD: inputs.regions_method,
                    Key.LABELS: {str(i): n for i, n in spec.REGION_TABLE},
                },
            ),
        }
        pvs_meta = {
            Key.SOURCES: [raw_uri, rel(spec.PREPROC_T1W), rel(spec.REGIONS_DSEG)],
            **seg,
            Key.REGIONS_METHOD: inputs.regions_method,
            # the method's own versions (e.g. CUDA for nnU-Net) plus everything else
            Key.SOFTWARE_VERSIONS: {**seg.get(Key.SOFTWARE_VERSIONS, {}), **versions},
        }
        if isdefined(inputs.lesion_file) and inputs.lesion_file:
            pvs_meta[Key.LESION_SOURCE] = str(inputs.lesion_file)
        images[spec.PVS_MASK] = (inputs.pvs_mask, pvs_meta)
        images[spec.PVS_PROBSEG] = (
            inputs.pvs_probseg,
            {**pvs_meta, Key.DESCRIPTION: spec.PVS_PROBSEG.description},
        )

        measures_meta = {
            **spec.MEASURE_COLUMNS,
            Key.METHOD: method,
            Key.MODEL_NAME: model.get("Name", "n/a"),
            Key.MODEL_CHECKSUM: model.get("Checksum", "n/a"),
            Key.REGIONS_METHOD: inputs.regions_method,
            Key.N4_MASK: n4_label(N4Mask.from_record(dict(inputs.n4_parameters))),
            Key.ICV_SOURCE: inputs.icv_source,
            Key.SOURCES: [rel(spec.PVS_MASK), rel(spec.REGIONS_DSEG)],
            **common,
        }
        if isdefined(inputs.wmh_file) and inputs.wmh_file:
            measures_meta[Key.WMH_SOURCE] = str(inputs.wmh_file)
        if isdefined(inputs.lesion_file) and inputs.lesion_file:
            measures_meta[Key.LESION_SOURCE] = str(inputs.lesion_file)
        qc = dict(inputs.qc_flags or {})
        if qc:
            measures_meta[Key.QC_FLAGS] = list(qc.get(Key.QC_FLAGS, []))
            measures_meta[Key.QC_CHECKS] = dict(qc.get(Key.QC_CHECKS, {}))

        finals = [anat / d.name(prefix) for d in (*images, spec.MEASURES, spec.CLUSTERS)]
        finals += [spec.sidecar_path(anat / d.name(prefix)) for d in (*images, spec.MEASURES)]
        for final in finals:
            resolve_target(final, out_root)
            if final.exists() and not written_by_mcpvs(final):
                raise OutputFolderError(
                    f"{final}: exists and was not written by mcpvs; refusing to replace it "
                    "(move it, or use an output folder of mcpvs's own)"
                )
        staged: list[tuple[Path, Path]] = []
        anat.mkdir(parents=True, exist_ok=True)
        # SIGTERM (a SLURM time limit) while staging: the staged files are removed, then the
        # worker ends; while renaming: every rename is made first (issue #17, item 14)
        with held_signals() as check:
            try:
                for derivative, (src, meta) in images.items():
                    dtype = np.dtype(derivative.dtype)
                    try:  # steps ran on the RAS+ copy: back to the input's voxel order, exactly
                        data = to_grid(nb.load(src), ref).astype(dtype)
                    except ValueError as err:
                        raise RuntimeError(f"{derivative.entities}: {err}") from None
                    header = ref.header.copy()
                    header.set_data_dtype(dtype)
                    header.set_slope_inter(1, 0)
                    out = nb.Nifti1Image(data, ref.affine, header)
                    final = anat / derivative.name(prefix)
                    check()
                    staged.append((stage(final, out.to_filename, root=out_root), final))
                    sidecar = spec.sidecar_path(final)
                    payload = json.dumps({**common, **meta}, indent=2, default=str) + "\n"
                    write = lambda p, s=payload: Path(p).write_text(s)  # noqa: E731
                    staged.append((stage(sidecar, write, root=out_root), sidecar))
                for derivative, src in (
                    (spec.MEASURES, inputs.measures),
                    (spec.CLUSTERS, inputs.clusters),
                ):
                    final = anat / derivative.name(prefix)
                    copy = lambda p, s=src: shutil.copyfile(s, p)  # noqa: E731
                    check()
                    staged.append((stage(final, copy, root=out_root), final))
                mjson = spec.sidecar_path(anat / spec.MEASURES.name(prefix))
                payload = json.dumps(measures_meta, indent=2, default=str) + "\n"
                staged.append(
                    (stage(mjson, lambda p: Path(p).write_text(payload), root=out_root), mjson)
                )
                check()
                # every file is complete on disk: now make them all visible, the commit marker
                # last (its presence means the whole set is there; a SIGKILL between two renames
                # leaves a set without it, which a rerun replaces)
                marker = anat / spec.COMMIT_MARKER.name(prefix)
                for tmp, final in sorted(staged, key=lambda pair: pair[1] == marker):
                    os.replace(tmp, final)
            finally:
                for tmp, _ in staged:
                    if tmp.exists():
                        tmp.unlink()
        self._results["out_files"] = [str(final) for _, final in staged]
        return runtime
