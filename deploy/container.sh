#!/usr/bin/env bash
# Build and run the tinyserve image with Docker where an engine runs, else with podman.
#
#   deploy/container.sh base                   podman only: import a Debian base with Python 3.11
#                                              as localhost/pybase:bookworm (debootstrap, once)
#   deploy/container.sh build [TAG] [ARGS...]  build the Dockerfile (default tag tinyserve:latest);
#                                              ARGS go to the engine, e.g. --target train
#   deploy/container.sh run [-d] [ARGS...]     run the image on 127.0.0.1:8000 until stopped: in the
#                                              foreground (Ctrl-C stops it), or with -d in the
#                                              background, printing the command that stops it
#                                              (ARGS before the image, e.g. -v /my/models:/models;
#                                              IMAGE=... and PORT=... pick the image and host port)
#   deploy/container.sh stop NAME              stop (and remove) a container started with run -d
#   deploy/container.sh engine ARGS...         the engine itself, set up the same way
#                                              (e.g. `engine images`, `engine healthcheck run NAME`)
#   deploy/container.sh which                  print the engine in use: docker or podman
#
# Docker is used when `docker info` succeeds; otherwise podman, set up as in CONTAINERS.md: runc,
# ulimits root may set, cgroupfs, and storage under $TINYSERVE_PODMAN_DIR so images survive
# between runs. Override with CONTAINER_ENGINE=docker|podman. Every podman step but a foreground
# run is bounded by a timeout so a broken host fails instead of hanging; a server runs as long as
# its user wants.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
podman_dir=${TINYSERVE_PODMAN_DIR:-/var/tmp/tinyserve-podman}
base_image=localhost/pybase:bookworm
image_default=tinyserve:latest

die() { echo "container.sh: $*" >&2; exit 1; }

engine_name() {
  if [ -n "${CONTAINER_ENGINE:-}" ]; then echo "$CONTAINER_ENGINE"; return; fi
  if command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1; then echo docker; return; fi
  command -v podman >/dev/null || die "no Docker engine and no podman: apt-get install -y podman runc debootstrap uidmap fuse-overlayfs"
  echo podman
}

podman_setup() {
  mkdir -p "$podman_dir/storage" "$podman_dir/run"
  local nofile; nofile=$(ulimit -Hn)
  [ "$nofile" = unlimited ] && nofile=1048576
  cat > "$podman_dir/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
  cat > "$podman_dir/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$podman_dir/storage"
runroot = "$podman_dir/run"
EOF
  export CONTAINERS_CONF="$podman_dir/containers.conf" CONTAINERS_STORAGE_CONF="$podman_dir/storage.conf"
}

engine() {
  case "$engine" in
    docker) docker "$@" ;;
    # The long timeout only guards against a hang; builds and imports finish in minutes.
    podman) timeout "${ENGINE_TIMEOUT:-900}" podman "$@" ;;
    *) die "unknown engine $engine" ;;
  esac
}

# The engine with no time limit: for a server in the foreground, which runs until it is stopped.
engine_unbounded() {
  case "$engine" in
    docker | podman) "$engine" "$@" ;;
    *) die "unknown engine $engine" ;;
  esac
}

# The Debian mirror apt already uses, so debootstrap reaches the same (reachable) mirror.
debian_mirror() {
  local uri
  uri=$(grep -hE '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -v security | head -n1 || true)
  [ -n "$uri" ] || uri=$(grep -hE '^\s*deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '{print $2}' | grep -v security | head -n1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

cmd_base() {
  [ "$engine" = podman ] || { echo "container.sh: $engine pulls python:3.11-slim itself; no base to make" >&2; return 0; }
  if engine image exists "$base_image"; then echo "container.sh: $base_image already exists" >&2; return 0; fi
  command -v debootstrap >/dev/null || die "debootstrap missing: apt-get install -y debootstrap"
  rootfs=$(mktemp -d "$podman_dir/rootfs.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  echo "container.sh: debootstrap bookworm from $(debian_mirror) (1-2 minutes)" >&2
  timeout 600 debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$rootfs" "$(debian_mirror)" >"$podman_dir/debootstrap.log" 2>&1 \
    || { tail -n 20 "$podman_dir/debootstrap.log" >&2; die "debootstrap failed (log: $podman_dir/debootstrap.log)"; }
  # Drop apt's downloaded .debs and lists: they would only make the base bigger.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar --numeric-owner -C "$rootfs" -c . | engine import --quiet - "$base_image" >/dev/null
  echo "container.sh: imported $base_image" >&2
}

cmd_build() {
  local tag=$image_default
  if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then tag=$1; shift; fi
  if [ "$engine" = docker ]; then
    engine build -t "$tag" "$@" "$root"
    return
  fi
  cmd_base
  local args=(build --format docker --build-arg "BASE_IMAGE=$base_image" -t "$tag")
  # HTTPS may leave through a proxy whose CA only the host trusts: lend the bundle to RUN steps
  # for this build only (a bind mount is never part of a layer).
  if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$podman_dir/pip.conf"
    args+=(-v "$PIP_CERT:/etc/ssl/certs/ca-certificates.crt:ro" -v "$podman_dir/pip.conf:/etc/pip.conf:ro")
  fi
  engine "${args[@]}" "$@" "$root"
  # Rebuilds leave untagged images behind (the train stage alone is 2 GB): keep a day's worth
  # as build cache, drop the rest.
  engine image prune -f --filter until=24h >/dev/null || true
}

cmd_run() {
  local publish=(-p "127.0.0.1:${PORT:-8000}:8000")
  if [ "${1:-}" != -d ]; then
    engine_unbounded run --rm "${publish[@]}" "$@" "${IMAGE:-$image_default}"
    return
  fi
  shift
  local id
  id=$(engine run -d --rm "${publish[@]}" "$@" "${IMAGE:-$image_default}")
  id=${id:0:12}
  echo "container.sh: $id serving on http://127.0.0.1:${PORT:-8000}"
  # podman's storage here is container.sh's own: a bare `podman stop` would not find the container.
  echo "container.sh: stop it with: bash $root/deploy/container.sh stop $id"
}

engine=$(engine_name)
[ "$engine" = podman ] && podman_setup

sub=${1:-}
[ $# -gt 0 ] && shift
case "$sub" in
  base) cmd_base ;;
  build) cmd_build "$@" ;;
  run) cmd_run "$@" ;;
  stop) [ $# -eq 1 ] || die "usage: container.sh stop NAME"; engine stop "$1" >/dev/null ;;
  engine) engine "$@" ;;
  which) echo "$engine" ;;
  *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
