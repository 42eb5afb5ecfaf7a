"""Device facts read over ssh, and the check that they fit a target profile, before anything is shipped.

One POSIX-sh script (FACTS_SCRIPT) prints every fact in a section of its own (`@@name` then the tool's raw
output); `parse_facts` turns that text into `DeviceFacts`, and `check_fit` compares them with a `Target`:
errors stop the deploy with one line naming the fix, warnings are printed and recorded. The parsers take the
raw text of the tools (nv_tegra_release, dpkg-query, nvcc --version, nvidia-smi, /proc/meminfo, df -Pk,
nvpmodel -q, jetson_clocks --show), so they are tested on captured output without a device.

Jetson-only tools (nvpmodel, jetson_clocks, tegrastats) are looked up; their absence is reported, never faked.

What the device's Python needs depends on what the deploy will run there (`requirements`): the device side
(`.[device]`) always; where engines run (a GPU), the cuda-python of the device's CUDA major (`cuda12`: JetPack 6,
`cuda13`: JetPack 7, Thor; cuda-bindings 13 needs Python 3.11+); where they cannot (no GPU), ONNX Runtime
validates the shipped ONNX graphs (`onnxruntime`: onnx, onnxruntime, and onnxruntime-extensions for plugin graphs).
With --remote-python, preflight checks that interpreter for each package and names what is missing; the deploy's
own venv installs exactly those extras (its `env` step).
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ..targets import Target, backend_label, version_matches, version_tuple

# L4T release -> JetPack release, for messages (the nvidia-jetpack package's version wins where installed).
# Source: NVIDIA's JetPack archive (developer.nvidia.com/embedded/jetpack-archive).
L4T_JETPACK = (
    ("32.7", "4.6"), ("35.1", "5.0.2"), ("35.2", "5.1"), ("35.3", "5.1.1"), ("35.4", "5.1.2"), ("35.5", "5.1.3"),
    ("35.6", "5.1.4"), ("36.2", "6.0 DP"), ("36.3", "6.0"), ("36.4.4", "6.2.1"), ("36.4.3", "6.2"), ("36.4", "6.1"),
    ("38.2", "7.0"),
)
# Jetson modules by the device-tree model string -> (board family, compute capability).
JETSON_BOARDS = (("Thor", 110), ("Orin", 87), ("Xavier", 72), ("TX2", 62), ("Nano", 53), ("TX1", 53))
SECTION = re.compile(r"^@@([a-z0-9_]+)$", re.MULTILINE)
# The Python packages preflight looks for: (name, import names (any), distributions (the first found gives the
# version)). Looked up with importlib.util.find_spec, not imported.
PACKAGES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("numpy", ("numpy",), ("numpy",)),
    ("tqdm", ("tqdm",), ("tqdm",)),
    ("rich", ("rich",), ("rich",)),
    ("tomli", ("tomli",), ("tomli",)),
    ("onnx", ("onnx",), ("onnx",)),
    ("onnxruntime", ("onnxruntime",), ("onnxruntime", "onnxruntime-gpu")),
    ("onnxruntime-extensions", ("onnxruntime_extensions",), ("onnxruntime-extensions",)),
    ("cuda-python", ("cuda.bindings.runtime", "cuda.cudart"), ("cuda-bindings", "cuda-python")),
)
# One `name=version` line per package (`name=` when absent); the script is single-quoted in sh: no ' inside.
_PACKAGE_PROBE = """import importlib.util as u, importlib.metadata as m
def found(names):
    for n in names:
        try:
            if u.find_spec(n) is not None:
                return True
        except Exception:
            pass
    return False
def version(dists):
    for d in dists:
        try:
            return m.version(d)
        except Exception:
            pass
    return "?"
for name, mods, dists in PACKAGE_LIST:
    print(name + "=" + (version(dists) if found(mods) else ""))
""".replace("PACKAGE_LIST", json.dumps([[n, list(mods), list(dists)] for n, mods, dists in PACKAGES]))
# What the current release's engines were built from (one JSON line), read from its engine manifest (an export
# set's has no precision: FP32 in every stage, as graphset.GraphSet.precision reads it).
_ENGINES_PROBE = """import json, sys
m = json.load(open(sys.argv[1]))
s = m.get("source_graphs") or dict()
stages = len((m.get("model_config") or dict()).get("pruning_loc") or []) + 1
print(json.dumps(dict(source_sha256=s.get("manifest_sha256"), source_kind=s.get("kind"),
                      precision=m.get("precision") or ["fp32"] * stages, batch_sizes=m.get("batch_sizes"))))
