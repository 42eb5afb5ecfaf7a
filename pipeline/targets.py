"""Device target profiles (`targets/*.toml`): what each device runs and how engines are built for it.

One TOML file per device, so that `dvit build`, `dvit targets` and `make plugins` read compute capabilities,
CUDA architectures, TensorRT versions and build defaults from one place. This module needs only the standard
library: a Jetson runs it with JetPack's Python and nothing else.

    dvit targets                                  table of every profile
    dvit targets orin-nano [--json]               one profile in full
    python -m pipeline.targets --cuda-archs thor  "110" (semicolon-separated for several), for the Makefile
    python -m pipeline.targets --cmake-args orin-nano [--jetpack 7]
                                                  what plugins/CMakeLists.txt needs to know about the device, for
                                                  `make plugins TARGET=...`

Profiles live in `targets/` at the repository root, or in $DVIT_TARGETS_DIR. Schema: targets/README.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from .errors import ConfigError

try:  # Python >= 3.11; JetPack 6 (Ubuntu 22.04) has Python 3.10, where `pip install tomli` provides the same
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - exercised on Python 3.10 only
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError:
        tomllib = None  # type: ignore[assignment]

BACKENDS = ("tensorrt", "tensorrt-rtx")
PRECISIONS = ("fp32", "fp16", "int8")  # the values `dvit precision` accepts, per stage
# dla.stages: which engines a DLA build puts on the DLA core (pipeline/build/placement.py holds the rule).
# "all": every FP16/INT8 engine, TensorRT moving what the DLA cannot run to the GPU layer by layer (dvit's DLA
# build before this field); "pre-pruning": only the FP16/INT8 stage engines that hold no top-k, gather, scatter or
# plugin node.
DLA_STAGES = ("all", "pre-pruning")
# The compute capabilities TensorRT-RTX can build for (its ComputeCapability enum; tests/test_targets.py checks
# this list against the installed tensorrt_rtx).
RTX_COMPUTE_CAPABILITIES = (75, 80, 86, 89, 120, 121)
OPTIMIZATION_LEVELS = range(6)
ENV_DIR = "DVIT_TARGETS_DIR"

_TOP = {
    "name", "description", "backend", "min_version", "compute_capabilities", "cuda_archs", "precision",
    "workspace_mib", "builder_optimization_level", "dla", "stack",
}
_DLA = {"cores", "enabled", "core", "gpu_fallback", "versions", "stages"}
_STACK = {"version", "cuda", "jetpack"}
_VERSION = re.compile(r"^\d+(\.\d+){0,3}$")
_ARCH = re.compile(r"^(\d+)[af]?(-real|-virtual)?$")  # CMAKE_CUDA_ARCHITECTURES entries: 87, 90a, 120-real


@dataclass(frozen=True)
class Stack:
    """One supported backend version and the CUDA (and JetPack) releases it comes with."""

    version: str
    cuda: tuple[str, ...]
    jetpack: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dla:
    cores: int = 0
    enabled: bool = False
    core: int = 0
    versions: tuple[str, ...] = ()  # backend versions that drive this module's DLA (empty: all supported)
    gpu_fallback: bool = True  # always: a DLA build without GPU fallback fails on the first unsupported layer
    stages: str = "all"  # which engines go on the DLA (DLA_STAGES); "all" when the profile does not say


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    backend: str
    min_version: str
    compute_capabilities: tuple[int, ...]
    cuda_archs: tuple[str, ...]
    precision: tuple[str, ...]
    workspace_mib: int
    builder_optimization_level: int
    dla: Dla
    stacks: tuple[Stack, ...]
    path: Path

    @property
    def versions(self) -> tuple[str, ...]:
        return tuple(s.version for s in self.stacks)

    @property
    def jetson(self) -> bool:
        return any(s.jetpack for s in self.stacks)

    @property
    def workspace_bytes(self) -> int:
        return self.workspace_mib << 20

    @property
    def precision_spec(self) -> str:
        """'fp16', or 'fp16,int8,int8,fp16': the form `dvit precision --precision` takes."""
        return ",".join(self.precision)

    @property
    def cuda_archs_cmake(self) -> str:
        return ";".join(self.cuda_archs)

    def driver_cuda(self, jetpack: str | None = None) -> tuple[str, str] | None:
        """(JetPack, CUDA) of the device's CUDA driver, which the plugin's statically linked CUDA runtime must not be
        newer than (by major version): ("6", "12.6") for an Orin. `jetpack` names the JetPack the device runs
        ("7", "6.2"); by default the oldest one the profile lists, so that the plugin loads on every supported
        JetPack. None where the driver is not fixed by the profile (not a Jetson: any driver may be installed)."""
        stacks = [s for s in self.stacks if s.jetpack]
        if not stacks:
            if jetpack:
                raise ConfigError(f"target {self.name} is not a Jetson (its profile lists no JetPack): drop JETPACK"
                                  f"={jetpack} (--jetpack)")
            return None
        if jetpack:
            if not _VERSION.match(jetpack):
                raise ConfigError(f"JetPack {jetpack!r} is not a version such as 6 or 7.1")
            stacks = [s for s in stacks if any(version_matches(j, jetpack) or version_matches(jetpack, j)
                                               for j in s.jetpack)]
            if not stacks:
                listed = ", ".join(j for s in self.stacks for j in s.jetpack)
                raise ConfigError(f"target {self.name} lists no JetPack {jetpack}: its profile ({self.path.name}) "
                                  f"lists JetPack {listed}")
            label = jetpack
        else:
            oldest = min(stacks, key=lambda s: min(version_tuple(j) for j in s.jetpack))
            stacks = [oldest]
            majors = {version_tuple(j)[0] for j in oldest.jetpack}
            label = str(majors.pop()) if len(majors) == 1 else min(oldest.jetpack, key=version_tuple)
        cuda = min((c for s in stacks for c in s.cuda), key=version_tuple)
        return label, cuda

    def cmake_args(self, jetpack: str | None = None) -> tuple[str, ...]:
        """The -D options plugins/CMakeLists.txt takes from this profile: the CUDA architectures and, on a Jetson,
        the CUDA of the device's driver and its JetPack (empty where none: CMake then checks nothing). Every option
        is always given, so that a reused build directory forgets the previous target. No value holds a space or a
        quote; architectures are separated by ';' (quote each argument where a shell would read ';')."""
        driver = self.driver_cuda(jetpack)
        jp, cuda = driver if driver else ("", "")
        return (f"-DCMAKE_CUDA_ARCHITECTURES={self.cuda_archs_cmake}", f"-DDVIT_PROFILE={self.name}",
                f"-DDVIT_DEVICE_CUDA={cuda}", f"-DDVIT_DEVICE_JETPACK={jp}")

    def cuda_for(self, version: str) -> tuple[str, ...]:
        """CUDA releases that come with backend `version` on this target (empty if it is not supported)."""
        return next((s.cuda for s in self.stacks if version_matches(version, s.version)), ())

    def dla_supported(self, version: str) -> bool:
        """Whether this module's DLA can be used with backend `version`."""
        if self.dla.cores == 0:
            return False
        return not self.dla.versions or any(version_matches(version, v) for v in self.dla.versions)

    def check_version(self, installed: str) -> str | None:
        """None if `installed` (e.g. '10.3.0.30') is a backend version this target supports, else why not."""
        backend = backend_label(self.backend)
        if version_tuple(installed) < version_tuple(self.min_version):
            return (f"target {self.name} needs {backend} >= {self.min_version}, this machine has {installed}: "
                    f"install one of {', '.join(self.versions)}")
        if not any(version_matches(installed, v) for v in self.versions):
            return (f"target {self.name} is built and tested with {backend} {', '.join(self.versions)}, this "
                    f"machine has {installed}: install one of those, or add a [[stack]] to {self.path.name}")
        return None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["path"] = str(self.path)
        d["versions"] = list(self.versions)
        d["precision_spec"] = self.precision_spec
        d["cuda_archs_cmake"] = self.cuda_archs_cmake
        return d


