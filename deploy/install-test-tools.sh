#!/bin/sh
# Installs the real SIP peers and tools the test suite drives, from Debian packages.
# Idempotent: does nothing when every tool is already present.
set -eu
need=""
command -v sipp     >/dev/null 2>&1 || need="$need sip-tester"
command -v sipsak   >/dev/null 2>&1 || need="$need sipsak"
command -v baresip  >/dev/null 2>&1 || need="$need baresip"
command -v linphonec >/dev/null 2>&1 || need="$need linphone-cli"
command -v promtool >/dev/null 2>&1 || need="$need prometheus"
command -v espeak-ng >/dev/null 2>&1 || need="$need espeak-ng"
command -v sox      >/dev/null 2>&1 || need="$need sox"
command -v svmap    >/dev/null 2>&1 || command -v sipvicious_svmap >/dev/null 2>&1 || need="$need sipvicious"
command -v unshare  >/dev/null 2>&1 || need="$need util-linux"
command -v ip       >/dev/null 2>&1 || need="$need iproute2"
# Kamailio 5.6 with its dispatcher module: the reference cluster (deploy/cluster/).
# It lives in /usr/sbin, which a user's PATH may lack.
command -v kamailio >/dev/null 2>&1 || [ -x /usr/sbin/kamailio ] || need="$need kamailio"
command -v systemd-analyze >/dev/null 2>&1 || need="$need systemd"
# The compiled SIP core (setup.py, mypyc): a C compiler and the Python headers.
command -v gcc      >/dev/null 2>&1 || need="$need gcc"
include=$(${PYTHON:-python3} -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
[ -f "$include/Python.h" ] || need="$need python3-dev"
[ -z "$need" ] && exit 0
if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $need
elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq
    # shellcheck disable=SC2086
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need
else
    echo "missing test tools; install with: apt-get install -y$need" >&2
    exit 1
fi