"""


def facts_script(root: str, python: str, header_dirs: list[str]) -> str:
    """The preflight script: reads only, changes nothing on the device. `root` is a shell path expression."""
    dirs = " ".join(header_dirs) if header_dirs else "/nonexistent"
    return f"""export PATH="$PATH:/usr/local/cuda/bin:/usr/sbin:/sbin"
PY={python}
ROOT={root}
s() {{ printf '\\n@@%s\\n' "$1"; }}
s home; printf '%s\\n' "$HOME"
s uname; uname -srm
s nv_tegra_release; cat /etc/nv_tegra_release 2>/dev/null
s model; if [ -r /proc/device-tree/model ]; then tr -d '\\000' < /proc/device-tree/model; echo; fi
s l4t_core; dpkg-query -W -f='${{Version}}\\n' nvidia-l4t-core 2>/dev/null
s jetpack; dpkg-query -W -f='${{Version}}\\n' nvidia-jetpack 2>/dev/null
s python; command -v "$PY" && "$PY" --version 2>&1
s tensorrt_python; "$PY" -c 'import tensorrt as t; print(t.__version__)' 2>/dev/null
s tensorrt_rtx_python; "$PY" -c 'import tensorrt_rtx as t; print(t.__version__)' 2>/dev/null
s python_packages; "$PY" -c '{_PACKAGE_PROBE}' 2>/dev/null
s venv; "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1 && echo ok
s libnvinfer; dpkg-query -W -f='${{db:Status-Abbrev}} ${{Package}} ${{Version}}\\n' 'libnvinfer*' 'tensorrt' 2>/dev/null | grep '^ii'
s nvcc; n=$(command -v nvcc); if [ -n "$n" ]; then echo "$n"; "$n" --version; fi
s cuda_version_json; cat /usr/local/cuda/version.json 2>/dev/null
s nvidia_smi; if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader 2>&1; fi
s meminfo; cat /proc/meminfo
s nproc; nproc 2>/dev/null
s df; d="$ROOT"; while [ ! -e "$d" ]; do d=$(dirname "$d"); done; echo "$d"; df -Pk "$d"
s tools; for t in cmake rsync sha256sum setsid python3 nvcc nvpmodel jetson_clocks tegrastats nvidia-smi; do printf '%s=%s\\n' "$t" "$(command -v $t)"; done
s cmake; cmake --version 2>/dev/null | head -n 1
s nvpmodel; if command -v nvpmodel >/dev/null 2>&1; then nvpmodel -q 2>&1; fi
s jetson_clocks; if command -v jetson_clocks >/dev/null 2>&1; then jetson_clocks --show 2>&1 || sudo -n jetson_clocks --show 2>&1; fi
s devfreq; for d in /sys/class/devfreq/*; do [ -r "$d/max_freq" ] && echo "${{d##*/}} $(cat $d/min_freq 2>/dev/null) $(cat $d/max_freq 2>/dev/null) $(cat $d/cur_freq 2>/dev/null)"; done 2>/dev/null
s trt_headers; for d in {dirs}; do [ -f "$d/NvInferRuntime.h" ] && echo "$d"; done
s deploy_state; readlink "$ROOT/current" 2>/dev/null; [ -f "$ROOT/current/out/engines/manifest.json" ] && echo engines=yes; [ -d "$ROOT/current/out/engines" ] && echo engines_dir=yes
s current_engines; for p in "$PY" python3; do "$p" -c '{_ENGINES_PROBE}' "$ROOT/current/out/engines/manifest.json" 2>/dev/null && break; done
s releases; ls -1 "$ROOT/releases" 2>/dev/null
true
"""


def split_sections(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    marks = list(SECTION.finditer(text))
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        out[m.group(1)] = text[m.end():end].strip("\n")
    return out


@dataclass
class Clocks:
    gpu_min_mhz: float | None = None
    gpu_max_mhz: float | None = None
    gpu_cur_mhz: float | None = None
    locked: bool | None = None  # None: could not tell
    source: str = ""
    note: str | None = None


@dataclass
class DeviceFacts:
    home: str | None = None
    uname: str | None = None
    jetson: bool = False
    model: str | None = None
    board: str | None = None  # Orin, Thor, ...
    l4t: str | None = None  # "36.4.3"
    l4t_line: str | None = None
    jetpack: str | None = None
    jetpack_source: str | None = None  # "nvidia-jetpack package" or "L4T release"
    python: str | None = None
    python_version: str | None = None
    tensorrt: str | None = None  # python module version
    tensorrt_rtx: str | None = None
    libnvinfer: str | None = None  # dpkg version of libnvinfer
    cuda: str | None = None
    nvcc: str | None = None
    gpus: list[dict[str, Any]] = field(default_factory=list)
    compute_capability: int | None = None  # 87 for sm_87
    compute_capability_source: str | None = None
    mem_total_kb: int | None = None
    mem_available_kb: int | None = None
    swap_total_kb: int | None = None
    swap_free_kb: int | None = None
    cpus: int | None = None
    disk_path: str | None = None
    disk_free_kb: int | None = None
    disk_mount: str | None = None
    tools: dict[str, str | None] = field(default_factory=dict)
    cmake: str | None = None
    power_mode: str | None = None
    power_mode_id: int | None = None
    clocks: Clocks = field(default_factory=Clocks)
    trt_headers: str | None = None
    current_release: str | None = None
    current_has_engines: bool = False
    # package name (PACKAGES) -> version, None when absent; None when preflight did not look (older captures)
    packages: dict[str, str | None] | None = None
    venv_ok: bool | None = None  # whether the interpreter can make a venv (venv + ensurepip); None: not looked
    current_engines: dict[str, Any] | None = None  # what the current release's engines were built from
    releases: list[str] = field(default_factory=list)  # names in ROOT/releases

    @property
    def has_gpu(self) -> bool:
        return self.jetson or bool(self.gpus)

    @property
    def arch(self) -> str | None:
        """The machine (`uname -m`): aarch64, x86_64, ..."""
        return self.uname.split()[-1] if self.uname else None

    @property
    def cuda_major(self) -> int | None:
        m = re.match(r"(\d+)\.", self.cuda or "")
        return int(m.group(1)) if m else None

    def backend_version(self, backend: str) -> str | None:
        if backend == "tensorrt-rtx":
            return self.tensorrt_rtx
        return self.tensorrt or self.libnvinfer

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- parsers
def parse_l4t(text: str) -> str | None:
    """'# R36 (release), REVISION: 4.3, GCID: ...' -> '36.4.3'."""
    m = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text or "")
    return f"{m.group(1)}.{m.group(2)}" if m else None


def jetpack_for_l4t(l4t: str | None) -> str | None:
    if not l4t:
        return None
    for prefix, jp in L4T_JETPACK:
        if version_matches(l4t, prefix):
            return jp
    return None


def parse_version(text: str | None) -> str | None:
    """The leading dotted version of a package version: '10.3.0.30-1+cuda12.5' -> '10.3.0.30'."""
    m = re.match(r"\s*(\d+(?:\.\d+)*)", text or "")
    return m.group(1) if m else None


def parse_libnvinfer(text: str) -> str | None:
    """From `dpkg-query -W` lines ('ii libnvinfer10 10.3.0.30-1+cuda12.5'): the runtime library's version."""
    best = None
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) < 3 or not parts[0].startswith("ii"):
            continue
        name, version = parts[1], parts[2]
        if re.fullmatch(r"(libnvinfer\d+|tensorrt|libnvinfer-bin)", name):
            v = parse_version(version)
            if v and (best is None or version_tuple(v) > version_tuple(best)):
                best = v
    return best


