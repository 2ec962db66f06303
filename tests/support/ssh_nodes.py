"""Pretend machines for `ray up`: one OpenSSH server per loopback address, each a node of its own.

    net = LoopbackNetwork.start()                # the nodes' network: loopback only
    nodes = start_ssh_nodes(root, ["127.0.0.1", "127.0.0.2"], ["head", "worker"], net)  # SshUnavailable: skip
    ...  # `ray up` (run as net.command([...])) a local-provider config with head_ip 127.0.0.1
    stop_ssh_nodes(nodes)

What makes each address look like a machine of its own to Ray's cluster launcher:

- a network of loopback only: every node lives in one network namespace whose only interface
  is `lo` (tests/support/loopback_net.py), and whatever talks to the nodes runs there too
  (`net.command`, `net.entered`); port 22 is free there whatever this machine runs;
- its own sshd, listening on ADDRESS:22 only (the launcher has no SSH port setting), with a
  host key, an authorized key and a config in `root`: nothing under /etc/ssh is used;
- its own home and temporary folder: sshd sets HOME and RAY_TMPDIR for every session, so
  `~/ray_bootstrap_config.yaml`, `~/kdsed`, `~/mlflow` and Ray's /tmp/ray land in
  `root/<name>/home` and `root/<name>/tmp`, never in the real home or /tmp;
- the head's key: `ray up` copies the key to `~/ray_bootstrap_key.pem` and the autoscaler runs
  `ssh -i ~/ray_bootstrap_key.pem`, but ssh expands that `~` from the password database, not
  HOME; so in each node's mount namespace a private bind mount over /etc/ssh/ssh_config names
  the node's own copy (`IdentityFile`), and nothing outside the namespace sees it;
- its own process table: sshd runs as PID 1 of a new PID namespace (`unshare --pid
  --mount-proc`), so the `ray stop` that `ray up` and `ray down` run sees and kills only
  that node's Ray processes, not every Ray on the machine (other tests, other people);
- stopping is total: `unshare` (which ignores SIGTERM) is killed, `--kill-child` then kills
  sshd, and when a namespace's PID 1 dies the kernel kills every process left in it; the
  same happens when the test process dies, even by SIGKILL (PR_SET_PDEATHSIG, as in
  tests/support/ray_cluster.py).

Ray binds its own ports on every interface (it has no bind address): in the namespace that is
loopback alone. There the head registers as 127.0.0.1 (Ray finds no route out and falls back
to it) and the worker as 127.0.0.2 (`--node-ip-address`), the addresses the launcher and the
autoscaler reach them at over SSH.

Needs root (sshd logs in users only as root; `unshare --pid` and `--net` need CAP_SYS_ADMIN),
Debian's openssh-server and rsync (tests/install-sshd.sh), and iproute2's `ip`.
"""

from __future__ import annotations

import contextlib
import ctypes
import getpass
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from support.loopback_net import LoopbackNetwork

SSHD = "/usr/sbin/sshd"
SSH_PORT = 22  # what Ray's SSH command runner always uses
SSH_CLIENT_CONFIG = "/etc/ssh/ssh_config"
# In the node's new mount namespace: the node's ssh client config over the system's, then sshd as PID 1.
_IN_NAMESPACE = 'mount --bind "$1" "$2" && exec "$3" -D -e -f "$4"'
_PR_SET_PDEATHSIG = 1


class SshUnavailable(RuntimeError):
    """This machine cannot host the pretend nodes (the reason says why); tests skip."""


@dataclass
class SshNode:
    """One pretend machine: an sshd on `ip` in its own PID namespace, with its own home and tmp."""

    name: str
    ip: str
    home: Path
    tmp: Path
    log_path: Path
    process: subprocess.Popen = field(repr=False)  # `unshare`, whose child is the namespace's sshd

    def namespace(self) -> str:
        """The id of this node's PID namespace (`pid:[...]`)."""
        return os.readlink(f"/proc/{_sshd_pid(self.process.pid)}/ns/pid")


def _die_with_parent() -> None:
    """In `unshare`: SIGKILL (it ignores SIGTERM) when the test process dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kwargs)


def check_ssh_nodes_possible() -> None:
    """Raise SshUnavailable, with the reason, where the pretend nodes cannot run here."""
    if os.geteuid() != 0:
        raise SshUnavailable("needs root: sshd logs a user in only when it runs as root, "
                             "and `unshare --pid` needs CAP_SYS_ADMIN")
    missing = [tool for tool in (SSHD, "ssh", "ssh-keygen", "rsync", "unshare", "mount")
               if shutil.which(tool) is None]
    if not missing and not Path(SSH_CLIENT_CONFIG).is_file():
        missing = [SSH_CLIENT_CONFIG]
    if missing:
        raise SshUnavailable(f"{', '.join(missing)} not installed (tests/install-sshd.sh installs "
                             "Debian's openssh-server and rsync)")
    probe = _run(["unshare", "--pid", "--fork", "--mount-proc", "true"])
    if probe.returncode != 0:
        raise SshUnavailable(f"cannot create a PID namespace (`unshare --pid --fork --mount-proc`: "
                             f"{probe.stderr.strip()}); without one `ray stop` would kill every Ray "
                             "process on this machine")


def _keygen(path: Path) -> Path:
    out = _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kdsed-test", "-f", str(path)])
    if out.returncode != 0:
        raise SshUnavailable(f"ssh-keygen failed: {out.stderr.strip()}")
    return path


def client_key(root: Path) -> Path:
    """The throw-away private key that logs into every node (`auth.ssh_private_key`)."""
    return root / "id_ed25519"


def _sshd_config(root: Path, node: str, ip: str, home: Path, tmp: Path) -> Path:
    config = root / node / "sshd_config"
    config.write_text("\n".join([
        f"ListenAddress {ip}:{SSH_PORT}",
        f"HostKey {root / 'host_key'}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}",
        f"AllowUsers {getpass.getuser()}",
        "PidFile none",
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",  # the keys live in a temporary folder, not a checked home
        "PrintMotd no",
        "AllowTcpForwarding local",
        "X11Forwarding no",
        # Session environment of this pretend machine: its own home and temporary folder.
        f"SetEnv HOME={home} RAY_TMPDIR={tmp} TMPDIR={tmp} RAY_USAGE_STATS_ENABLED=0",
        "",
    ]))
    return config


def _sshd_pid(unshare_pid: int) -> int:
    children = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children").read_text().split()
    if not children:
        raise ProcessLookupError(f"unshare {unshare_pid} has no child")
    return int(children[0])


def ssh_command(root: Path, ip: str, command: str, net: LoopbackNetwork) -> list[str]:
    """`ssh` argv that runs `command` on the node at `ip` with the throw-away key, from inside `net`."""
    return net.command(["ssh", "-i", str(client_key(root)), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                        "-o", "LogLevel=ERROR", f"{getpass.getuser()}@{ip}", command])


def _wait_ready(root: Path, node: SshNode, net: LoopbackNetwork, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if node.process.poll() is not None:
            raise SshUnavailable(f"sshd on {node.ip} exited with code {node.process.returncode}: "
                                 f"{node.log_path.read_text(errors='replace')[-2000:]}")
        out = _run(ssh_command(root, node.ip, "echo $HOME", net))
        if out.returncode == 0 and out.stdout.strip() == str(node.home):
            return
        time.sleep(0.3)
    raise SshUnavailable(f"cannot log in to sshd on {node.ip} within {timeout_s:.0f} s: "
                         f"{node.log_path.read_text(errors='replace')[-2000:]}")


def start_ssh_nodes(root: Path, ips: list[str], names: list[str], net: LoopbackNetwork,
                    timeout_s: float = 30.0) -> list[SshNode]:
    """Start one sshd per address of `net` (files in `root`); the first node named `names[0]`, and so on."""
    check_ssh_nodes_possible()
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # Debian's sshd insists on its privsep dir
    _keygen(root / "host_key")
    shutil.copyfile(f"{_keygen(client_key(root))}.pub", root / "authorized_keys")
    nodes: list[SshNode] = []
    try:
        for name, ip in zip(names, ips, strict=True):
            home, tmp = root / name / "home", root / name / "tmp"
            home.mkdir(parents=True)
            tmp.mkdir()
            config = _sshd_config(root, name, ip, home, tmp)
            client_config = root / name / "ssh_config"
            client_config.write_text(f"Host *\n    IdentityFile {home / 'ray_bootstrap_key.pem'}\n")
            log_path = root / name / "sshd.log"
            with open(log_path, "wb") as log:
                process = subprocess.Popen(  # nsenter execs unshare: process.pid is unshare's
                    net.command(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child=SIGKILL", "sh", "-c",
                                 _IN_NAMESPACE, "sh", str(client_config), SSH_CLIENT_CONFIG, SSHD, str(config)]),
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True, preexec_fn=_die_with_parent)
            nodes.append(SshNode(name, ip, home, tmp, log_path, process))
            _wait_ready(root, nodes[-1], net, timeout_s)
    except BaseException:
        stop_ssh_nodes(nodes)
        raise
    return nodes


def namespace_processes(node: SshNode) -> list[str]:
    """Command lines of the processes in the node's PID namespace other than its sshd's."""
    namespace = node.namespace()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.readlink(proc / "ns" / "pid") != namespace:
                continue
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            if not cmdline.startswith("sshd:") and not cmdline.startswith(SSHD):
                found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def stop_ssh_nodes(nodes: list[SshNode]) -> None:
    """Kill each node's `unshare` (it SIGKILLs sshd; the kernel then kills the namespace)."""
    for node in nodes:
        if node.process.poll() is None:
            node.process.kill()
        node.process.wait(timeout=20)
