"""A new PVS method and a new region scheme are one object each: registered from this file
alone (no package file touched), they run end to end through the ``mcpvs`` command line.

The dummy region scheme labels a synthetic head by geometry, the dummy segmenter takes the
voxels darker than 60 % of their region's median; the head holds two planted dark structures
of known size, so the measures are known exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest
from nipype.interfaces import utility as niu
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)
from nipype.pipeline import engine as pe

from mcpvs_bidsapp import methods
from mcpvs_bidsapp.cli.run import main
from mcpvs_bidsapp.methods.base import REGION_OUTPUTS, SEGMENTER_INPUTS, SEGMENTER_OUTPUTS
from mcpvs_bidsapp.outputs import spec
from mcpvs_bidsapp.outputs.provenance import N4Mask

SHAPE = (48, 48, 48)
CENTRE = np.array(SHAPE) // 2
WM_TUBE = [(CENTRE[0] + 6, CENTRE[1], CENTRE[2] + k) for k in range(-4, 4)]  # 8 voxels
BG_DOT = [(CENTRE[0] - 6 + i, CENTRE[1] + j, CENTRE[2] + k)
          for i in (0, 1) for j in (0, 1) for k in (0, 1)]  # fmt: skip


def _geometry():
    grid = np.indices(SHAPE).transpose(1, 2, 3, 0) - CENTRE
    radius = np.linalg.norm(grid, axis=-1)
    brain = radius < 20
    bg = np.zeros(SHAPE, bool)
    bg[
        CENTRE[0] - 9 : CENTRE[0] - 3, CENTRE[1] - 3 : CENTRE[1] + 4, CENTRE[2] - 3 : CENTRE[2] + 4
    ] = 1
    wm = (radius < 14) & ~bg
    return brain, bg, wm


def _head(path: Path) -> None:
    brain, bg, wm = _geometry()
    rng = np.random.default_rng(7)
    data = np.where(brain, 80.0, 0.0)
    data[wm] = 120.0
    data[bg] = 95.0
    for ijk in WM_TUBE + BG_DOT:
        data[ijk] = 30.0
    data = np.where(brain, data + rng.normal(0, 1.0, SHAPE), rng.normal(0, 0.5, SHAPE) ** 2)
    nb.Nifti1Image(data.astype(np.float32), np.eye(4)).to_filename(path)


class _GeometryRegionsInputSpec(BaseInterfaceInputSpec):
    t1w = File(exists=True, mandatory=True)


class _GeometryRegionsOutputSpec(TraitedSpec):
    brain_mask = File(exists=True)
    dseg = File(exists=True)
    icv_mm3 = traits.Float()


class GeometryRegions(SimpleInterface):
    input_spec = _GeometryRegionsInputSpec
    output_spec = _GeometryRegionsOutputSpec

    def _run_interface(self, runtime):
        img = nb.load(self.inputs.t1w)
        brain, bg, wm = _geometry()
        dseg = np.where(brain, int(spec.Region.OTHER), int(spec.Region.BACKGROUND))
        dseg[wm] = spec.Region.WM
        dseg[bg] = spec.Region.BG
        for key, data in (("brain_mask", brain), ("dseg", dseg)):
            out = Path(runtime.cwd) / f"{key}.nii.gz"
            nb.Nifti1Image(data.astype(np.uint8), img.affine).to_filename(out)
            self._results[key] = str(out)
        self._results["icv_mm3"] = float(brain.sum())
        return runtime


class DummyScheme:
    name = "geometry"
    summary = "test scheme: regions by geometry"

    def mem_gb(self, n_voxels):
        return 0.1

    def init_workflow(self, *, omp_nthreads, n_voxels, name="regions_wf"):
        wf = pe.Workflow(name=name)
        inputnode = pe.Node(niu.IdentityInterface(fields=["t1w"]), name="inputnode")
        outputnode = pe.Node(niu.IdentityInterface(fields=list(REGION_OUTPUTS)), name="outputnode")
        outputnode.inputs.regions_method = self.name
        outputnode.inputs.icv_source = "geometry (test)"
        regions = pe.Node(GeometryRegions(), name="regions")
        wf.connect([
            (inputnode, regions, [("t1w", "t1w")]),
            (regions, outputnode, [("brain_mask", "brain_mask"), ("dseg", "dseg"),
                                   ("icv_mm3", "icv_mm3")]),
        ])  # fmt: skip
        return wf

    def extraction_text(self, cite):
        return "brain-extracted by geometry"

    def regions_text(self, cite):
        return "a test geometry"


class _DarkInputSpec(BaseInterfaceInputSpec):
    preproc_t1w = File(exists=True, mandatory=True)
    regions_dseg = File(exists=True, mandatory=True)
    brain_mask = File(exists=True, mandatory=True)
    fraction = traits.Float(mandatory=True)


class _DarkOutputSpec(TraitedSpec):
    pvs_mask = File(exists=True)
    pvs_probseg = File(exists=True)
    parameters = traits.Dict()


class DarkVoxels(SimpleInterface):
    input_spec = _DarkInputSpec
    output_spec = _DarkOutputSpec

    def _run_interface(self, runtime):
        img = nb.load(self.inputs.preproc_t1w)
        data = np.asanyarray(img.dataobj)
        dseg = np.asanyarray(nb.load(self.inputs.regions_dseg).dataobj)
        mask = np.zeros(data.shape, np.uint8)
        for region in spec.PVS_REGIONS:
            inside = dseg == region
            mask[inside & (data < self.inputs.fraction * np.median(data[inside]))] = 1
        for key, arr in (("pvs_mask", mask), ("pvs_probseg", mask.astype(np.float32))):
            out = Path(runtime.cwd) / f"{key}.nii.gz"
            nb.Nifti1Image(arr, img.affine).to_filename(out)
            self._results[key] = str(out)
        self._results["parameters"] = {
            "Method": "darkvoxels",
            "Parameters": {"Fraction": self.inputs.fraction},
        }
        return runtime


class DummySegmenter:
    name = "darkvoxels"
    summary = "test segmenter: voxels darker than 60 % of their region"
    default_n4_mask = N4Mask.BRAIN
    auto_priority = None

    def available(self, settings):
        return True

    def resolve(self, settings):
        return {"fraction": 0.6}

    def mem_gb(self, n_voxels):
        return 0.1

    def init_workflow(self, *, options, omp_nthreads, n_voxels, name):
        wf = pe.Workflow(name=name)
        inputnode = pe.Node(niu.IdentityInterface(fields=list(SEGMENTER_INPUTS)), name="inputnode")
        outputnode = pe.Node(
            niu.IdentityInterface(fields=list(SEGMENTER_OUTPUTS)), name="outputnode"
        )
        seg = pe.Node(DarkVoxels(**options), name="darkvoxels")
        wf.connect([
            (inputnode, seg, [(f, f) for f in SEGMENTER_INPUTS]),
            (seg, outputnode, [(f, f) for f in SEGMENTER_OUTPUTS]),
        ])  # fmt: skip
        return wf

    def methods_text(self, provenance, cite):
        return "PVS were the dark voxels of a test."


@pytest.fixture
def registered(monkeypatch):
    methods.load_builtin()
    monkeypatch.setitem(methods.SEGMENTERS, "darkvoxels", None)
    monkeypatch.setitem(methods.REGION_SCHEMES, "geometry", None)
    methods.register_segmenter(DummySegmenter())
    methods.register_region_scheme(DummyScheme())
    yield


def test_registering_something_that_is_not_a_segmenter_fails():
    with pytest.raises(TypeError, match="PVSSegmenter"):
        methods.register_segmenter(object())


@pytest.mark.slow
def test_dummy_segmenter_and_scheme_run_end_to_end(registered, tmp_path, capsys):
    bids = tmp_path / "bids"
    anat = bids / "sub-01" / "anat"
    anat.mkdir(parents=True)
    (bids / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.9.0"}')
    _head(anat / "sub-01_T1w.nii.gz")
    plugin = tmp_path / "plugin.yml"
    plugin.write_text("plugin: Linear\n")  # in-process: the test's classes need no import path
    out = tmp_path / "out"
    code = main([
        str(bids), str(out), "participant", "--method", "darkvoxels", "--regions", "geometry",
        "-w", str(tmp_path / "work"), "--use-plugin", str(plugin), "--skip-bids-validation",
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    folder = out / "sub-01" / "anat"
    for derivative in spec.DERIVATIVES:
        assert (folder / derivative.name("sub-01")).is_file(), derivative.key
    mask_meta = json.loads(spec.sidecar_path(folder / spec.PVS_MASK.name("sub-01")).read_text())
    assert mask_meta["Method"] == "darkvoxels" and mask_meta["RegionsMethod"] == "geometry"
    measures = {
        row.split("\t")[0]: row.split("\t")
        for row in (folder / spec.MEASURES.name("sub-01")).read_text().splitlines()[1:]
    }
    columns = list(spec.MEASURE_COLUMNS)
    volume, count = columns.index("pvs_volume_mm3"), columns.index("pvs_count")
    assert float(measures["BG"][volume]) == len(BG_DOT) and int(measures["BG"][count]) == 1
    assert float(measures["WM"][volume]) == len(WM_TUBE) and int(measures["WM"][count]) == 1
    measures_meta = json.loads(spec.sidecar_path(folder / spec.MEASURES.name("sub-01")).read_text())
    assert measures_meta["N4Mask"] == "brain"  # the segmenter's own default N4 variant
    plan = json.loads(next((out / "sub-01" / "log").glob(f"*/{spec.PLAN_FILE}")).read_text())
    assert plan["method"] == "darkvoxels" and plan["regions"] == "geometry"
    assert plan["method_options"] == {"fraction": 0.6} and plan["n4_mask"] == "brain"
    report = (out / "sub-01.html").read_text()
    assert "PVS were the dark voxels of a test." in report
