#!/usr/bin/env bash
# The Debian packages the test suite uses, installed when missing (make test runs this first):
#   postgresql  the suite starts its own throw-away cluster from the server binaries (tests/pg_server.py);
#               required: without them the PostgreSQL tests fail and say why
#   chromium    the dashboard's browser tests drive Debian's chromium with Playwright (nothing downloads
#               a browser build); required likewise
#   bindfs      a real FUSE mount for the network-file-system warning test; best effort
# As root with apt-get this installs them (one apt-get update, at most); otherwise it says what is missing.
set -uo pipefail

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v bindfs >/dev/null 2>&1 || missing+=(bindfs)
[ ${#missing[@]} = 0 ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "system-packages: missing ${missing[*]}; install them (apt-get install ${missing[*]}) or the tests that use them fail" >&2
    exit 0
fi
# policy-rc.d keeps the postgresql package's own default cluster from starting during the install.
made_policy=
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1
fi
echo "system-packages: installing ${missing[*]}" >&2
timeout 300 apt-get update -qq >/dev/null 2>&1
for package in "${missing[@]}"; do
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "$package" >/dev/null 2>&1 \
        || echo "system-packages: installing $package failed; the tests that use it will say so" >&2
done
if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
exit 0
