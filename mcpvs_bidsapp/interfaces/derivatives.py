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
from importlib import metadata
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    Directory,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from mcpvs_bidsapp import __version__
from mcpvs_bidsapp.bids import T1wInput, parse_entities
from mcpvs_bidsapp.interfaces.n4 import n4_variant
from mcpvs_bidsapp.io import stage, write_text

REGION_TABLE = [(0, "background"), (1, "BG"), (2, "WM"), (3, "other")]
MEASURE_DESCRIPTIONS = {
    "region": {
        "Description": "BG (basal ganglia), WM (cerebral white matter) or whole_brain",
    },
    "pvs_volume_mm3": {"Description": "PVS volume in the region", "Units": "mm^3"},
    "pvs_count": {
        "Description": "PVS clusters (26-connected) whose centroid lies in the region",
    },
    "mean_cluster_volume_mm3": {"Description": "pvs_volume_mm3 / pvs_count", "Units": "mm^3"},
    "region_volume_mm3": {"Description": "volume of the region", "Units": "mm^3"},
    "icv_mm3": {"Description": "intracranial volume (see IcvSource)", "Units": "mm^3"},
    "pvsnm": {"Description": "normalised PVS volume, 1e6 * pvs_volume_mm3 / icv_mm3"},
    "wmh_overlap_pct": {
        "Description": "percentage of the region's PVS voxels inside the WMH mask",
        "Units": "%",
    },
}
_PACKAGES = (
    "nipype",
    "nibabel",
    "numpy",
    "antspyx",
    "intensity-normalization",
    "deepbet",
    "samseg",
    "nnunetv2",
    "torch",
    "scikit-image",
    "scipy",
)


def software_versions(extra: tuple[str, ...] = ()) -> dict:
    """Versions of mcpvs and of the packages that made the outputs."""
    versions = {"mcpvs": __version__}
    for name in _PACKAGES + extra:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


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
        t1w = T1wInput(path=source, entities=parse_entities(source))
        anat = out_root / t1w.anat_dir
        prefix = t1w.prefix

        def rel(name: str) -> str:
            return str((t1w.anat_dir / f"{prefix}_{name}").as_posix())

        raw_uri = f"bids:raw:{source.relative_to(bids_dir).as_posix()}"
        versions = software_versions()
        seg = dict(inputs.segment_parameters)
        method = seg.get("Method", "unknown")
        model = seg.get("Model") or {}
        common = {"SoftwareVersions": versions}
        if inputs.warnings:
            common["Warnings"] = list(inputs.warnings)

        ref = nb.load(str(source))
        images = {
            "desc-brain_mask.nii.gz": (
                inputs.brain_mask,
                np.uint8,
                {
                    "Sources": [raw_uri],
                    "Type": "Brain",
                    "RegionsMethod": inputs.regions_method,
                },
            ),
            "desc-preproc_T1w.nii.gz": (
                inputs.preproc_t1w,
                np.float32,
                {
                    "Sources": [raw_uri, rel("desc-brain_mask.nii.gz")],
                    "SkullStripped": True,
                    "Description": "brain-masked T1w after N4 bias correction and FCM "
                    "white-matter intensity normalisation",
                    "N4": dict(inputs.n4_parameters),
                    "IntensityNormalization": dict(inputs.fcm_parameters),
                },
            ),
            "desc-regions_dseg.nii.gz": (
                inputs.regions_dseg,
                np.uint8,
                {
                    "Sources": [raw_uri],
                    "RegionsMethod": inputs.regions_method,
                    "Labels": {str(i): n for i, n in REGION_TABLE},
                },
            ),
        }
        pvs_meta = {
            "Sources": [raw_uri, rel("desc-preproc_T1w.nii.gz"), rel("desc-regions_dseg.nii.gz")],
            **seg,
            "RegionsMethod": inputs.regions_method,
            # the method's own versions (e.g. CUDA for nnU-Net) plus everything else
            "SoftwareVersions": {**seg.get("SoftwareVersions", {}), **versions},
        }
        images["space-T1w_desc-pvs_mask.nii.gz"] = (inputs.pvs_mask, np.uint8, pvs_meta)
        images["space-T1w_desc-pvs_probseg.nii.gz"] = (
            inputs.pvs_probseg,
            np.float32,
            {**pvs_meta, "Description": "PVS probability (nnunet) or score (vesselness), 0-1"},
        )

        measures_meta = {
            **MEASURE_DESCRIPTIONS,
            "Method": method,
            "ModelName": model.get("Name", "n/a"),
            "ModelChecksum": model.get("Checksum", "n/a"),
            "RegionsMethod": inputs.regions_method,
            "N4Mask": n4_variant(dict(inputs.n4_parameters)),
            "IcvSource": inputs.icv_source,
            "Sources": [rel("space-T1w_desc-pvs_mask.nii.gz"), rel("desc-regions_dseg.nii.gz")],
            **common,
        }
        if isdefined(inputs.wmh_file) and inputs.wmh_file:
            measures_meta["WMHSource"] = str(inputs.wmh_file)

        staged: list[tuple[Path, Path]] = []
        anat.mkdir(parents=True, exist_ok=True)
        try:
            for name, (src, dtype, meta) in images.items():
                data = np.asanyarray(nb.load(src).dataobj).astype(dtype)
                if data.shape != ref.shape[:3]:
                    raise RuntimeError(f"{name}: shape {data.shape} != input {ref.shape[:3]}")
                header = ref.header.copy()
                header.set_data_dtype(dtype)
                header.set_slope_inter(1, 0)
                out = nb.Nifti1Image(data, ref.affine, header)
                final = anat / f"{prefix}_{name}"
                staged.append((stage(final, out.to_filename), final))
                sidecar = final.with_name(final.name.replace(".nii.gz", ".json"))
                payload = json.dumps({**common, **meta}, indent=2, default=str) + "\n"
                staged.append((stage(sidecar, lambda p, s=payload: Path(p).write_text(s)), sidecar))
            for name, src in (
                ("desc-pvs_measures.tsv", inputs.measures),
                ("desc-pvs_clusters.tsv", inputs.clusters),
            ):
                final = anat / f"{prefix}_{name}"
                staged.append((stage(final, lambda p, s=src: shutil.copyfile(s, p)), final))
            mjson = anat / f"{prefix}_desc-pvs_measures.json"
            payload = json.dumps(measures_meta, indent=2, default=str) + "\n"
            staged.append((stage(mjson, lambda p: Path(p).write_text(payload)), mjson))
            # every file is complete on disk: now make them all visible
            for tmp, final in staged:
                os.replace(tmp, final)
        finally:
            for tmp, _ in staged:
                if tmp.exists():
                    tmp.unlink()
        self._results["out_files"] = [str(final) for _, final in staged]
        return runtime


def write_region_table(out_root: Path) -> Path:
    """Top-level ``desc-regions_dseg.tsv`` (index, name), shared by every dseg."""
    final = out_root / "desc-regions_dseg.tsv"
    table = pd.DataFrame(REGION_TABLE, columns=["index", "name"])
    text = table.to_csv(sep="\t", index=False)
    if not final.exists() or final.read_text() != text:
        write_text(final, text)
    return final