def parse_nvcc(text: str) -> str | None:
    """'Cuda compilation tools, release 12.6, V12.6.68' -> '12.6.68'."""
    m = re.search(r"release (\d+\.\d+), V(\d+(?:\.\d+)+)", text or "")
    return m.group(2) if m else None


def parse_cuda_json(text: str) -> str | None:
    try:
        return str(json.loads(text)["cuda"]["version"])
    except (ValueError, KeyError, TypeError):
        return None


def parse_nvidia_smi(text: str) -> list[dict[str, Any]]:
    """`nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader` lines."""
    gpus = []
    for line in (text or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 2 and re.fullmatch(r"\d+\.\d+", parts[1]):
            major, minor = parts[1].split(".")
            gpus.append({"name": parts[0], "compute_capability": int(major) * 10 + int(minor),
                         "driver": parts[2] if len(parts) > 2 else None,
                         "memory": parts[3] if len(parts) > 3 else None})
    return gpus


def parse_meminfo(text: str) -> dict[str, int]:
    out = {}
    for line in (text or "").splitlines():
        m = re.match(r"(\w+):\s+(\d+)\s*kB", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def parse_df(text: str) -> tuple[int, str] | None:
    """(available KiB, mount point) from `df -Pk DIR` (header line, then one line; long device names may wrap)."""
    lines = [x for x in (text or "").splitlines() if x.strip() and not x.startswith("Filesystem")]
    fields = " ".join(lines).split()
    # Filesystem 1024-blocks Used Available Capacity Mounted-on: take the numbers before the NN% column
    for i, f in enumerate(fields):
        if re.fullmatch(r"\d+%|-", f) and i >= 3 and fields[i - 1].isdigit():
            return int(fields[i - 1]), " ".join(fields[i + 1:]) or "?"
    return None


def parse_nvpmodel(text: str) -> tuple[str | None, int | None]:
    """`nvpmodel -q` -> ('MAXN_SUPER', 2)."""
    m = re.search(r"NV Power Mode:\s*(\S+)", text or "")
    ident = re.search(r"^\s*(\d+)\s*$", text or "", re.MULTILINE)
    return (m.group(1) if m else None), (int(ident.group(1)) if ident else None)


def parse_clocks(jetson_clocks: str, devfreq: str = "") -> Clocks:
    """GPU clock bounds from `jetson_clocks --show` (GPU MinFreq=.. MaxFreq=.. CurrentFreq=.., Hz) or, where that
    needs root, from /sys/class/devfreq; locked when min == max."""
    m = re.search(r"GPU MinFreq=(\d+) MaxFreq=(\d+) CurrentFreq=(\d+)", jetson_clocks or "")
    if m:
        gmin, gmax, gcur = (int(x) / 1e6 for x in m.groups())
        return Clocks(gmin, gmax, gcur, locked=gmin == gmax, source="jetson_clocks --show")
    note = None
    if jetson_clocks and re.search(r"root|permission|sudo", jetson_clocks, re.IGNORECASE):
        note = "jetson_clocks --show needs root here (sudo -n was refused)"
    for line in (devfreq or "").splitlines():
        parts = line.split()
        if len(parts) >= 3 and re.search(r"gpu|gp10b|gv11b|ga10b|gb10b", parts[0]) and parts[1].isdigit():
            lo, hi = int(parts[1]) / 1e6, int(parts[2]) / 1e6
            cur = int(parts[3]) / 1e6 if len(parts) > 3 and parts[3].isdigit() else None
            return Clocks(lo, hi, cur, locked=lo == hi, source=f"/sys/class/devfreq/{parts[0]}", note=note)
    return Clocks(note=note or ("jetson_clocks not found" if not jetson_clocks else "no GPU clock line"))


def parse_facts(text: str) -> DeviceFacts:
    s = split_sections(text)
    f = DeviceFacts()
    f.home = s.get("home") or None
    f.uname = s.get("uname") or None
    rel = s.get("nv_tegra_release", "")
    f.l4t_line = rel.splitlines()[0] if rel else None
    f.l4t = parse_l4t(rel)
    f.jetson = f.l4t is not None
    f.model = (s.get("model") or "").strip() or None
    jp = parse_version(s.get("jetpack"))
    if jp:
        f.jetpack, f.jetpack_source = jp, "nvidia-jetpack package"
    elif (jp := jetpack_for_l4t(f.l4t)) is not None:
        f.jetpack, f.jetpack_source = jp, f"L4T R{f.l4t}"
    py = (s.get("python") or "").splitlines()
    f.python = py[0].strip() if py and py[0].strip() else None
    f.python_version = parse_version(py[1].replace("Python", "")) if len(py) > 1 else None
    f.tensorrt = parse_version(s.get("tensorrt_python"))
    f.tensorrt_rtx = parse_version(s.get("tensorrt_rtx_python"))
    f.libnvinfer = parse_libnvinfer(s.get("libnvinfer", ""))
    nvcc = s.get("nvcc", "")
    f.nvcc = nvcc.splitlines()[0].strip() if nvcc.strip() else None
    f.cuda = parse_nvcc(nvcc) or parse_cuda_json(s.get("cuda_version_json", ""))
    f.gpus = parse_nvidia_smi(s.get("nvidia_smi", ""))
    if f.gpus:
        f.compute_capability = f.gpus[0]["compute_capability"]
        f.compute_capability_source = f"nvidia-smi ({f.gpus[0]['name']})"
    if f.jetson:
        for name, cc in JETSON_BOARDS:
            if f.model and name.lower() in f.model.lower():
                f.board = name
                if f.compute_capability is None:
                    f.compute_capability, f.compute_capability_source = cc, f"Jetson {name} ({f.model})"
                break
    mem = parse_meminfo(s.get("meminfo", ""))
    f.mem_total_kb, f.mem_available_kb = mem.get("MemTotal"), mem.get("MemAvailable")
    f.swap_total_kb, f.swap_free_kb = mem.get("SwapTotal"), mem.get("SwapFree")
    f.cpus = int(s["nproc"]) if s.get("nproc", "").strip().isdigit() else None
    df = s.get("df", "").splitlines()
    if df:
        f.disk_path = df[0].strip()
        parsed = parse_df("\n".join(df[1:]))
        if parsed:
            f.disk_free_kb, f.disk_mount = parsed
    for line in s.get("tools", "").splitlines():
        k, _, v = line.partition("=")
        if k:
            f.tools[k.strip()] = v.strip() or None
    f.cmake = (s.get("cmake") or "").strip() or None
    f.power_mode, f.power_mode_id = parse_nvpmodel(s.get("nvpmodel", ""))
    f.clocks = parse_clocks(s.get("jetson_clocks", ""), s.get("devfreq", ""))
    hdr = (s.get("trt_headers") or "").split()
    f.trt_headers = hdr[0] if hdr else None
    state = (s.get("deploy_state") or "").splitlines()
    f.current_release = next((x.strip() for x in state if x.strip() and "=" not in x), None)
    f.current_has_engines = "engines_dir=yes" in state
    if "python_packages" in s:
        f.packages = {}
        for line in s["python_packages"].splitlines():
            k, eq, v = line.partition("=")
            if eq and k.strip():
                f.packages[k.strip()] = v.strip() or None
        if not f.packages and f.python:  # the probe printed nothing: the interpreter could not run it
            f.packages = {name: None for name, _, _ in PACKAGES}
    if "venv" in s:
        f.venv_ok = s["venv"].strip() == "ok"
    try:
        engines = json.loads(s.get("current_engines") or "null")
    except ValueError:
        engines = None
    f.current_engines = engines if isinstance(engines, dict) else None
    f.releases = sorted(x.strip() for x in (s.get("releases") or "").splitlines() if x.strip())
    return f


# ---------------------------------------------------------------------------------------------- the fit check
@dataclass
class Fit:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Need:
    """One package the device's Python needs for this deploy, the pyproject extra that installs it, and why."""

    package: str  # a name of PACKAGES
    extra: str
    why: str


@dataclass
class Requirements:
    """What the device's Python needs for one deploy: `extras` (what the managed venv installs, `device` first),
    `needs` (each package, for checking an interpreter given with --remote-python), `errors` (what no extra can
    give this device, each naming the fix)."""

    extras: list[str] = field(default_factory=lambda: ["device"])
    needs: list[Need] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    cuda_extra: str | None = None  # cuda12 or cuda13 where engines run

    @property
    def spec(self) -> str:
        """The extras as pip takes them: `device,onnxruntime`."""
        return ",".join(self.extras)


CUDA_EXTRAS = {12: "cuda12", 13: "cuda13"}
CUDA13_MIN_PYTHON = (3, 11)  # cuda-bindings 13 has no wheels for Python 3.10 (JetPack 6's)


def requirements(f: DeviceFacts, *, host: str, uses_plugin: bool, validating: bool, timing: bool) -> Requirements:
    """What the device's Python needs to run this deploy's steps there (see the module docstring)."""
    req = Requirements()
    for pkg in ("numpy", "tqdm", "rich"):
        req.needs.append(Need(pkg, "device", "the device side of dvit-edge"))
    if f.python_version and version_tuple(f.python_version) < (3, 11):
        req.needs.append(Need("tomli", "device", "target profiles on Python 3.10"))
    if f.has_gpu and (validating or timing):
        major = f.cuda_major
        extra = CUDA_EXTRAS.get(major) if major is not None else None
        if major is None:
            req.errors.append(f"cannot tell {host}'s CUDA version (no nvcc on PATH or in /usr/local/cuda/bin, no "
                              "/usr/local/cuda/version.json), so not which cuda-python runs the engines: install the "
                              "CUDA toolkit (JetPack: `sudo apt-get install nvidia-jetpack`)")
        elif extra is None:
            req.errors.append(f"{host} runs CUDA {f.cuda}: the engine runner needs cuda-python for CUDA 12 or 13 "
                              "(JetPack 6, JetPack 7, Thor): update the device's CUDA")
        elif extra == "cuda13" and f.python_version and version_tuple(f.python_version) < CUDA13_MIN_PYTHON:
            req.errors.append(f"{host} runs CUDA {f.cuda}, whose cuda-python (cuda-bindings 13, the cuda13 extra) "
                              f"needs Python 3.11 or newer; {f.python or 'python3'} is {f.python_version}: pass "
                              "--remote-python with a Python 3.11+ interpreter that has `pip install "
                              "\".[device,cuda13]\"`")
        else:
            req.cuda_extra = extra
            req.extras.append(extra)
            req.needs.append(Need("cuda-python", extra, f"engines run with cuda-python for CUDA {major}"))
    if validating and not f.has_gpu:
        req.extras.append("onnxruntime")
        why = "no GPU: the shipped ONNX graphs are validated with ONNX Runtime"
        req.needs += [Need("onnx", "onnxruntime", why), Need("onnxruntime", "onnxruntime", why)]
        if uses_plugin:
            req.needs.append(Need("onnxruntime-extensions", "onnxruntime",
                                  "the plugin graphs' DvitTopKGather runs in ONNX Runtime through it"))
    return req


def check_python_packages(f: DeviceFacts, req: Requirements, *, host: str, remote_python: str | None) -> list[str]:
    """Errors for an interpreter given with --remote-python that lacks what `req` needs (one line each)."""
    if f.packages is None or not f.python:
        return []
    py = remote_python or f.python
    missing = [n for n in req.needs if not f.packages.get(n.package)]
    errors = []
    if missing:
        whys = "; ".join(dict.fromkeys(f"{n.package}: {n.why}" for n in missing))
        extras = ",".join(dict.fromkeys(["device", *(n.extra for n in missing)]))
        errors.append(f"{py} on {host} lacks {', '.join(n.package for n in missing)} ({whys}): install them there "
                      f"(`{py} -m pip install \".[{extras}]\"` from a dvit-edge checkout), or leave out "
                      "--remote-python (the deploy's own venv installs them)")
    have = f.packages.get("cuda-python")
    if req.cuda_extra and have and have != "?" and not have.startswith(f"{f.cuda_major}."):
        errors.append(f"{py} on {host} has cuda-python {have}, the device runs CUDA {f.cuda}: `{py} -m pip "
                      f"install \".[{req.cuda_extra}]\"` (cuda-python's major must be the device's CUDA major)")
    return errors


def check_reuse(f: DeviceFacts, shipped: dict[str, Any], *, host: str, flag: str) -> str | None:
    """None when the current release's engines were built from the graph set being shipped (`shipped`: sha256,
    kind, precision, batch_sizes), else the one-line error; None too where preflight could not read them (the
    device checks again when it reuses them)."""
    e = f.current_engines
    if not f.current_has_engines or e is None or e.get("source_sha256") == shipped["sha256"]:
        return None

    def described(kind: Any, precision: Any, batches: Any, sha: Any) -> str:
        prec = ",".join(map(str, precision)) if isinstance(precision, list) else str(precision or "?")
        sizes = ", ".join(map(str, batches)) if isinstance(batches, list) else "?"
        return f"{kind or '?'} graphs, {prec}, batch sizes {sizes}, manifest sha256 {str(sha)[:12]}"

    cur = (f.current_release or "current").rsplit("/", 1)[-1]
    return (f"{flag} reuses the engines of {host}'s current release ({cur}), which were built from another graph set "
            f"({described(e.get('source_kind'), e.get('precision'), e.get('batch_sizes'), e.get('source_sha256'))}) "
            f"than --graphs ({described(shipped['kind'], shipped['precision'], shipped['batch_sizes'], shipped['sha256'])}): "
            f"deploy without {flag} to build engines for these graphs, or pass the graph set those engines were "
            "built from")


def _mb(kb: int) -> str:
    return f"{kb / 1024:.0f} MB"


def jetpack_min(target: Target) -> str | None:
    """The first JetPack release of the target's oldest supported stack ('6.1' for orin-nano)."""
    oldest = min(target.stacks, key=lambda s: version_tuple(s.version))
    return oldest.jetpack[0] if oldest.jetpack else None


def check_disk(free_kb: int | None, need_bytes: int, where: str) -> str | None:
    """None when `need_bytes` fit in `free_kb` (df -Pk's Available column), else the one-line error."""
    if free_kb is None:
        return None
    if free_kb * 1024 >= need_bytes:
        return None
    return (f"device has {_mb(free_kb)} free in {where}, the bundle needs {need_bytes / 2**20:.0f} MB: free space "
            "or pass --remote-dir")


def check_fit(f: DeviceFacts, target: Target, *, host: str, need_bytes: int, remote_dir: str,
              needs_plugin: bool, building: bool = True, remote_python_given: bool = False,
              remote_python: str | None = None, validating: bool = False, timing: bool = False) -> Fit:
    """Compare the device with the target profile. Errors: the deploy cannot work; warnings: it can, with caveats.
    `validating`/`timing`: whether the deploy validates (--reference) and times (not --only-validate) on the
    device, which decides the Python packages it needs there (`requirements`)."""
    fit = Fit()
    remote_python_given = remote_python_given or remote_python is not None
    label = backend_label(target.backend)
    # ---- platform
    if target.jetson and not f.jetson:
        fit.errors.append(f"target {target.name} is a Jetson profile but {host} is not a Jetson (no "
                          f"/etc/nv_tegra_release; {f.uname or 'unknown system'}): deploy to the Jetson, or pick a "
                          "desktop/datacenter target (dvit targets)")
        return fit
    if not target.jetson and f.jetson:
        hint = ("TensorRT for RTX does not run on Jetson" if target.backend == "tensorrt-rtx"
                else f"target {target.name} is not a Jetson profile")
        fit.errors.append(f"{host} is a Jetson ({f.model or 'L4T R' + str(f.l4t)}): {hint}: pick a Jetson target "
                          "(orin-nano, orin-nx, agx-orin, thor)")
        return fit
    board = f"this {f.board or 'Jetson'}" if f.jetson else host
    # ---- the interpreter first: a missing --remote-python is not a missing TensorRT
    if remote_python_given and not f.python:
        fit.errors.append(f"{host} has no interpreter at --remote-python {remote_python or ''}".rstrip()
                          + ": pass the path of a Python 3.10+ on the device that has dvit-edge's device side, or "
                          "leave --remote-python out (the deploy makes its own venv)")
    # ---- backend version
    version = f.backend_version(target.backend)
    if remote_python_given and not f.python:
        pass  # nothing can be said about TensorRT in an interpreter that is not there
    elif version is None:
        if target.backend == "tensorrt-rtx":
            fit.errors.append(f"{host} has no TensorRT for RTX for {f.python or 'python3'} (import tensorrt_rtx "
                              "failed): "
                              "`pip install tensorrt-rtx-cu13` in the device's environment, or pass --remote-python "
                              "for an interpreter that has it")
        elif f.jetson:
            fit.errors.append(f"{board} ({f.model or 'L4T R' + str(f.l4t)}) has no TensorRT: `sudo apt-get install "
                              "nvidia-jetpack` (JetPack ships it)")
        else:
            fit.errors.append(f"{host} has no TensorRT: install it from NVIDIA's index (`pip install tensorrt`) in the "
                              "device's environment, or pass --remote-python for an interpreter that has it")
    else:
        if version_tuple(version) < version_tuple(target.min_version):
            jp = f"JetPack {f.jetpack} with " if f.jetpack else ""
            jpmin = jetpack_min(target)
            need = f"{label} {target.min_version} or newer" + (f" (JetPack {jpmin}+)" if jpmin else "")
            fix = f"flash JetPack {jpmin} or newer" if jpmin else f"install {label} {', '.join(target.versions)}"
            fit.errors.append(f"{board} runs {jp}{label} {_short(version)}: target {target.name} needs {need}: {fix}")
        elif problem := target.check_version(version):
            fit.errors.append(f"{host}: {problem.replace('this machine', 'the device')}")
        if (target.backend == "tensorrt" and f.tensorrt is None and f.libnvinfer is not None):
            fit.errors.append(f"{host} has {label} {f.libnvinfer} (libnvinfer) but no Python bindings for "
                              f"{f.python or 'python3'}: `sudo apt-get install python3-libnvinfer`, or pass "
                              "--remote-python")
        cudas = target.cuda_for(version)
        if f.cuda and cudas and not any(version_matches(f.cuda, c) for c in cudas):
            fit.warnings.append(f"{host} has CUDA {f.cuda}, target {target.name} pairs {label} {_short(version)} with "
                                f"CUDA {' / '.join(cudas)}: the plugin is built with the device's CUDA")
    # ---- GPU
    if f.compute_capability is not None and f.compute_capability not in target.compute_capabilities:
        cc = f.compute_capability
        fit.errors.append(f"{host}'s GPU is sm_{cc} (compute capability {cc // 10}.{cc % 10}, "
                          f"{f.compute_capability_source}), target {target.name} builds for "
                          f"{', '.join(f'sm_{c}' for c in target.compute_capabilities)}: pick a target whose "
                          "compute_capabilities include it (dvit targets)")
    if not f.has_gpu:
        if target.backend == "tensorrt" and building:
            fit.errors.append(f"{host} has no NVIDIA GPU (no nvidia-smi): TensorRT builds engines on the GPU it runs "
                              "on: deploy to a machine with the target's GPU")
        else:
            fit.notes.append(f"{host} has no NVIDIA GPU (no nvidia-smi): engines are built ahead of time but cannot "
                             "run; the shipped ONNX graphs are validated with ONNX Runtime instead")
    # ---- tools
    if not f.python:
        if not remote_python_given:
            fit.errors.append(f"{host} has no python3: install python3 (>= 3.10) or pass --remote-python PATH")
    elif f.python_version and version_tuple(f.python_version) < (3, 10):
        fit.errors.append(f"{host}'s {f.python} is Python {f.python_version}; dvit-edge needs 3.10 or newer: pass "
                          "--remote-python PATH")
    if not f.tools.get("rsync"):
        fit.errors.append(f"{host} has no rsync (the bundle is shipped with it): `sudo apt-get install rsync` on the "
                          "device")
    if not f.tools.get("sha256sum"):
        fit.errors.append(f"{host} has no sha256sum: install coreutils on the device")
    if f.tools and "setsid" in f.tools and not f.tools.get("setsid"):
        fit.errors.append(f"{host} has no setsid (each remote step runs in a process group of its own, so that an "
                          "interrupted deploy can stop it): `sudo apt-get install util-linux` on the device")
    # ---- the device's Python packages, for what this deploy runs there
    if f.python and (not f.python_version or version_tuple(f.python_version) >= (3, 10)):
        req = requirements(f, host=host, uses_plugin=needs_plugin, validating=validating, timing=timing)
        fit.errors += req.errors
        if remote_python_given:
            fit.errors += check_python_packages(f, req, host=host, remote_python=remote_python)
        else:
            if f.venv_ok is False:
                fit.errors.append(f"{f.python} on {host} cannot make a venv (no venv/ensurepip module): `sudo apt-get "
                                  f"install python3-venv` (JetPack 6: python3.10-venv), or pass --remote-python")
            fit.notes.append(f"the deploy's venv on {host} gets `pip install .[{req.spec}]`"
                             + (" (no GPU: ONNX Runtime validates the ONNX graphs)" if "onnxruntime" in req.extras
                                else ""))
    plugin_tools = {"nvcc (CUDA toolkit)": f.nvcc, "cmake": f.tools.get("cmake"), "TensorRT headers": f.trt_headers}
    missing = [k for k, v in plugin_tools.items() if not v]
    if missing and building:
        fixes = []
        if not f.nvcc:
            fixes.append("install the CUDA toolkit (JetPack: `sudo apt-get install nvidia-jetpack`)")
        if not f.tools.get("cmake"):
            fixes.append("`sudo apt-get install cmake`")
        if not f.trt_headers:
            fixes.append("install TensorRT's headers (libnvinfer-dev) or pass --tensorrt-root DIR (its include/)")
        msg = f"{host} lacks {', '.join(missing)} to build the plugin: {'; '.join(fixes)}"
        if needs_plugin:
            fit.errors.append(msg)
        else:
            fit.notes.append(msg + " (the graphs use no plugin: the plugin build is skipped)")
    # ---- disk and memory
    where = remote_dir
    if (problem := check_disk(f.disk_free_kb, need_bytes, where)) is not None:
        fit.errors.append(problem)
    if f.mem_available_kb is not None and building:
        need_kb = target.workspace_mib * 1024
        if f.mem_available_kb < need_kb:
            swap = f" and {_mb(f.swap_free_kb)} swap" if f.swap_free_kb else ""
            fit.warnings.append(f"{host} has {_mb(f.mem_available_kb)} memory available{swap}, below the target's "
                                f"{target.workspace_mib} MiB build workspace: the engine build may fail or swap; close "
                                "other programs (or add swap)")
    # ---- Jetson power and clocks: reported, never faked
    if f.jetson:
        for tool in ("nvpmodel", "jetson_clocks", "tegrastats"):
            if not f.tools.get(tool):
                fit.warnings.append(f"{tool} not found on {host}: "
                                    + {"nvpmodel": "power mode unknown",
                                       "jetson_clocks": "cannot tell whether clocks are locked",
                                       "tegrastats": "no power, temperature or clock figures"}[tool])
        if f.clocks.locked is False:
            fit.warnings.append(f"GPU clocks are not locked on {host} ({f.clocks.gpu_min_mhz:.0f}-"
                                f"{f.clocks.gpu_max_mhz:.0f} MHz, {f.clocks.source}): latency will vary; run "
                                "`sudo jetson_clocks` before deploying")
        elif f.clocks.locked is None and f.tools.get("jetson_clocks"):
            fit.warnings.append(f"could not read the GPU clock state on {host} ({f.clocks.note}): whether clocks are "
                                "locked is unknown")
    else:
        absent = [t for t in ("nvpmodel", "jetson_clocks", "tegrastats") if not f.tools.get(t)]
        if absent:
            fit.notes.append(f"{host} is not a Jetson: {', '.join(absent)} absent (no power mode, clock lock or "
                             "tegrastats power figures)")
    return fit


def _short(version: str) -> str:
    """'8.5.2.2' -> '8.5' for messages."""
    return ".".join(version.split(".")[:2])
