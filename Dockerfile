# mcpvs BIDS-App image (docs/container.md).
#
#   CUDA torch from PyPI (the default, for GPU machines):
#     docker build -t mcpvs:<version> --build-arg VERSION=<version> .
#   CPU-only torch (CI, CPU clusters), from an index or a TORCH_FIND_LINKS folder URL:
#     docker build --build-arg TORCH_VARIANT=cpu \
#                  --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
#   mcPVS-Net weights baked in: put <name>.zip (nnUNetv2_export_model_to_zip) in docker/models/.
#
# Nothing is downloaded at run time: the Samseg atlas and the deepbet weights ship inside
# their wheels, templates come from nilearn's bundled MNI152, and the model store is either
# baked in here or mounted over /opt/mcpvs/models.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE} AS base

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Debian's python3 is 3.11, the version the lock file was resolved for. Packages are not
# version-pinned: the base image (a dated Debian snapshot in CI) fixes them.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates python3 python3-venv libgomp1 \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

# The build trusts the system CA bundle (a base image may add a site CA to it); run-time
# needs no network at all.
ENV PATH=/opt/venv/bin:${PATH} \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt

# surfa (Samseg's I/O library) has no wheel on PyPI: build it here with a compiler that the
# image itself never carries; only the wheel crosses over.
FROM base AS wheels
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        gcc libc6-dev python3-dev \
    && rm -rf /var/lib/apt/lists/*
COPY requirements/constraints.txt /tmp/constraints.txt
RUN python3 -m venv /opt/wheelbuild \
    && /opt/wheelbuild/bin/pip wheel --no-deps --wheel-dir /wheels \
         "$(grep -E '^surfa==' /tmp/constraints.txt)"

FROM base AS runtime
# cuda: torch==TORCH_VERSION from PyPI (or TORCH_INDEX_URL, e.g. .../whl/cu126)
# cpu:  torch==TORCH_VERSION+cpu from TORCH_FIND_LINKS or TORCH_INDEX_URL (.../whl/cpu)
ARG TORCH_VARIANT=cuda
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=
ENV MCPVS_TORCH_VARIANT=${TORCH_VARIANT}
# torch first, so the lock (which pins the CPU build) never swaps it for another variant.
# ${spec} is pinned (torch==TORCH_VERSION[+cpu]). TORCH_FIND_LINKS is a URL of a folder of
# wheels (CI serves /opt/wheels on localhost with --network host): a COPY'd wheel would stay
# in its layer and add ~190 MB to the image.
ARG TORCH_FIND_LINKS=
# hadolint ignore=DL3013
RUN python3 -m venv /opt/venv \
    && case "${TORCH_VARIANT}" in \
         cpu) spec="torch==${TORCH_VERSION}+cpu" ;; \
         cuda) spec="torch==${TORCH_VERSION}" ;; \
         *) echo "TORCH_VARIANT must be cpu or cuda, not '${TORCH_VARIANT}'" >&2; exit 1 ;; \
       esac \
    && pip install \
         ${TORCH_FIND_LINKS:+--find-links "${TORCH_FIND_LINKS}"} \
         ${TORCH_INDEX_URL:+--index-url "${TORCH_INDEX_URL}" --extra-index-url https://pypi.org/simple} \
         "${spec}"

# Dependencies in their own layer (keyed on setup.cfg and the lock, not on the code), from
# setup.cfg's install_requires under requirements/constraints.txt with torch re-pinned to the
# build installed above.
WORKDIR /opt/mcpvs/build
COPY setup.cfg setup.cfg
COPY requirements/constraints.txt constraints.lock.txt
COPY --from=wheels /wheels /tmp/wheels
RUN torch_version="$(python -c 'import torch; print(torch.__version__)')" \
    && grep -vE '^torch==' constraints.lock.txt > constraints.txt \
    && echo "torch==${torch_version}" >> constraints.txt \
    && python -c "import configparser; c = configparser.ConfigParser(); c.read('setup.cfg'); print(c['options']['install_requires'])" > requirements.txt \
    && pip install --find-links /tmp/wheels -c constraints.txt -r requirements.txt \
    && rm -rf /tmp/wheels \
    && python -c "import torch; assert torch.__version__ == '${torch_version}', torch.__version__"

# The package itself: the only layer a code change rebuilds.
COPY setup.cfg pyproject.toml README.md /tmp/src/
COPY mcpvs_bidsapp /tmp/src/mcpvs_bidsapp
RUN pip install --no-deps -c /opt/mcpvs/build/constraints.txt /tmp/src \
    && rm -rf /tmp/src \
    && mcpvs --version

# Optional baked-in models, in their own stage so the archives never reach the image:
# docker/models/<name>.zip (nnUNetv2_export_model_to_zip archives, e.g. mcpvsnet.zip) are
# installed as <name>, with the sha256 sums that `mcpvs models verify` re-checks read-only.
FROM runtime AS models
COPY docker/models/ /tmp/models/
RUN mkdir -p /opt/mcpvs/models \
    && for zip in /tmp/models/*.zip; do \
         [ -e "${zip}" ] || continue; \
         mcpvs models install "${zip}" --name "$(basename "${zip}" .zip)" --model-store /opt/mcpvs/models \
         || exit 1; \
       done

FROM runtime
COPY --from=models /opt/mcpvs/models /opt/mcpvs/models
# Runs as any uid (docker -u, Apptainer) on a read-only root: everything written at run time
# goes to /tmp (a tmpfs), the output folder or the work dir.
RUN chmod -R a+rX /opt/mcpvs \
    && useradd --create-home --uid 1000 --user-group --shell /usr/sbin/nologin mcpvs
ENV MCPVS_MODEL_STORE=/opt/mcpvs/models \
    MCPVS_CONTAINER_TYPE=docker \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/.cache/matplotlib \
    NUMBA_CACHE_DIR=/tmp/.cache/numba \
    NIPYPE_NO_ET=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 1000:1000
WORKDIR /tmp

# Last, so that a new version, commit or date never invalidates the layers above.
ARG VERSION=0+unknown
ARG VCS_REF=unknown
ARG BUILD_DATE=unknown
ENV MCPVS_CONTAINER_TAG="mcpvs:${VERSION}"
LABEL org.opencontainers.image.title="mcpvs" \
      org.opencontainers.image.description="BIDS-App that segments and measures perivascular spaces (PVS) on 3D T1w MRI (mcPVS-Net / nnU-Net v2 or a built-in vesselness method)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.source="https://github.com/mcpvs/mcpvs" \
      org.opencontainers.image.documentation="https://github.com/mcpvs/mcpvs/blob/main/docs/container.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="mcpvs developers" \
      org.mcpvs.torch-variant="${MCPVS_TORCH_VARIANT}"
ENTRYPOINT ["mcpvs"]
CMD ["--help"]
