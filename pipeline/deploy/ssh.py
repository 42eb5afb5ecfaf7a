"""Running commands and rsync on the device over ssh: one ControlMaster connection reused by every step.

Every ssh call is non-interactive (BatchMode: a missing key fails instead of prompting), bounded
(ConnectTimeout, ServerAlive*, a subprocess timeout) and checks the host key per `host_key_check`
(StrictHostKeyChecking: yes, accept-new or no). Failures to connect are turned into one line that names the
fix (refused connection, timeout, unknown host, refused key, changed host key).

Remote commands are POSIX sh strings run by `sh -c` on the device, whatever the login shell is.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, DvitError

if TYPE_CHECKING:
    from typing import Self

HOST_KEY_CHECKS = ("yes", "accept-new", "no")
SSH_ERROR = 255  # ssh's own failures (connection, authentication) exit 255


class SshError(DvitError):
    """Could not reach or log in to the device."""


@dataclass(frozen=True)
class Remote:
    """Where to connect and how: user@host, port, key, host-key policy."""

    host: str
    user: str | None = None
    port: int | None = None
    identity: str | None = None
    host_key_check: str = "accept-new"
    known_hosts: str | None = None
    connect_timeout: int = 10
    options: tuple[str, ...] = ()  # extra -o KEY=VALUE

    @classmethod
    def parse(cls, spec: str, **kw: object) -> Remote:
        """'user@host', 'host' or 'user@host:port' (also [v6addr]:port)."""
        if not spec or any(c.isspace() for c in spec):
            raise ConfigError(f"--host {spec!r} is not user@host: pass e.g. --host nvidia@192.168.1.42")
        user, _, host = spec.rpartition("@")
        port = kw.pop("port", None)
        m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:]+)(?::(\d+))?", host)
        if not m:
            raise ConfigError(f"--host {spec!r} is not user@host[:port]: pass e.g. --host nvidia@192.168.1.42")
        host = m.group(1) or m.group(3)
        inline_port = m.group(2) or m.group(4)
        if inline_port and port is None:
            port = int(inline_port)
        hk = str(kw.get("host_key_check") or "accept-new")
        if hk not in HOST_KEY_CHECKS:
            raise ConfigError(f"--host-key-check {hk!r}: use one of {', '.join(HOST_KEY_CHECKS)}")
        identity = kw.get("identity")
        if identity is not None and not Path(str(identity)).is_file():
            raise ConfigError(f"--identity {identity}: no such key file: pass the private key that logs in to {host}")
        return cls(host=host, user=user or None, port=int(str(port)) if port else None, **kw)  # type: ignore[arg-type]

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def label(self) -> str:
        return self.destination + (f":{self.port}" if self.port else "")

    def base_options(self) -> list[str]:
        opts = [
            "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={int(self.connect_timeout)}",
            "-o", f"StrictHostKeyChecking={self.host_key_check}",
            "-o", "ServerAliveInterval=15",
            "-o", "ServerAliveCountMax=4",
            "-o", "LogLevel=ERROR",
        ]
        if self.known_hosts:
            opts += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        if self.identity:
            opts += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        if self.port:
            opts += ["-p", str(self.port)]
        for o in self.options:
            opts += ["-o", o]
        return opts


@dataclass
class Result:
    command: str
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def explain(remote: Remote, stderr: str, key_hint: bool = True) -> str:
    """One line for ssh's own failure (exit 255), naming the fix."""
    text = stderr.strip()
    where = f"{remote.host}:{remote.port or 22}"
    if "Connection refused" in text:
        return f"cannot reach {where}: connection refused (is sshd running on the device, and is --port right?)"
    if "timed out" in text or "Connection timed out" in text:
        return (f"cannot reach {where}: no answer within {remote.connect_timeout} s (check the address and the "
                "network, or raise --connect-timeout)")
    if "Could not resolve hostname" in text or "Name or service not known" in text:
        return f"unknown host {remote.host!r}: check the name or pass the device's IP address with --host"
    if "No route to host" in text or "Network is unreachable" in text:
        return f"cannot reach {where}: no route to host (is the device on this network?)"
    if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return (f"the host key of {remote.host} is unknown or has changed: check it, then add it with "
                f"`ssh-keyscan -p {remote.port or 22} {remote.host} >> ~/.ssh/known_hosts` (or pass "
                "--host-key-check accept-new for a first connection)")
    if "Permission denied" in text:
        key = f"the key {remote.identity}" if remote.identity else "your ssh keys (agent or ~/.ssh)"
        return (f"{remote.destination} refused {key}: add its public key to ~/.ssh/authorized_keys on the device "
                f"(`ssh-copy-id {'-i ' + str(remote.identity) + '.pub ' if remote.identity else ''}"
                f"{'-p ' + str(remote.port) + ' ' if remote.port else ''}{remote.destination}`)"
                + (", or pass --identity KEY" if key_hint and not remote.identity else ""))
    last = text.splitlines()[-1] if text else "no error message"
    return f"ssh to {where} failed: {last}"


