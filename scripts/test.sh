#!/usr/bin/env bash
# The whole test suite: unit, sim and live tiers (live needs root: without it those tests are
# reported as skipped with the reason).  Extra arguments go to pytest.
# Every supported interpreter that is installed (3.11, 3.12, 3.13) gets its venv first, so the live
# test that runs CPython's own asyncio tests on our loop covers all three; then the unit and sim
# tiers run again on 3.12 and 3.13 (AIOTCPSTACK_ALL_PYTHONS=0 skips those extra runs).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

find_python() {  # find_python 3.12 -> a working interpreter path, or nothing
    local ver=$1 cand
    for cand in "python$ver" "$HOME"/.pyenv/versions/"$ver"*/bin/"python$ver" /usr/bin/"python$ver" /usr/local/bin/"python$ver"; do
        if "$cand" -c "" >/dev/null 2>&1; then echo "$cand"; return 0; fi
    done
    return 1
}

extra=()
for ver in 3.12 3.13; do
    if py="$(find_python "$ver")"; then
        PY="$py" source "$root/scripts/bootstrap.sh"
        extra+=("$AIOTCPSTACK_VENV")
    else
        echo "test.sh: python$ver not installed; its runs are reported as skipped" >&2
    fi
done
source "$root/scripts/bootstrap.sh"      # the main venv (3.11) last: AIOTCPSTACK_VENV points at it

status=0
"$AIOTCPSTACK_VENV/bin/python" -m pytest -q -rs -p no:cacheprovider "$@" || status=$?
if [ "${AIOTCPSTACK_ALL_PYTHONS:-1}" = "1" ] && [ $# -eq 0 ]; then
    for venv in "${extra[@]}"; do
        echo "== unit and sim tiers on $("$venv/bin/python" -V)"
        "$venv/bin/python" -m pytest -q -p no:cacheprovider -m "not slow" tests/unit tests/sim || status=$?
    done
fi
exit $status
