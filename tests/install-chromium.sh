#!/bin/sh
# Debian's Chromium for tests/test_browser.py (Playwright drives it; nothing is downloaded at test time).
# Never fails: where Chromium cannot be installed, the browser test skips and says why.
command -v chromium >/dev/null 2>&1 && exit 0
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo -n"
if command -v apt-get >/dev/null 2>&1 && $SUDO apt-get update -qq >/dev/null 2>&1 \
    && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null 2>&1; then
    echo "installed $(chromium --version 2>/dev/null)"
else
    echo "could not install Debian's chromium (no apt-get or no root): tests/test_browser.py will skip" >&2
fi
exit 0
