#!/bin/sh
# Debian's OpenSSH server and rsync for tests/sweep/test_launcher.py (`ray up` reaches its nodes
# over SSH and copies files with rsync; the test starts its own sshd on loopback only).
# Never fails: where they cannot be installed, the launcher test skips and says why.
# The package's own service is never started: apt-get runs under a policy-rc.d that forbids it.
[ -x /usr/sbin/sshd ] && command -v rsync >/dev/null 2>&1 && exit 0
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo -n"
POLICY=/usr/sbin/policy-rc.d
OWN_POLICY=""
if [ ! -e "$POLICY" ] && printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null 2>&1; then
    $SUDO chmod 755 "$POLICY" && OWN_POLICY=1
fi
if command -v apt-get >/dev/null 2>&1 && $SUDO apt-get update -qq >/dev/null 2>&1 \
    && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openssh-server rsync >/dev/null 2>&1; then
    echo "installed $(/usr/sbin/sshd -V 2>&1 | head -n 1), $(rsync --version | head -n 1)"
else
    echo "could not install Debian's openssh-server and rsync (no apt-get or no root): tests/sweep/test_launcher.py will skip" >&2
fi
[ -n "$OWN_POLICY" ] && $SUDO rm -f "$POLICY"
exit 0
