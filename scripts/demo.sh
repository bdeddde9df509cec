#!/usr/bin/env bash
# The main job: set up what is missing, then build a lab, run traffic through the user-space stack
# against the kernel's TCP, print what happened, and clean up.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/bootstrap.sh"
exec "$AIOTCPSTACK_VENV/bin/aiotcpstack" demo "$@"
