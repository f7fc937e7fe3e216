#!/usr/bin/env bash
# Debian packages the service tests need: PostgreSQL, a single-node SLURM (slurm-wlm + munge), headless Chromium.
# The tests start and stop the services themselves; this only makes sure the binaries exist.
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v slurmctld >/dev/null 2>&1 || need+=(slurm-wlm)
command -v munged >/dev/null 2>&1 || need+=(munge)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "missing system packages: ${need[*]} (run as root or install them: apt-get install ${need[*]})" >&2
        exit 1
    fi
    echo "installing system packages: ${need[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi
