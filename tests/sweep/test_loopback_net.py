"""The launcher test's network (tests/support/loopback_net.py): loopback only, reachable only from inside."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support.loopback_net import LoopbackNetwork, NetworkUnavailable

LISTEN = ("import socket, sys; s = socket.socket(); s.bind(('0.0.0.0', 0)); s.listen(); "
          "print(s.getsockname()[1], flush=True); sys.stdin.read()")


@pytest.fixture
def net():
    try:
        net = LoopbackNetwork.start()
    except NetworkUnavailable as err:
        pytest.skip(str(err))
    yield net
    net.stop()


def test_a_server_on_every_interface_inside_is_reached_on_loopback_inside_only(net: LoopbackNetwork):
    assert net.interfaces() == ["lo"]
    server = subprocess.Popen(net.command([sys.executable, "-c", LISTEN]), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        assert ("0.0.0.0", port) in net.listeners()
        with net.entered():
            for address in ("127.0.0.1", "127.0.0.2"):  # all of 127/8 is there
                socket.create_connection((address, port), timeout=5).close()
        if port not in _host_ports():  # (a port the machine itself listens on by chance would connect)
            with socket.socket() as outside:  # this thread is back in the machine's own network
                assert outside.connect_ex(("127.0.0.1", port)) != 0
    finally:
        server.stdin.close()
        server.wait(timeout=10)
    assert not [entry for entry in net.listeners() if entry[1] == port]


def _host_ports() -> set[int]:
    """The ports this machine listens on in its own network (this thread's, outside the namespace)."""
    lines = Path("/proc/thread-self/net/tcp").read_text().splitlines()[1:]
    return {int(line.split()[1].split(":")[1], 16) for line in lines if line.split()[3] == "0A"}
