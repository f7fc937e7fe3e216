#!/usr/bin/env bash
# Debian packages the service tests need: PostgreSQL, a single-node SLURM (slurm-wlm + munge), headless Chromium.
# The tests start and stop the services themselves; this only makes sure the binaries exist. (The browser test's
# Python side, playwright, comes with the venv's dev extra and drives this Chromium: no `playwright install`.)
#
#   scripts/install_system_deps.sh            install what is missing; not root and something missing: exit 1 (CI)
#   scripts/install_system_deps.sh --if-root  the same as root; otherwise one line names what is missing and the
#                                             command that installs it, and exits 0 (`make test`: those tests skip)
set -euo pipefail
if_root=false
case "${1:-}" in
    --if-root) if_root=true ;;
    "") ;;
    *) echo "usage: $0 [--if-root]" >&2; exit 2 ;;
esac
# The daemons live in sbin, which a user's PATH often lacks.
PATH="$PATH:/usr/sbin:/sbin"
has() { command -v "$1" >/dev/null 2>&1; }
need=()
# As tests/services.py looks for them: a Debian cluster's bin directory, else initdb and pg_ctl on PATH.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { has initdb && has pg_ctl; } || need+=(postgresql)
{ has slurmctld && has slurmd && has sbatch && has srun; } || need+=(slurm-wlm)
has munged || need+=(munge)
has chromium || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0

install="apt-get install -y --no-install-recommends ${need[*]}"
if [ "$(id -u)" != 0 ]; then
    if $if_root; then
        echo "service tests will skip: missing Debian packages ${need[*]}; install them with: sudo apt-get update && sudo $install" >&2
        exit 0
    fi
    echo "missing system packages: ${need[*]} (run as root or install them: sudo $install)" >&2
    exit 1
fi
echo "installing system packages for the service tests: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${need[@]}"; }; then
    echo "could not install ${need[*]} (see apt-get above); fix that and rerun, or run \`make test-fast\`, which needs none" >&2
    exit 1
fi
