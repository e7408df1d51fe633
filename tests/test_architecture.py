"""The package's contracts hold in the code itself (docs/architecture.md).

* every derivative name and the region table are spelled in ``outputs/spec.py`` alone;
* ``group/``, ``reports/`` and ``cli/`` never import ``interfaces/`` (they read outputs);
* module-level imports form no cycle;
* every registered segmenter and region scheme satisfies its protocol.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import mcpvs_bidsapp
from mcpvs_bidsapp import methods
from mcpvs_bidsapp.methods.base import PVSSegmenter, RegionScheme
from mcpvs_bidsapp.outputs import spec

PACKAGE = Path(mcpvs_bidsapp.__file__).parent
SPEC = PACKAGE / "outputs" / "spec.py"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, module: str, *, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = module.split(".")
                if path.name != "__init__.py":
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            for alias in node.names:
                found.add(f"{target}.{alias.name}")
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {f for f in found if f.startswith("mcpvs_bidsapp")}


def test_derivative_names_and_region_table_live_in_spec_alone():
    names = [d.entities for d in spec.DERIVATIVES] + [spec.REGION_TABLE_FILE]
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path == SPEC:
            continue
        text = path.read_text()
        offenders += [f"{path.relative_to(PACKAGE)}: {n}" for n in names if n in text]
        # the region table as literals: a mapping of 1/2 to BG/WM
        if re.search(r"""\{\s*1\s*:\s*["']BG["']|["']BG["']\s*:\s*1\b""", text):
            offenders.append(f"{path.relative_to(PACKAGE)}: region codes")
    assert not offenders, offenders


def test_group_reports_and_cli_do_not_import_interfaces():
    offenders = []
    for module, path in _modules().items():
        if module.split(".")[1:2] in (["group"], ["reports"], ["cli"]):
            bad = [m for m in _imports(path, module, top_level_only=False) if ".interfaces" in m]
            offenders += [f"{module} -> {m}" for m in bad]
    assert not offenders, offenders


def test_no_import_cycle_at_module_level():
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        targets = set()
        for imported in _imports(path, module, top_level_only=True):
            # "a.b.name" may be a module or a name in module "a.b"
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != module:
                targets.add(imported)
        graph[module] = targets
    # a package imports its __init__ first: that is not a cycle of ours
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                if not all(b.startswith(a + ".") for a, b in zip(cycle, cycle[1:], strict=False)):
                    cycles.append(" -> ".join(cycle))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


@pytest.mark.parametrize("name", methods.segmenter_names())
def test_registered_segmenters_satisfy_the_protocol(name):
    segmenter = methods.segmenter(name)
    assert isinstance(segmenter, PVSSegmenter) and segmenter.name == name
    assert segmenter.mem_gb(11_000_000) > 0


@pytest.mark.parametrize("name", methods.region_scheme_names())
def test_registered_region_schemes_satisfy_the_protocol(name):
    scheme = methods.region_scheme(name)
    assert isinstance(scheme, RegionScheme) and scheme.name == name
    wf = scheme.init_workflow(omp_nthreads=1, n_voxels=1_000_000, name="regions_wf")
    assert wf.get_node("outputnode").inputs.regions_method == name
