#!/usr/bin/env bash
# Installs the Debian 12 packages that the build, the tests and the quickstart need.
# Idempotent: when everything is present it returns after one dpkg query.
# With CI=true or OUTBOX_INSTALL_PROMTOOL=1 it also installs `prometheus` (Debian ships
# promtool in it) for the test that runs `promtool check rules ops/prometheus/alerts.yml`;
# the daemon is not started (see below).
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

if [ "${CI:-}" = "true" ] || [ "${OUTBOX_INSTALL_PROMTOOL:-}" = 1 ]; then
  if ! command -v promtool >/dev/null; then PACKAGES+=(prometheus); fi
fi

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
# The prometheus package would start its daemon (port 9090) on install: only promtool is
# wanted. A policy-rc.d that denies every start (as Docker images carry) keeps invoke-rc.d
# and deb-systemd-invoke from starting it; under systemd the unit is disabled afterwards.
policy_added=""
if [[ " ${missing[*]} " == *" prometheus "* ]] && [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\n# ops/install-deps.sh: no daemon starts while it installs packages\nexit 101\n' |
    $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod 755 /usr/sbin/policy-rc.d
  policy_added=1
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi
if [ -n "$policy_added" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
echo "install-deps: done" >&2
