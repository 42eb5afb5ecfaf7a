"""A real OpenSSH server on 127.0.0.1 for the deploy tests: its own config, host key, client key and port.

`start_sshd(dir)` runs `/usr/sbin/sshd -D -e -f DIR/sshd_config` (Debian's openssh-server: `apt-get install -y
openssh-server rsync`) listening on loopback only, on a free port, with a host key and a fresh client key made by
ssh-keygen in DIR, authorized_keys in DIR, PidFile in DIR, UsePAM no and StrictModes no; it logs in as the user
running the tests (root may log in with a key only). It waits, bounded, until the port answers with an SSH
banner; every problem becomes a `SshdUnavailable` whose message says why (the tests skip with it). `stop()` ends
only the server it started, by its pid.

Every command a client asks the server to run is recorded before it runs (`commands()`, in order): sshd's
ForceCommand is a small sh script that appends $SSH_ORIGINAL_COMMAND to DIR/commands.log (NUL-terminated) and
then runs it with the user's shell, as sshd itself would. `start_sshd(dir, env={...})` exports those variables
into every session first (the "device"'s environment, e.g. where its system Python finds TensorRT).
"""
from __future__ import annotations

import getpass
import os
import shlex
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = os.environ.get("DVIT_TEST_SSHD", "/usr/sbin/sshd")
APT_LINE = "apt-get install -y openssh-server rsync"
COMMAND_LOG = "commands.log"
# sshd runs ForceCommand with the user's shell; this records the client's command, then runs it the same way.
RECORDER = """#!/bin/sh
printf '%s\\0' "$SSH_ORIGINAL_COMMAND" >> {log}
{env}exec "${{SHELL:-/bin/sh}}" -c "$SSH_ORIGINAL_COMMAND"
"""


class SshdUnavailable(RuntimeError):
    pass


@dataclass
class Sshd:
    dir: Path
    port: int
    user: str
    identity: Path  # a client key in authorized_keys
    stranger: Path  # a client key that is not
    known_hosts: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return f"{self.user}@127.0.0.1"

    def log(self) -> str:
        p = self.dir / "sshd.log"
        return p.read_text(errors="replace") if p.is_file() else ""

    def commands(self) -> list[str]:
        """Every command run through this server so far, in order, as the client sent it."""
        p = self.dir / COMMAND_LOG
        return p.read_text(errors="replace").split("\0")[:-1] if p.is_file() else []

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_port() -> int:
    """A loopback port nothing listens on (bound then released; nothing else here binds loopback ports)."""
    return free_port()


def _keygen(path: Path, comment: str) -> None:
    r = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                       capture_output=True, text=True, timeout=60, check=False)
    if r.returncode != 0:
        raise SshdUnavailable(f"ssh-keygen failed: {r.stderr.strip()}")


def wait_for_banner(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """Bounded: at most `timeout` seconds, one connection attempt every 0.1 s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SshdUnavailable(f"sshd exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
                s.settimeout(2.0)
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SshdUnavailable(f"sshd did not answer on 127.0.0.1:{port} within {timeout:.0f} s")


def start_sshd(directory: Path, env: dict[str, str] | None = None) -> Sshd:
    for tool in (SSHD, "ssh", "ssh-keygen", "rsync"):
        if shutil.which(tool) is None and not Path(tool).is_file():
            raise SshdUnavailable(f"{tool} is not installed")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    user = getpass.getuser()
    _keygen(d / "host_ed25519", "dvit-test-host")
    _keygen(d / "client_ed25519", "dvit-test-client")
    _keygen(d / "stranger_ed25519", "dvit-test-stranger")
    (d / "authorized_keys").write_text((d / "client_ed25519.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    if os.geteuid() == 0:
        # sshd's privilege separation directory; the Debian package creates it at boot (tmpfiles.d)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    port = free_port()
    recorder = d / "record-command"
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in (env or {}).items())
    recorder.write_text(RECORDER.format(log=d / COMMAND_LOG, env=exports))
    os.chmod(recorder, 0o755)
    (d / "sshd_config").write_text("\n".join([
        "ListenAddress 127.0.0.1",
        f"Port {port}",
        f"HostKey {d / 'host_ed25519'}",
        f"AuthorizedKeysFile {d / 'authorized_keys'}",
        f"PidFile {d / 'sshd.pid'}",
        "UsePAM no",
        "StrictModes no",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "AllowUsers " + user,
        "MaxSessions 20",
        "MaxStartups 20:30:60",
        "X11Forwarding no",
        "AllowTcpForwarding no",
        "PrintMotd no",
        f"ForceCommand {recorder}",
        "LogLevel VERBOSE",
        "",
    ]))
    check = subprocess.run([SSHD, "-t", "-f", str(d / "sshd_config")], capture_output=True, text=True, timeout=30,
                           check=False)
    if check.returncode != 0:
        raise SshdUnavailable(f"sshd refuses the test config: {check.stderr.strip()[-300:]}")
    log = open(d / "sshd.log", "w")  # noqa: SIM115 - the server writes here until stop()
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    server = Sshd(d, port, user, d / "client_ed25519", d / "stranger_ed25519", d / "known_hosts", proc)
    try:
        wait_for_banner(port, proc)
    except SshdUnavailable as e:
        server.stop()
        raise SshdUnavailable(f"{e}: {server.log().strip()[-300:]}") from None
    return server
