#!/usr/bin/env bash
# The whole test suite: unit, sim and live tiers (live needs root: without it those tests are
# reported as skipped with the reason).  Extra arguments go to pytest.
# Also runs the unit and sim tiers on Python 3.12 and 3.13 when they are installed (set
# AIOTCPSTACK_ALL_PYTHONS=0 to skip that).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source "$root/scripts/bootstrap.sh"
status=0
"$AIOTCPSTACK_VENV/bin/python" -m pytest -q -rs -p no:cacheprovider "$@" || status=$?
if [ "${AIOTCPSTACK_ALL_PYTHONS:-1}" = "1" ] && [ $# -eq 0 ]; then
    for ver in 3.12 3.13; do
        py=""
        for cand in "python$ver" "$HOME"/.pyenv/versions/"$ver"*/bin/"python$ver" /usr/bin/"python$ver" /usr/local/bin/"python$ver"; do
            if "$cand" -c "" >/dev/null 2>&1; then py="$cand"; break; fi
        done
        [ -n "$py" ] || { echo "test.sh: python$ver not installed, its run is skipped" >&2; continue; }
        PY="$py" source "$root/scripts/bootstrap.sh"
        echo "== unit and sim tiers on $py"
        "$AIOTCPSTACK_VENV/bin/python" -m pytest -q -p no:cacheprovider tests/unit tests/sim || status=$?
    done
fi
exit $status
