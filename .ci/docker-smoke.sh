#!/usr/bin/env bash
# Smoke test of a built mcpvs image, run the way users and Apptainer run it: no network, a
# read-only root with a tmpfs /tmp, a uid the image does not know, read-only inputs;
# participant then group on a small real BIDS dataset, then the outputs are checked.
#
#   .ci/docker-smoke.sh IMAGE
#
# Used by .ci/docker.sh (our CI) and .circleci/config.yml. Environment:
#   MCPVS_SHARED_DATA     folder with t1w/<the heads of mcpvs_bidsapp.synthetic.datasets.REAL_HEADS>
#                         (default ../shared/data); the dataset is make_small_bids(n=2, 2 mm)
#   MCPVS_SMOKE_HEADS     instead: a folder of *.nii.gz heads, one participant each (CircleCI)
#   MCPVS_SMOKE_UID       uid:gid to run as (default: yours, or 4242:4242 when you are root)
#   MCPVS_SMOKE_ARGS      participant options (default: --regions fast --n4-mask brain
#                         --method vesselness)
#   MCPVS_SMOKE_NPROCS    --nprocs / --omp-nthreads (default 2)
#   MCPVS_SMOKE_ZOOM_MM   voxel size the heads are resampled to (default 2.0)
#   MCPVS_CI_ARTEFACTS    logs and figures go to $MCPVS_CI_ARTEFACTS/docker (default ./ci-artefacts)
#   MCPVS_DOCKER_KEEP=1   keep the temporary folder (printed)
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${1:?usage: .ci/docker-smoke.sh IMAGE}
ART=${MCPVS_CI_ARTEFACTS:-$PWD/ci-artefacts}/docker
SMOKE_ARGS=${MCPVS_SMOKE_ARGS:---regions fast --n4-mask brain --method vesselness}
NPROCS=${MCPVS_SMOKE_NPROCS:-2}
ZOOM=${MCPVS_SMOKE_ZOOM_MM:-2.0}
mkdir -p "$ART"
log() { printf '%s docker-smoke: %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { log "FAILED: $*"; exit 1; }
mark() { printf '%s\t%s\n' "$1" "$2" | tee -a "$ART/timings.tsv"; }

if [ -n "${MCPVS_SMOKE_HEADS:-}" ]; then
    HEADS=$(realpath "$MCPVS_SMOKE_HEADS")
    ls "$HEADS"/*.nii.gz >/dev/null 2>&1 || die "$HEADS: no *.nii.gz heads"
    inputs=(-v "$HEADS:/heads:ro")
    make_py="from pathlib import Path; from mcpvs_bidsapp.synthetic.datasets import resample_head
heads = sorted(Path('/heads').glob('*.nii.gz'))
Path('/bids/dataset_description.json').write_text('{\"Name\": \"mcpvs smoke\", \"BIDSVersion\": \"1.9.0\"}')
rows = ['participant_id\tage']
for i, head in enumerate(heads, 1):
    resample_head(head, Path(f'/bids/sub-{i:02d}/anat/sub-{i:02d}_T1w.nii.gz'), $ZOOM)
    rows.append(f'sub-{i:02d}\t{60 + 5 * i}')
Path('/bids/participants.tsv').write_text('\n'.join(rows) + '\n')"
else
    SHARED_DATA=$(realpath "${MCPVS_SHARED_DATA:-$PWD/../shared/data}")
    [ -d "$SHARED_DATA/t1w" ] || die "$SHARED_DATA/t1w: no real heads for the smoke dataset"
    inputs=(-v "$SHARED_DATA:/shared:ro")
    make_py="from mcpvs_bidsapp.synthetic.datasets import make_small_bids
make_small_bids('/bids', '/shared', n_participants=2, zoom_mm=$ZOOM)"
fi

UIDGID=${MCPVS_SMOKE_UID:-$(id -u):$(id -g)}
[ "${UIDGID%%:*}" != 0 ] || UIDGID=4242:4242
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mcpvs-docker-smoke.XXXX")
[ "${MCPVS_DOCKER_KEEP:-0}" = 1 ] && log "keeping $WORK" || trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/bids" "$WORK/out" "$WORK/work"
chmod 755 "$WORK"
if [ "$UIDGID" != "$(id -u):$(id -g)" ]; then
    chown "$UIDGID" "$WORK/bids" "$WORK/out" "$WORK/work"
fi
run=(docker run --rm --network none --read-only --tmpfs /tmp -u "$UIDGID")
mounts=(-v "$WORK/bids:/data:ro" -v "$WORK/out:/out" -v "$WORK/work:/work")

log "image $IMAGE as uid:gid $UIDGID, --network none --read-only"
version=$("${run[@]}" "$IMAGE" --version) || die "mcpvs --version in the image"
echo "$version" >"$ART/version.txt"
label=$(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.version"}}' "$IMAGE")
[ "$version" = "mcpvs $label" ] || die "'$version' but the OCI version label says '$label'"

t=$SECONDS
"${run[@]}" "${inputs[@]}" -v "$WORK/bids:/bids" --entrypoint python "$IMAGE" -c "$make_py" \
    || die "making the smoke dataset"
mapfile -t subs < <(cd "$WORK/bids" && ls -d sub-* | sed 's/^sub-//')
[ ${#subs[@]} -ge 2 ] || die "smoke dataset has ${#subs[@]} participants"
mark smoke_dataset_s $((SECONDS - t))

t=$SECONDS
log "participant: mcpvs /data /out participant -w /work --nprocs $NPROCS $SMOKE_ARGS"
# shellcheck disable=SC2086  # SMOKE_ARGS is a list of options
"${run[@]}" "${mounts[@]}" "$IMAGE" /data /out participant -w /work \
    --nprocs "$NPROCS" --omp-nthreads "$NPROCS" $SMOKE_ARGS \
    >"$ART/participant.log" 2>&1 || { tail -n 40 "$ART/participant.log"; die "participant level"; }
mark smoke_participant_s $((SECONDS - t))
for sub in "${subs[@]}"; do
    anat=$WORK/out/sub-$sub/anat
    for f in "sub-${sub}_space-T1w_desc-pvs_mask.nii.gz" "sub-${sub}_desc-pvs_measures.tsv" \
        "sub-${sub}_desc-pvs_measures.json"; do
        [ -s "$anat/$f" ] || die "missing $anat/$f"
    done
    grep -q '^whole_brain' "$anat/sub-${sub}_desc-pvs_measures.tsv" \
        || die "sub-${sub}_desc-pvs_measures.tsv has no whole_brain row"
    [ -s "$WORK/out/sub-$sub.html" ] || die "missing sub-$sub.html"
done
# contents, checked inside the image (it has nibabel and pandas; the host may not)
check_py="import json, sys
from pathlib import Path
import nibabel as nb, numpy as np, pandas as pd
gen = json.loads(Path('/out/dataset_description.json').read_text())['GeneratedBy'][0]
assert gen.get('Container', {}).get('Type') == 'docker', gen
assert gen.get('Version') == sys.argv[1], gen
for t1w in sorted(Path('/data').glob('sub-*/anat/*_T1w.nii.gz')):
    sub = t1w.name.split('_')[0]
    prefix = t1w.name[: -len('_T1w.nii.gz')]
    mask = nb.load(f'/out/{sub}/anat/{prefix}_space-T1w_desc-pvs_mask.nii.gz')
    ref = nb.load(t1w)
    assert mask.shape == ref.shape and np.allclose(mask.affine, ref.affine), (sub, mask.shape)
    values = set(np.unique(np.asanyarray(mask.dataobj)).tolist())
    assert values <= {0, 1}, (sub, values)
    table = pd.read_csv(f'/out/{sub}/anat/{prefix}_desc-pvs_measures.tsv', sep='\\t')
    assert {'BG', 'WM', 'whole_brain'} <= set(table['region']), table
    assert (table['icv_mm3'] > 0).all(), table
    print(sub, 'mask', mask.shape, 'PVS voxels', int(np.asanyarray(mask.dataobj).sum()),
          'whole-brain PVS mm3', float(table.set_index('region').loc['whole_brain', 'pvs_volume_mm3']))
"
"${run[@]}" -v "$WORK/bids:/data:ro" -v "$WORK/out:/out:ro" --entrypoint python "$IMAGE" \
    -c "$check_py" "$label" | tee "$ART/outputs.txt" || die "participant outputs (see above)"

t=$SECONDS
log "group: mcpvs /data /out group -w /work"
"${run[@]}" "${mounts[@]}" "$IMAGE" /data /out group -w /work \
    >"$ART/group.log" 2>&1 || { tail -n 40 "$ART/group.log"; die "group level"; }
mark smoke_group_s $((SECONDS - t))
[ -s "$WORK/out/group_pvs.tsv" ] || die "missing group_pvs.tsv"
for sub in "${subs[@]}"; do
    grep -q "^sub-$sub	" "$WORK/out/group_pvs.tsv" || die "group_pvs.tsv lacks sub-$sub"
done
if [ -f "$WORK/out/group_failures.tsv" ] && [ "$(wc -l <"$WORK/out/group_failures.tsv")" -gt 1 ]; then
    cat "$WORK/out/group_failures.tsv"; die "group_failures.tsv lists failures"
fi
cp "$WORK/out/group_pvs.tsv" "$WORK/out/dataset_description.json" "$ART/"
log "OK: ${#subs[@]} participants and the group level"