def backend_label(backend: str) -> str:
    return {"tensorrt": "TensorRT", "tensorrt-rtx": "TensorRT-RTX"}.get(backend, backend)


def version_tuple(version: str) -> tuple[int, ...]:
    """'10.3.0.30' -> (10, 3, 0, 30); stops at the first part that is not a number ('11.0.0rc1' -> (11, 0))."""
    out: list[int] = []
    for part in str(version).split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        out.append(int(m.group()))
        if m.group() != part:
            break
    return tuple(out)


def version_matches(installed: str, listed: str) -> bool:
    """'10.3.0.30' matches '10.3' and '10'; '10.13.3' does not match '10.1'."""
    want = version_tuple(listed)
    return bool(want) and version_tuple(installed)[: len(want)] == want


# ---------------------------------------------------------------------------------------------- loading
def targets_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    if directory is not None:
        return Path(directory)
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR])
    return Path(__file__).resolve().parents[1] / "targets"


def _profile_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise ConfigError(f"no target profiles: {directory} does not exist (set ${ENV_DIR} to the targets/ "
                          "directory of a dvit-edge checkout)")
    return sorted(directory.glob("*.toml"))


def list_targets(directory: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the profiles in the targets directory, sorted."""
    return [p.stem for p in _profile_files(targets_dir(directory))]


def load_target(name: str, directory: str | os.PathLike[str] | None = None) -> Target:
    """The validated profile `name`; an unknown name fails with one line listing the known ones."""
    d = targets_dir(directory)
    names = list_targets(d)
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"unknown target {name!r}{hint}: choose one of {', '.join(names)} (profiles in {d})")
    return parse_target_file(d / f"{name}.toml")


def load_all(directory: str | os.PathLike[str] | None = None) -> list[Target]:
    d = targets_dir(directory)
    return [parse_target_file(p) for p in _profile_files(d)]


def parse_target_file(path: str | os.PathLike[str]) -> Target:
    path = Path(path)
    if tomllib is None:
        raise ConfigError("reading target profiles needs a TOML parser: Python >= 3.11, or `pip install tomli`")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e}): fix the file") from e
    except OSError as e:
        raise ConfigError(f"cannot read target profile {path} ({e.strerror})") from e
    return parse_target(data, path)


class _Fields:
    """Typed access to one TOML table; every error names the file and the field."""

    def __init__(self, path: Path, data: dict[str, Any], known: set[str], prefix: str = "") -> None:
        self.path, self.data, self.prefix = path, data, prefix
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.fail(key, f"unknown field{hint}; known fields: {', '.join(sorted(known))}")

    def fail(self, key: str, why: str) -> NoReturn:
        raise ConfigError(f"{self.path}: field '{self.prefix}{key}': {why}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., what: str = "") -> Any:
        if key not in self.data:
            if default is ...:
                self.fail(key, f"missing ({what or _kind_name(kind)} required)")
            return default
        value = self.data[key]
        if isinstance(value, bool) and kind is not bool and not (isinstance(kind, tuple) and bool in kind):
            self.fail(key, f"expected {what or _kind_name(kind)}, got {value!r}")
        if not isinstance(value, kind):
            self.fail(key, f"expected {what or _kind_name(kind)}, got {type(value).__name__} {value!r}")
        return value

    def version(self, key: str, default: Any = ...) -> str:
        v = self.get(key, str, default, what="a version string such as \"10.3\"")
        if key in self.data and not _VERSION.match(v):
            self.fail(key, f"{v!r} is not a version such as \"10.3\" or \"11\"")
        return v

    def str_list(self, key: str, default: Any = ..., pattern: re.Pattern[str] | None = None,
                 what: str = "a string or a list of strings") -> tuple[str, ...]:
        if key not in self.data and default is not ...:
            return tuple(default)
        v = self.get(key, (str, list), what=what)
        items = [v] if isinstance(v, str) else v
        if not items:
            self.fail(key, f"empty: expected {what}")
        for item in items:
            if not isinstance(item, str) or (pattern is not None and not pattern.match(item)):
                self.fail(key, f"{item!r} is not valid: expected {what}")
        return tuple(items)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", int: "an integer", bool: "true or false", list: "a list", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def parse_target(data: dict[str, Any], path: Path) -> Target:
    """Validate one profile's parsed TOML; the first problem stops with one line naming file and field."""
    f = _Fields(path, data, _TOP)
    name = f.get("name", str)
    if name != path.stem:
        f.fail("name", f"{name!r} differs from the file name: rename the file to {name}.toml or set "
                       f"name = {path.stem!r}")
    description = f.get("description", str)
    backend = f.get("backend", str)
    if backend not in BACKENDS:
        f.fail("backend", f"{backend!r} is not one of {', '.join(BACKENDS)}")
    min_version = f.version("min_version")

    ccs = f.get("compute_capabilities", list, what="a list of SM numbers such as [87]")
    if not ccs or not all(isinstance(c, int) and not isinstance(c, bool) and 30 <= c <= 999 for c in ccs):
        f.fail("compute_capabilities", f"{ccs!r}: expected a non-empty list of SM numbers such as [87] (8.7)")
    if len(set(ccs)) != len(ccs):
        f.fail("compute_capabilities", f"{ccs!r} lists an SM twice")
    if backend == "tensorrt-rtx" and (bad := [c for c in ccs if c not in RTX_COMPUTE_CAPABILITIES]):
        f.fail("compute_capabilities", f"TensorRT-RTX cannot build for SM {', '.join(map(str, bad))}; it "
                                       f"supports {', '.join(map(str, RTX_COMPUTE_CAPABILITIES))}")

    raw_archs = f.get("cuda_archs", list, what="a list of CUDA architectures such as [87] or [\"90a\"]")
    archs = tuple(str(a) for a in raw_archs if not isinstance(a, bool))
    if not archs or len(archs) != len(raw_archs) or not all(_ARCH.match(a) for a in archs):
        f.fail("cuda_archs", f"{raw_archs!r}: expected CMAKE_CUDA_ARCHITECTURES entries such as [87] or [\"90a\"]")
    arch_sms = {int(_ARCH.match(a).group(1)) for a in archs}  # type: ignore[union-attr]
    if missing := [c for c in ccs if c not in arch_sms]:
        f.fail("cuda_archs", f"no entry for SM {', '.join(map(str, missing))} of compute_capabilities: the "
                             "plugin must be compiled for every compute capability the engine targets")

    precision = f.str_list("precision", what=f"one of {', '.join(PRECISIONS)}, or a list of them per stage")
    if bad_p := [p for p in precision if p not in PRECISIONS]:
        f.fail("precision", f"{', '.join(map(repr, bad_p))} is not one of {', '.join(PRECISIONS)}")

    workspace = f.get("workspace_mib", int)
    if workspace <= 0:
        f.fail("workspace_mib", f"{workspace} is not a positive number of MiB")
    level = f.get("builder_optimization_level", int)
    if level not in OPTIMIZATION_LEVELS:
        f.fail("builder_optimization_level", f"{level} is outside 0..5 (TensorRT's default is 3)")

    stacks = _parse_stacks(f, min_version)
    versions = [s.version for s in stacks]
    dla = _parse_dla(path, f.get("dla", dict, default={}), backend, versions)
    return Target(
        name=name, description=description, backend=backend, min_version=min_version,
        compute_capabilities=tuple(ccs), cuda_archs=archs, precision=precision, workspace_mib=workspace,
        builder_optimization_level=level, dla=dla, stacks=stacks, path=path,
    )


def _parse_stacks(f: _Fields, min_version: str) -> tuple[Stack, ...]:
    raw = f.get("stack", list, what="one or more [[stack]] tables")
    if not raw:
        f.fail("stack", "empty: add at least one [[stack]] with version and cuda")
    stacks = []
    for i, table in enumerate(raw):
        if not isinstance(table, dict):
            f.fail("stack", "expected [[stack]] tables")
        s = _Fields(f.path, table, _STACK, prefix=f"stack[{i}].")
        version = s.version("version")
        if version_tuple(version) < version_tuple(min_version):
            s.fail("version", f"{version} is below min_version {min_version}")
        cuda = s.str_list("cuda", pattern=_VERSION, what="a CUDA version such as \"12.6\" or a list of them")
        jetpack = s.str_list("jetpack", default=(), pattern=_VERSION, what="a list of JetPack versions")
        stacks.append(Stack(version=version, cuda=cuda, jetpack=jetpack))
    versions = [s.version for s in stacks]
    if len(set(versions)) != len(versions):
        f.fail("stack", f"versions {versions} list one twice")
    return tuple(stacks)


def _parse_dla(path: Path, table: dict[str, Any], backend: str, versions: list[str]) -> Dla:
    d = _Fields(path, table, _DLA, prefix="dla.")
    cores = d.get("cores", int, default=0)
    if cores < 0:
        d.fail("cores", f"{cores} is negative")
    enabled = d.get("enabled", bool, default=False)
    core = d.get("core", int, default=0)
    if d.get("gpu_fallback", bool, default=True) is not True:
        d.fail("gpu_fallback", "must be true: dvit always builds DLA engines with GPU fallback")
    dla_versions = d.str_list("versions", default=(), pattern=_VERSION, what="a list of backend versions")
    if unknown := [v for v in dla_versions if v not in versions]:
        d.fail("versions", f"{', '.join(unknown)} is not a [[stack]] version ({', '.join(versions)})")
    if cores and not 0 <= core < cores:
        d.fail("core", f"{core} is not a DLA core of this device (0..{cores - 1})")
    if enabled and cores == 0:
        d.fail("enabled", "true, but dla.cores is 0: this device has no DLA")
    if enabled and backend == "tensorrt-rtx":
        d.fail("enabled", "TensorRT-RTX ignores DLA settings: set enabled = false")
    stages = _parse_dla_stages(d, cores)
    return Dla(cores=cores, enabled=enabled, core=core, versions=dla_versions, stages=stages)


def _parse_dla_stages(d: _Fields, cores: int) -> str:
    """dla.stages: one of DLA_STAGES; given only where there is a DLA to put stages on."""
    stages = d.get("stages", str, default="all", what=f"one of {', '.join(map(repr, DLA_STAGES))}")
    if stages not in DLA_STAGES:
        close = difflib.get_close_matches(stages, DLA_STAGES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        d.fail("stages", f"{stages!r} is not one of {', '.join(map(repr, DLA_STAGES))}{hint}")
    if "stages" in d.data and cores == 0:
        d.fail("stages", f"{stages!r}, but dla.cores is 0: this device has no DLA; remove the field")
    return stages


# ---------------------------------------------------------------------------------------------- output
def render_table(targets: Sequence[Target]) -> str:
    """Plain-text table: one row per profile."""
    header = ("target", "backend", "versions", "SM", "CUDA archs", "DLA", "precision", "workspace", "description")
    rows = [header]
    for t in targets:
        dla = "-" if t.dla.cores == 0 else f"{t.dla.cores} core{'s' * (t.dla.cores > 1)}" + (
            ", on" if t.dla.enabled else ", off")
        rows.append((
            t.name, t.backend, ", ".join(t.versions), ",".join(map(str, t.compute_capabilities)),
            t.cuda_archs_cmake, dla, t.precision_spec, f"{t.workspace_mib} MiB", t.description,
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = ["  ".join([c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)] + [r[-1]]) for r in rows]
    return "\n".join(lines) + "\n"


def render_target(t: Target) -> str:
    lines = [f"{t.name}: {t.description}", f"  file: {t.path}",
             f"  backend: {backend_label(t.backend)} >= {t.min_version}"]
    for s in t.stacks:
        jp = f", JetPack {' / '.join(s.jetpack)}" if s.jetpack else ""
        lines.append(f"    {s.version}: CUDA {' / '.join(s.cuda)}{jp}")
    lines += [
        f"  compute capabilities: {', '.join(f'sm_{c}' for c in t.compute_capabilities)}",
        f"  plugin CUDA architectures: {t.cuda_archs_cmake}",
        f"  precision: {t.precision_spec}",
        f"  workspace limit: {t.workspace_mib} MiB; builder optimization level: {t.builder_optimization_level}",
    ]
    if t.dla.cores:
        only = f" (with {', '.join(t.dla.versions)})" if t.dla.versions else ""
        state = f"on, core {t.dla.core}, GPU fallback" if t.dla.enabled else "off (opt-in)"
        lines.append(f"  DLA: {t.dla.cores} core(s){only}; {state}; engines on it: {t.dla.stages} "
                     f"(dla.stages)")
    else:
        lines.append("  DLA: none")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- CLI
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="show one profile in full (default: a table of all)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--cuda-archs", metavar="NAME", default=None,
                        help="print NAME's plugin CUDA architectures, semicolon-separated (for CMake/make)")
    parser.add_argument("--cmake-args", metavar="NAME", default=None,
                        help="print the -D options that plugins/CMakeLists.txt takes from NAME's profile (CUDA "
                             "architectures; on a Jetson the CUDA of its JetPack's driver), space-separated")
    parser.add_argument("--jetpack", metavar="VERSION", default=None,
                        help="with --cmake-args: the JetPack the Jetson runs (default: the oldest its profile lists)")
    parser.add_argument("--dir", default=None, help=f"profile directory (default: targets/, or ${ENV_DIR})")


def main(args: argparse.Namespace) -> int:
    if args.jetpack and not args.cmake_args:
        raise ConfigError("--jetpack goes with --cmake-args NAME")
    if args.cmake_args:
        print(" ".join(load_target(args.cmake_args, args.dir).cmake_args(args.jetpack)))
        return 0
    if args.cuda_archs:
        print(load_target(args.cuda_archs, args.dir).cuda_archs_cmake)
        return 0
    if args.name:
        t = load_target(args.name, args.dir)
        sys.stdout.write(json.dumps(t.to_dict(), indent=2) + "\n" if args.json else render_target(t))
        return 0
    targets = load_all(args.dir)
    sys.stdout.write(json.dumps([t.to_dict() for t in targets], indent=2) + "\n" if args.json
                     else render_table(targets))
    return 0


if __name__ == "__main__":  # `python -m pipeline.targets --cuda-archs NAME`, for the Makefile
    from .cli import main as dvit

    sys.exit(dvit(["targets", *sys.argv[1:]]))