@dataclass
class Ssh:
    """A session on the device; `with Ssh(remote) as ssh:` opens one ControlMaster and closes it at the end."""

    remote: Remote
    multiplex: bool = True
    _dir: str | None = field(default=None, repr=False)
    _master: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        for tool in ("ssh",):
            if shutil.which(tool) is None:
                raise ConfigError(f"{tool} is not installed here: install openssh-client")

    # ------------------------------------------------------------------ connection
    @property
    def control_path(self) -> str | None:
        return os.path.join(self._dir, "cm") if self._dir else None

    def ssh_options(self) -> list[str]:
        opts = self.remote.base_options()
        if self._master and self.control_path:
            opts += ["-o", f"ControlPath={self.control_path}", "-o", "ControlMaster=no"]
        return opts

    def open(self, timeout: float = 60) -> Self:
        """Log in once (raises SshError with one line when that fails) and keep the connection for later calls."""
        if not self.multiplex:
            self.run("true", timeout=timeout, what="connect")
            return self
        self._dir = tempfile.mkdtemp(prefix="dvit-ssh-")  # short: a socket path is limited to ~100 bytes
        err = os.path.join(self._dir, "master.err")
        cmd = ["ssh", *self.remote.base_options(), "-o", "ControlMaster=yes", "-o", f"ControlPath={self.control_path}",
               "-o", "ControlPersist=300", "-f", "-N", self.remote.destination]
        with open(err, "w") as e:
            try:
                proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=e,
                                      timeout=timeout, check=False)
            except subprocess.TimeoutExpired:
                self.close()
                raise SshError(f"cannot reach {self.remote.host}:{self.remote.port or 22}: no login within "
                               f"{timeout:.0f} s") from None
        if proc.returncode != 0:
            text = Path(err).read_text(errors="replace")
            self.close()
            raise SshError(explain(self.remote, text))
        self._master = True
        return self

    def close(self) -> None:
        if self._master and self.control_path:
            subprocess.run(["ssh", *self.remote.base_options(), "-o", f"ControlPath={self.control_path}", "-O", "exit",
                            self.remote.destination], stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
                           check=False)
        self._master = False
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ commands
    def argv(self, script: str) -> list[str]:
        """The ssh command line that runs POSIX-sh `script` on the device."""
        return ["ssh", *self.ssh_options(), self.remote.destination, "sh -c " + shlex.quote(script)]

    def run(self, script: str, *, timeout: float = 600, what: str = "command", check_connection: bool = True) -> Result:
        """Run `script`; the remote exit status is returned, ssh's own failures raise SshError (one line)."""
        try:
            proc = subprocess.run(self.argv(script), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=timeout, check=False, errors="replace")
        except subprocess.TimeoutExpired as e:
            raise SshError(f"{what} on {self.remote.host} did not finish within {timeout:.0f} s") from e
        if proc.returncode == SSH_ERROR and check_connection and is_ssh_failure(proc.stderr):
            raise SshError(explain(self.remote, proc.stderr))
        return Result(script, proc.returncode, proc.stdout, proc.stderr)

    # ------------------------------------------------------------------ rsync
    def rsync_shell(self) -> str:
        return " ".join(shlex.quote(a) for a in ["ssh", *self.ssh_options()])

    def rsync_argv(self, sources: list[str], dest: str, *options: str) -> list[str]:
        return ["rsync", "-e", self.rsync_shell(), *options, *sources, dest]

    def rsync(self, sources: list[str], dest: str, *options: str, timeout: float = 3600,
              what: str = "rsync") -> Result:
        if shutil.which("rsync") is None:
            raise ConfigError("rsync is not installed here: install it (apt-get install rsync)")
        argv = self.rsync_argv(sources, dest, *options)
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                                  check=False, errors="replace")
        except subprocess.TimeoutExpired as e:
            raise SshError(f"{what} to {self.remote.host} did not finish within {timeout:.0f} s") from e
        if proc.returncode == SSH_ERROR and is_ssh_failure(proc.stderr):
            raise SshError(explain(self.remote, proc.stderr))
        return Result(" ".join(shlex.quote(a) for a in argv), proc.returncode, proc.stdout, proc.stderr)

    def remote_path(self, path: str) -> str:
        """rsync's host:path form."""
        host = f"[{self.remote.host}]" if ":" in self.remote.host else self.remote.host
        user = f"{self.remote.user}@" if self.remote.user else ""
        return f"{user}{host}:{path}"


def is_ssh_failure(stderr: str) -> bool:
    """Whether `stderr` of an exit 255 is ssh's own (connection, authentication), not the remote command's."""
    markers = ("Connection refused", "timed out", "Could not resolve", "Permission denied", "Host key verification",
               "No route to host", "Network is unreachable", "Connection closed", "kex_exchange", "ssh:",
               "REMOTE HOST IDENTIFICATION")
    return any(m in stderr for m in markers)
