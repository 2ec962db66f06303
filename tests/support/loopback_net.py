"""A network of loopback only: a network namespace whose one interface is `lo`.

    net = LoopbackNetwork.start()            # raises NetworkUnavailable to skip
    subprocess.run(net.command(["ray", "up", ...]))   # a command that runs inside it
    with net.entered():                      # this thread's new sockets are inside it
        MlflowClient("http://127.0.0.1:PORT").search_runs(...)
    net.listeners()                          # every socket listening in it: (address, port)
    net.stop()

Why: Ray binds its servers on every interface of a machine (Ray 2.60 has no bind address).
Inside this namespace "every interface" is the loopback interface, so a test cluster started
in it can be reached from nowhere but this machine, whatever Ray binds. All of 127.0.0.0/8 is
there (127.0.0.1 for a head, 127.0.0.2 for a worker, ...).

The namespace is held open by a `sleep` (in a new network namespace, made by `unshare --net`)
that dies with the test process, even by SIGKILL; the namespace goes when its last process does.
Needs root (CAP_SYS_ADMIN), `unshare`, `nsenter` and `ip` (iproute2).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1
# In the new namespace: bring loopback up, say so, then hold the namespace open.
_HOLD = "ip link set lo up && echo ready && exec sleep infinity"
_TCP_LISTEN = "0A"  # st column of /proc/net/tcp{,6}


class NetworkUnavailable(RuntimeError):
    """No loopback-only network namespace can be made here (the reason says why); tests skip."""


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")


def _hex_address(text: str) -> str:
    """`0100007F` (IPv4, little-endian) or a 32-digit IPv6 field of /proc/net/tcp6, as text."""
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return ".".join(str(b) for b in reversed(raw))
    words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]  # four host-order 32-bit words
    return str(ipaddress.IPv6Address(b"".join(words)))


@dataclass
class LoopbackNetwork:
    """A running loopback-only network namespace, held by `holder`."""

    holder: subprocess.Popen = field(repr=False)

    @property
    def path(self) -> str:
        return f"/proc/{self.holder.pid}/ns/net"

    @classmethod
    def start(cls) -> LoopbackNetwork:
        if os.geteuid() != 0:
            raise NetworkUnavailable("needs root to make a network namespace")
        missing = [tool for tool in ("unshare", "nsenter", "ip") if shutil.which(tool) is None]
        if missing:
            raise NetworkUnavailable(f"{', '.join(missing)} not installed")
        holder = subprocess.Popen(["unshare", "--net", "sh", "-c", _HOLD], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                  start_new_session=True, preexec_fn=_die_with_parent)
        line = holder.stdout.readline().strip()
        if line != "ready":
            holder.kill()
            _, err = holder.communicate(timeout=10)
            raise NetworkUnavailable(f"cannot make a network namespace with loopback up "
                                     f"(`unshare --net`, `ip link set lo up`): {err.strip() or line}")
        net = cls(holder)
        others = [name for name in net.interfaces() if name != "lo"]
        if others:  # cannot happen with a fresh namespace; checked since the whole point rests on it
            net.stop()
            raise NetworkUnavailable(f"the new namespace has interfaces besides lo: {others}")
        return net

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run inside this namespace (and otherwise as it would run)."""
        return ["nsenter", f"--net={self.path}", "--", *argv]

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """The calling thread in this namespace; the sockets it opens meanwhile stay there."""
        own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
        target = os.open(self.path, os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(target)
            os.close(own)

    def interfaces(self) -> list[str]:
        """The network interfaces inside (a fresh namespace: only `lo`)."""
        lines = Path(f"/proc/{self.holder.pid}/net/dev").read_text().splitlines()[2:]
        return [line.split(":", 1)[0].strip() for line in lines]

    def listeners(self) -> list[tuple[str, int]]:
        """Every TCP socket listening inside, as (local address, port), IPv4 and IPv6."""
        found = []
        for table in ("tcp", "tcp6"):
            path = Path(f"/proc/{self.holder.pid}/net/{table}")
            if not path.exists():
                continue
            for line in path.read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == _TCP_LISTEN:
                    address, port = fields[1].split(":")
                    found.append((_hex_address(address), int(port, 16)))
        return sorted(set(found))

    def stop(self) -> None:
        if self.holder.poll() is None:
            self.holder.kill()
        self.holder.wait(timeout=20)
