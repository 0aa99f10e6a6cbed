#!/usr/bin/env bash
# Installs the Debian 12 packages that the build, the tests and the quickstart need.
# Idempotent: when everything is present it returns after one dpkg query.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git ca-certificates
  librdkafka-dev libpq-dev libpqxx-dev
  libboost-program-options-dev libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev
  libcurl4-openssl-dev nlohmann-json3-dev prometheus-cpp-dev libcpp-httplib-dev
  postgresql-15 postgresql-client-15
  kcat python3 python3-confluent-kafka
  procps util-linux curl
  help2man dpkg-dev  # ops/package.sh: the man page from --help, dpkg-shlibdeps
  iproute2  # ip netns, veth, bridge, tc: the partition tests (tests/support/netns.h)
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
# The PostgreSQL package would create and start a default cluster; we only want the
# binaries (tests and the quickstart start throwaway clusters of their own).
if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
  $SUDO mkdir -p /etc/postgresql-common
  echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.conf >/dev/null
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done" >&2
