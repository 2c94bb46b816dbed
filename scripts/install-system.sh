#!/usr/bin/env bash
# Install the Debian packages aybiza needs, only those missing. Idempotent; needs root (or sudo).
set -euo pipefail

# binary -> Debian package
declare -A NEED=(
  [espeak-ng]=espeak-ng
  [flite]=flite
)
if [ "${AYBIZA_TEST_SYSTEM:-0}" = 1 ]; then
  NEED+=(
    [redis-server]=redis-server
    [chromium]=chromium
    [promtool]=prometheus
    [ip]=iproute2
    [nft]=nftables
    [sox]=sox
    [pg_ctlcluster]=postgresql
  )
fi
# issue 16, the container image test (make test-image): podman to build and mount it, debootstrap for its base
if [ "${AYBIZA_IMAGE_SYSTEM:-0}" = 1 ]; then
  NEED+=(
    [podman]=podman
    [debootstrap]=debootstrap
  )
fi

missing=()
for bin in "${!NEED[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("${NEED[$bin]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-system: need root to apt-get install: ${missing[*]}" >&2; exit 1
  fi
fi
echo "install-system: apt-get install ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
