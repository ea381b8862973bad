#!/usr/bin/env bash
# Install or upgrade dust-agent as a systemd service. Run from a source checkout:
#
#   sudo systemd/install.sh [--start] [--root DIR] [--no-pip]
#
# Creates the service user and the operators group dust-agent-operators (sysusers.d),
# /opt/dust-agent/{src,venv} with the package installed from this checkout, /etc/dust-agent/ (agent.toml only when none exists; shipped profiles and
# the rules pack are refreshed), /etc/dust-agent/credentials/ (0700), the unit
# /etc/systemd/system/dust-agent.service (enabled), and /usr/local/bin/dust-agent.
# Running it again upgrades in place: the config, the outbox and the alarm journal
# (/var/lib/dust-agent) are kept, and a running service is restarted.
#
#   --start     also start the service now (a fresh install is only enabled: edit the config first)
#   --root DIR  install into DIR as if it were / (an image or a test sandbox): no systemctl
#               calls other than the offline `systemctl --root=DIR enable`
#   --no-pip    create the venv but do not pip-install into it (for sandboxes without PyPI;
#               pip honours PIP_INDEX_URL / PIP_FIND_LINKS / PIP_NO_INDEX for offline wheelhouses)
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=/ START=0 PIP=1
while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT=${2:?--root needs a directory}; shift 2 ;;
        --root=*) ROOT=${1#--root=}; shift ;;
        --start) START=1; shift ;;
        --no-pip) PIP=0; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
ROOT=$(cd "$ROOT" 2>/dev/null && pwd) || { echo "install.sh: --root: no such directory" >&2; exit 2; }
R=${ROOT%/}   # prefix for every path; empty for the real root
say() { echo "install.sh: $*"; }
die() { echo "install.sh: $*" >&2; exit 1; }

if [ -z "$R" ] && [ "$(id -u)" -ne 0 ]; then
    die "must run as root to install into / (sudo $0), or pass --root DIR"
fi
PY=${PYTHON:-python3}
"$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null ||
    die "dust-agent needs Python 3.11 or newer as '$PY' (found: $("$PY" --version 2>&1)); on Debian/Raspberry Pi OS 12: apt-get install python3 python3-venv"
"$PY" -c 'import ensurepip, venv' 2>/dev/null ||
    die "Python's venv module is missing: apt-get install python3-venv"
[ -f "$SRC/pyproject.toml" ] && [ -f "$SRC/systemd/dust-agent.service" ] ||
    die "run me from a dust-agent source checkout ($SRC has no pyproject.toml)"

# 1. The service user and group (dust-agent, member of dialout for the serial ports) and the
#    operators group dust-agent-operators (operator socket, alarm journal): add people with
#    `usermod -a -G dust-agent-operators NAME`.
install -D -m 0644 "$SRC/systemd/dust-agent.sysusers" "$R/usr/lib/sysusers.d/dust-agent.conf"
mkdir -p "$R/etc"
if command -v systemd-sysusers >/dev/null 2>&1; then
    if [ -n "$R" ]; then systemd-sysusers --root="$ROOT" "$R/usr/lib/sysusers.d/dust-agent.conf"
    else systemd-sysusers /usr/lib/sysusers.d/dust-agent.conf; fi
elif [ -z "$R" ]; then
    id dust-agent >/dev/null 2>&1 ||
        useradd --system --home-dir /var/lib/dust-agent --shell /usr/sbin/nologin --user-group dust-agent
    getent group dust-agent-operators >/dev/null || groupadd --system dust-agent-operators
    usermod -a -G dialout,dust-agent-operators dust-agent
fi

# 2. The code: a copy of this checkout and a venv with the package installed from it.
OPT="$R/opt/dust-agent"
mkdir -p "$OPT"
rm -rf "$OPT/src.new"
mkdir "$OPT/src.new"
tar -C "$SRC" --exclude=./.venv --exclude=./.git --exclude=./var --exclude=./build \
    --exclude='*.egg-info' --exclude='*/__pycache__' --exclude=./.mypy_cache \
    --exclude=./.ruff_cache --exclude=./.pytest_cache --exclude=./.hypothesis -cf - . |
    tar -C "$OPT/src.new" -xf -
rm -rf "$OPT/src"
mv "$OPT/src.new" "$OPT/src"
if [ ! -x "$OPT/venv/bin/python" ]; then
    say "creating the virtualenv $OPT/venv"
    "$PY" -m venv "$OPT/venv"
fi
if [ "$PIP" = 1 ]; then
    say "installing dust-agent into $OPT/venv (log: $OPT/install.log)"
    { "$OPT/venv/bin/python" -m pip install --upgrade pip &&
      "$OPT/venv/bin/python" -m pip install --upgrade "$OPT/src"; } >"$OPT/install.log" 2>&1 ||
        { tail -n 20 "$OPT/install.log" >&2; die "pip install failed; see $OPT/install.log"; }
fi
mkdir -p "$R/usr/local/bin"
ln -sfn /opt/dust-agent/venv/bin/dust-agent "$R/usr/local/bin/dust-agent"

# 3. Config: never overwrite the installer's agent.toml; refresh the shipped profiles and rules.
ETC="$R/etc/dust-agent"
install -d -m 0755 "$ETC" "$ETC/profiles" "$ETC/rules"
install -d -m 0700 "$ETC/credentials"
if [ -e "$ETC/agent.toml" ]; then
    say "keeping $ETC/agent.toml"
else
    install -m 0644 "$SRC/systemd/agent.example.toml" "$ETC/agent.toml"
    say "installed an example config as $ETC/agent.toml: edit it for this plant"
fi
install -m 0644 "$SRC"/config/profiles/*.toml "$ETC/profiles/"
install -m 0644 "$SRC"/config/rules/*.toml "$ETC/rules/"

# 4. State: systemd creates /var/lib/dust-agent (StateDirectory=); an upgrade never touches it.
if [ ! -d "$R/var/lib/dust-agent" ]; then
    install -d -m 0751 "$R/var/lib/dust-agent"
    if [ "$(id -u)" -eq 0 ] && grep -q '^dust-agent:' "$R/etc/passwd" 2>/dev/null; then
        ids=$(awk -F: '$1=="dust-agent"{print $3":"$4}' "$R/etc/passwd")
        chown "$ids" "$R/var/lib/dust-agent"
    fi
fi

# 5. The unit, enabled.
install -D -m 0644 "$SRC/systemd/dust-agent.service" "$R/etc/systemd/system/dust-agent.service"
if [ -n "$R" ]; then
    systemctl --root="$ROOT" enable dust-agent.service >/dev/null 2>&1 ||
        die "systemctl --root=$ROOT enable dust-agent.service failed"
    say "installed into $ROOT (unit enabled offline; nothing started)"
    exit 0
fi
if [ "$PIP" = 1 ]; then
    /opt/dust-agent/venv/bin/dust-agent check -c /etc/dust-agent/agent.toml >/dev/null ||
        say "WARNING: /etc/dust-agent/agent.toml does not pass 'dust-agent check' (see above)"
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable dust-agent.service
    if systemctl is-active --quiet dust-agent.service; then
        say "restarting the running service on the new version"
        systemctl restart dust-agent.service
    elif [ "$START" = 1 ]; then
        systemctl start dust-agent.service
    else
        say "enabled; start it after editing the config: systemctl start dust-agent"
    fi
else
    systemctl enable dust-agent.service >/dev/null 2>&1 || true
    say "systemd is not running here: the unit is installed and enabled for the next boot"
fi
say "done: dust-agent status | journalctl -u dust-agent -f"
