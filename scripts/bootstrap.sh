#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: the Debian packages the lab and the live tests use, and a
# virtualenv (.venv) with aiotcpstack and its test extra.  Sourced by scripts/demo.sh and
# scripts/test.sh; safe to run again (it only installs what is missing).
#   PY=python3.12 bash scripts/bootstrap.sh   # another interpreter -> .venv-3.12
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

need_apt=()
for pair in iptables:iptables nft:nftables ethtool:ethtool curl:curl tcpdump:tcpdump ping:iputils-ping nginx:nginx-light nsenter:util-linux; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "bootstrap: missing ${need_apt[*]}; run as root (or apt-get install ${need_apt[*]})" >&2
        echo "bootstrap: continuing; the live tests will be reported as skipped with the reason" >&2
    else
        echo "bootstrap: apt-get install ${need_apt[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
        # nginx is only a test peer: never leave the distribution's default site running.
        if command -v systemctl >/dev/null 2>&1; then systemctl disable --now nginx >/dev/null 2>&1 || true; fi
        pkill -x nginx >/dev/null 2>&1 || true
    fi
fi

PY="${PY:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
ver="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
case "$ver" in 3.1[1-9]) ;; *) echo "bootstrap: Python >= 3.11 needed, $PY is $ver" >&2; exit 1;; esac
venv="$root/.venv"
[ "$ver" = "3.11" ] || venv="$root/.venv-$ver"
if [ ! -x "$venv/bin/python" ]; then
    "$PY" -m venv "$venv"
fi
stamp="$venv/.aiotcpstack-installed"
want="$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$venv/bin/pip" install -q --disable-pip-version-check -e ".[test]"
    echo "$want" > "$stamp"
fi
export AIOTCPSTACK_VENV="$venv"
