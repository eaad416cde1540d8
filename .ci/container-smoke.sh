#!/usr/bin/env bash
# Container smoke test: build the Dockerfile's runtime stage (the image users get) from the
# statically linked binary built here, with buildah (no daemon, nothing pulled), and run
# `ecs-renewd demo` inside it. Checks that the binary is static, that the image runs as its
# numeric non-root user and keeps its HEALTHCHECK, and that the demo ends with no double charge.
#
# The release build uses its own target directory (target/static), so it never waits on or
# invalidates the debug build the tests use. About 5 minutes the first time, seconds after.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

triple=x86_64-unknown-linux-gnu
binary=target/static/$triple/release/ecs-renewd
image=localhost/ecs-renewd:ci-smoke
bah=(buildah --storage-driver vfs)
start=$SECONDS

echo "== static release build ($binary)"
RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=target/static \
  cargo build --release --locked --target "$triple" --quiet
kind=$(file -b "$binary")
echo "file: ${kind%%, BuildID*}"
case $kind in
  *"statically linked"* | *"static-pie linked"*) ;;
  *) echo "FAILED: $binary is not statically linked"; exit 1 ;;
esac
if ldd "$binary" >/dev/null 2>&1 && ! ldd "$binary" 2>&1 | grep -q 'statically linked'; then
  echo "FAILED: ldd lists shared libraries:"
  ldd "$binary"
  exit 1
fi
build_s=$((SECONDS - start))

if ! command -v buildah >/dev/null; then
  echo "== installing buildah"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends buildah >/dev/null ||
    { apt-get update >/dev/null && apt-get install -y --no-install-recommends buildah >/dev/null; }
fi

ctr=
dangling_before=$("${bah[@]}" images -q --filter dangling=true 2>/dev/null | sort)
cleanup() {
  if [ -n "$ctr" ]; then "${bah[@]}" rm "$ctr" >/dev/null 2>&1 || true; fi
  "${bah[@]}" rmi "$image" >/dev/null 2>&1 || true
  # The stage images this build left behind (untagged, with the working containers buildah keeps
  # for them), not anything that was there before.
  comm -13 <(echo "$dangling_before") <("${bah[@]}" images -q --filter dangling=true 2>/dev/null | sort) |
    xargs -r "${bah[@]}" rmi --force >/dev/null 2>&1 || true
}
trap cleanup EXIT

# The Dockerfile's prebuilt path takes the binary and the CA bundle from the build context
# (.dockerignore lets exactly these through).
cp /etc/ssl/certs/ca-certificates.crt target/ca-certificates.crt

echo "== buildah bud --target runtime (prebuilt binary)"
image_start=$SECONDS
# Docker format: the OCI format has no HEALTHCHECK.
"${bah[@]}" bud --isolation chroot --format docker --quiet --target runtime \
  --build-arg BINARY_SOURCE=prebuilt --build-arg PREBUILT_BINARY="$binary" \
  --build-arg PREBUILT_CA_BUNDLE=target/ca-certificates.crt \
  -t "$image" . >/dev/null
size=$("${bah[@]}" images --format '{{.Size}}' "$image" | head -n 1)
config=$("${bah[@]}" inspect --format \
  'user={{.Docker.Config.User}} healthcheck={{.Docker.Config.Healthcheck.Test}} ports={{.Docker.Config.ExposedPorts}} volumes={{.Docker.Config.Volumes}} stopsignal={{.Docker.Config.StopSignal}}' \
  "$image")
echo "image $image: $size"
# A tripwire for growth nobody meant: the static release binary was 13.3 MB when this was set
# (issue 16); a change that needs more says so here and in its note. Raised from 15 to 16 MiB at
# issue 25: 15,758,248 bytes with the PostgreSQL ledger (tokio-postgres, deadpool, its rustls
# connector; issue 24) and the STS credentials (assumed roles, URI, CLI role profiles, RRSA, the
# emulator's STS and OIDC provider).
binary_bytes=$(stat -c %s "$binary")
ceiling=$((16 * 1024 * 1024))
echo "  binary: $binary_bytes bytes (ceiling $ceiling)"
(( binary_bytes <= ceiling )) || { echo "FAILED: the release binary grew past $ceiling bytes"; exit 1; }
echo "  $config"
for want in 'user=65532:65532' 'healthcheck=[CMD /usr/local/bin/ecs-renewd healthcheck]' \
  '9469/tcp' '/var/lib/ecs-renewd' 'stopsignal=SIGTERM'; do
  [[ $config == *"$want"* ]] || { echo "FAILED: image config lacks $want"; exit 1; }
done

ctr=$("${bah[@]}" from "$image")
run() { "${bah[@]}" run --isolation chroot "$@"; }

echo "== non-root: a root-owned directory is not writable"
if out=$(run --env ECS_RENEWD_STATE_DIR=/usr/local/bin "$ctr" -- /usr/local/bin/ecs-renewd demo --seconds 1 2>&1); then
  echo "FAILED: the demo could write to /usr/local/bin: the image does not run as a non-root user"
  exit 1
fi
grep -q 'Permission denied' <<<"$out" || { echo "FAILED: unexpected error:"; echo "$out"; exit 1; }
echo "ok: $(grep -m1 'Permission denied' <<<"$out")"

echo "== ecs-renewd demo --seconds 20 inside the image (state in \$ECS_RENEWD_STATE_DIR=/var/lib/ecs-renewd)"
demo_start=$SECONDS
if ! out=$(run "$ctr" -- /usr/local/bin/ecs-renewd demo --seconds 20 2>&1); then
  echo "$out" | tail -n 30
  echo "FAILED: the demo exited with an error inside the image"
  exit 1
fi
sed -n '/^=== summary/,$p' <<<"$out"
want='double charges (orders per instance and expiry cycle > 1): 0; orders without a ledger record: 0'
grep -qF "$want" <<<"$out" || { echo "FAILED: the demo summary lacks: $want"; exit 1; }
grep -q '^ledger: /var/lib/ecs-renewd/' <<<"$out" ||
  { echo "FAILED: the demo's ledger is not under /var/lib/ecs-renewd"; exit 1; }

echo "ok: container smoke test: static binary, image $size, demo with no double charge" \
  "(build ${build_s} s, image $((demo_start - image_start)) s, demo $((SECONDS - demo_start)) s)"
