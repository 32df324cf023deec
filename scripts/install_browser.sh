#!/usr/bin/env bash
# Installs Debian's headless browser for the web-UI test: chromium and its matching chromedriver.
# Idempotent: does nothing when both are already there. Never downloads a browser from elsewhere
# (selenium is pointed at /usr/bin/chromedriver, so Selenium Manager stays out of the way).
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    echo "install_browser: chromium and chromedriver already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver
chromium --version
chromedriver --version
