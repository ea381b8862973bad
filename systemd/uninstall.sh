#!/usr/bin/env bash
# Remove dust-agent installed by systemd/install.sh. Keeps the config (/etc/dust-agent) and the
# data (/var/lib/dust-agent: outbox, alarm journal) unless --purge is given.
#
#   sudo systemd/uninstall.sh [--purge] [--root DIR]
set -euo pipefail
ROOT=/ PURGE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT=${2:?--root needs a directory}; shift 2 ;;
        --root=*) ROOT=${1#--root=}; shift ;;
        --purge) PURGE=1; shift ;;
        -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
        *) echo "uninstall.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
ROOT=$(cd "$ROOT" 2>/dev/null && pwd) || { echo "uninstall.sh: --root: no such directory" >&2; exit 2; }
R=${ROOT%/}
if [ -z "$R" ] && [ "$(id -u)" -ne 0 ]; then
    echo "uninstall.sh: must run as root (sudo $0), or pass --root DIR" >&2; exit 1
fi
if [ -n "$R" ]; then
    systemctl --root="$ROOT" disable dust-agent.service >/dev/null 2>&1 || true
elif [ -d /run/systemd/system ]; then
    systemctl disable --now dust-agent.service >/dev/null 2>&1 || true
else
    systemctl disable dust-agent.service >/dev/null 2>&1 || true
fi
rm -f "$R/etc/systemd/system/dust-agent.service" "$R/usr/local/bin/dust-agent"
rm -rf "$R/opt/dust-agent"
[ -z "$R" ] && [ -d /run/systemd/system ] && systemctl daemon-reload
if [ "$PURGE" = 1 ]; then
    rm -rf "$R/etc/dust-agent" "$R/var/lib/dust-agent" "$R/var/log/dust-agent" \
        "$R/usr/lib/sysusers.d/dust-agent.conf"
    if [ -z "$R" ] && id dust-agent >/dev/null 2>&1; then userdel dust-agent || true; fi
    if [ -z "$R" ] && getent group dust-agent-operators >/dev/null; then
        groupdel dust-agent-operators || true
    fi
    echo "uninstall.sh: removed dust-agent, its config and its data"
else
    echo "uninstall.sh: removed dust-agent; kept $R/etc/dust-agent and $R/var/lib/dust-agent" \
        "(--purge removes them)"
fi
