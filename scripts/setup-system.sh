#!/usr/bin/env bash
# Install the system packages that the demo and the tests need, only when they are missing:
# python3 (>= 3.11) with venv, mosquitto (the MQTT broker), socat (pty pairs for RS-485 tests)
# systemd-analyze (unit file checks), PostgreSQL server binaries (the ingest tests start
# their own server from /usr/lib/postgresql/*/bin), and chromium + chromedriver with a CJK
# font (the status page's browser tests; Selenium never downloads a browser).
set -euo pipefail

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v socat >/dev/null 2>&1 || need+=(socat)
# systemd-analyze checks the service unit in the tests (present wherever systemd is)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# the central ingest's tests and bench run a private PostgreSQL (initdb + postgres)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
# the status page's tests (tests/integration/test_web.py) drive Debian's chromium headless
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
if ! python3 -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    need+=(python3)
fi
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    need+=(python3-venv)
fi
[ ${#need[@]} -eq 0 ] && exit 0

echo "setup: installing ${need[*]} with apt-get" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo="sudo"
    else
        echo "setup: need root to install ${need[*]}; run as root or install them by hand" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian enables mosquitto's own system service on install; the demo and the tests start
# their own broker on a free loopback port, so the system one is not needed.
if [[ " ${need[*]} " == *" mosquitto "* ]] && command -v systemctl >/dev/null 2>&1; then
    $sudo systemctl disable --now mosquitto >/dev/null 2>&1 || true
fi
# Likewise Debian's postgresql package starts a cluster on 5432; the tests run their own.
if [[ " ${need[*]} " == *" postgresql "* ]] && command -v systemctl >/dev/null 2>&1; then
    $sudo systemctl disable --now postgresql >/dev/null 2>&1 || true
fi
python3 -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null || {
    echo "setup: dust-agent needs Python 3.11 or newer; this system has $(python3 --version 2>&1)" >&2
    exit 1
}
