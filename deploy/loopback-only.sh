#!/bin/sh
# Runs a command in a fresh network namespace that has only the loopback interface, so
# nothing a test provokes (a Contact, Via or Request-URI naming 192.0.2.x) can leave the
# machine. Extra loopback-range addresses used by the demo data are added here.
# Falls back to running directly where namespaces are not permitted (VOIPGW_NO_NETNS=1
# forces that).
set -eu
if [ "${VOIPGW_IN_NETNS:-}" = 1 ]; then
    ip link set lo up
    # IPv6 ranges of the demo data (office and nomadic callers on one machine).
    ip -6 addr add fd00:5060:10::1/64 dev lo 2>/dev/null || true
    ip -6 addr add fd00:5060:99::1/64 dev lo 2>/dev/null || true
    exec "$@"
fi
if [ "${VOIPGW_NO_NETNS:-}" != 1 ] && command -v unshare >/dev/null 2>&1 \
        && unshare -n true 2>/dev/null; then
    VOIPGW_IN_NETNS=1 exec unshare -n "$0" "$@"
fi
if [ "${CI:-}" = true ]; then
    echo "CI: cannot create a loopback-only network namespace (unshare -n)" >&2
    exit 1
fi
echo "warning: no network namespace; running on the host network" >&2
exec "$@"
