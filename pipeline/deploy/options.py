"""Everything one `dvit deploy` was asked to do, as one frozen object: built once from the command line
(`DeployOptions.from_args`), or directly by API callers, and passed down whole."""
from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from . import bundle as bundle_mod
from .ssh import Remote

DEFAULT_REMOTE_DIR = "~/dvit-deploy"
DEFAULT_OUT = "deploy-results"


@dataclass(frozen=True)
class DeployOptions:
    """One deploy's options; the CLI flag of each field is in its comment (`source` is API-only)."""

    graphs: Path  # --graphs DIR
    target: str  # --target NAME
    host: str  # --host USER@HOST
    port: int | None = None  # --port
    identity: str | None = None  # --identity KEY
    reference: Path | None = None  # --reference REF.npz
    remote_dir: str = DEFAULT_REMOTE_DIR  # --remote-dir DIR
    remote_python: str | None = None  # --remote-python PATH
    out: Path = Path(DEFAULT_OUT)  # --out DIR
    dry_run: bool = False  # --dry-run
    build: bool = True  # not --no-build (see `building`)
    only_validate: bool = False  # --only-validate
    progress: bool = True  # not --no-progress
    host_key_check: str = "accept-new"  # --host-key-check
    known_hosts: str | None = None  # --known-hosts FILE
    connect_timeout: int = 10  # --connect-timeout S
    ssh_options: tuple[str, ...] = ()  # --ssh-option KEY=VALUE, repeated
    tensorrt_root: str | None = None  # --tensorrt-root DIR
    cuda_archs: str | None = None  # --cuda-archs LIST
    need_disk_mb: float | None = None  # --need-disk-mb MB
    keep_releases: int = 3  # --keep-releases N
    tegrastats_ms: int = 200  # --tegrastats-interval MS
    jobs: int | None = None  # --jobs
    latency_args: tuple[str, ...] = ()  # --latency-args ARGS, split as the shell would
    source: Path = bundle_mod.REPO  # the checkout whose pipeline/, plugins/ and pyproject.toml are shipped

    def __post_init__(self) -> None:
        # paths may be given as str or PathLike, sequences as lists: stored as Path and tuple
        for name in ("graphs", "out", "source"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        if self.reference is not None:
            object.__setattr__(self, "reference", Path(self.reference))
        object.__setattr__(self, "ssh_options", tuple(self.ssh_options))
        if isinstance(self.latency_args, str):
            raise TypeError("DeployOptions.latency_args is a sequence of arguments: split it with "
                            "DeployOptions.split_latency_args")
        object.__setattr__(self, "latency_args", tuple(self.latency_args))

    @property
    def building(self) -> bool:
        """Whether this deploy builds the plugin and the engines (--only-validate implies --no-build)."""
        return self.build and not self.only_validate

    @property
    def reuse_flag(self) -> str:
        """The flag that makes this deploy reuse the current release's engines, for messages."""
        return "--only-validate" if self.only_validate else "--no-build"

    @staticmethod
    def split_latency_args(text: str) -> tuple[str, ...]:
        try:
            return tuple(shlex.split(text))
        except ValueError as e:
            raise ConfigError(f"--latency-args {text!r}: {e}: quote it as a shell would") from None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DeployOptions:
        """The options of a parsed `dvit deploy` command line (see `configure`)."""
        return cls(
            graphs=Path(args.graphs), target=args.target, host=args.host[0] if isinstance(args.host, list) else args.host, port=args.port, identity=args.identity,
            reference=Path(args.reference) if args.reference is not None else None, remote_dir=args.remote_dir,
            remote_python=args.remote_python, out=Path(args.out), dry_run=args.dry_run, build=not args.no_build,
            only_validate=args.only_validate, progress=not args.no_progress, host_key_check=args.host_key_check,
            known_hosts=args.known_hosts, connect_timeout=args.connect_timeout, ssh_options=tuple(args.ssh_option),
            tensorrt_root=args.tensorrt_root, cuda_archs=args.cuda_archs, need_disk_mb=args.need_disk_mb,
            keep_releases=args.keep_releases, tegrastats_ms=args.tegrastats_interval, jobs=args.jobs,
            latency_args=cls.split_latency_args(args.latency_args),
        )

    def check(self) -> None:
        """Raises ConfigError (one line) for options that contradict each other."""
        if self.only_validate and self.reference is None:
            raise ConfigError("--only-validate needs --reference REF.npz (the recording to validate against)")
        if self.keep_releases < 1:
            raise ConfigError(f"--keep-releases {self.keep_releases}: keep at least 1")

    def remote(self) -> Remote:
        """Where and how to connect (raises ConfigError for a bad --host, --identity or --host-key-check)."""
        return Remote.parse(self.host, port=self.port, identity=self.identity, host_key_check=self.host_key_check,
                            known_hosts=self.known_hosts, connect_timeout=self.connect_timeout,
                            options=self.ssh_options)
