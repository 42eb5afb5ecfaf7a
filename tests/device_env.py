"""The device side of the deploy tests: Python environments built the way README.md tells a device user to build
them ("What a device needs"), with nothing of the workstation's (no torch, timm or ModelOpt):

    python3 -m venv DIR
    DIR/bin/python -m pip install ".[device,onnxruntime]"      # a device without a GPU, as this machine is

`device_venv(root)` returns that venv's python; it is built once per `root` and extras and reused while
pyproject.toml's dependencies stay the same (a stamp file), so a test session pays for it once (pip's own cache
keeps the downloads between sessions). The venv is made from a base interpreter without torch
(DVIT_TEST_DEVICE_PYTHON, else the one this venv was made from), without --system-site-packages, and checked: no
torch, timm or ModelOpt, and every package the extras name importable.

TensorRT: a Jetson's venv sees JetPack's TensorRT through --system-site-packages. This machine has no JetPack; its
TensorRT is TensorRT-RTX, the pinned `tensorrt-rtx` extra, installed once into a folder of its own
(`tensorrt_standin(root)`: the workstation's own install of exactly that pin, linked, else `pip install --target`)
that each device venv sees through a .pth file, as a JetPack venv sees the system's TensorRT. `device_session_env`
gives a device session whose `python3` sees it the same way (PYTHONUSERBASE): what the deploy's own venv, made with
`python3 -m venv --system-site-packages`, finds on a Jetson.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[1]
BASE_PYTHON = os.environ.get("DVIT_TEST_DEVICE_PYTHON") or getattr(sys, "_base_executable", sys.executable)
WORKSTATION_ONLY = ("torch", "timm", "modelopt", "torchvision")
# import names of what each extra installs (checked in the venv after pip)
IMPORTS = {"device": ("numpy", "tqdm", "rich"), "onnxruntime": ("onnx", "onnxruntime", "onnxruntime_extensions"),
           "cuda12": ("cuda.bindings",), "cuda13": ("cuda.bindings",)}
STANDIN_PTH = "dvit-test-tensorrt-standin.pth"
SOURCE_FILES = ("pyproject.toml", "README.md")


class DeviceEnvError(RuntimeError):
    pass


def _run(argv: list[str], what: str, timeout: float = 1800, **kw: object) -> str:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kw)  # type: ignore
    if r.returncode != 0:
        raise DeviceEnvError(f"{what} failed (exit {r.returncode}): {' '.join(argv)}\n{r.stdout[-2000:]}\n"
                             f"{r.stderr[-4000:]}")
    return r.stdout


def _extras(source: Path) -> dict[str, list[str]]:
    with open(source / "pyproject.toml", "rb") as f:
        return dict(tomllib.load(f)["project"]["optional-dependencies"])


def _pyproject_key(source: Path, extras: str) -> str:
    with open(source / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    wanted = {"dependencies": project.get("dependencies"), "extras": extras,
              "optional": {k: v for k, v in project.get("optional-dependencies", {}).items()
                           if k in extras.split(",") or k == "tensorrt-rtx"},
              "base": BASE_PYTHON}
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()


def _site_packages(python: Path) -> Path:
    out = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], "locating site-packages")
    return Path(out.strip())


def _base_minor() -> str:
    return _run([BASE_PYTHON, "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
                "asking the base interpreter its version").strip()


def tensorrt_standin(root: Path, source: Path = REPO) -> Path:
    """A folder holding exactly the `tensorrt-rtx` extra's TensorRT-RTX (this machine's stand-in for JetPack's
    TensorRT), with the unversioned libtensorrt_rtx.so that `make link-tensorrt-rtx` adds."""
    reqs = _extras(source).get("tensorrt-rtx") or []
    d = Path(root) / "tensorrt-standin"
    stamp = d / ".dvit-test-stamp"
    key = json.dumps([reqs, _base_minor()])
    if stamp.is_file() and stamp.read_text() == key:
        return d
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    pinned = next((r.split(";")[0].strip() for r in reqs if r.startswith("tensorrt-rtx")), None)
    linked = False
    if pinned and "==" in pinned and _base_minor() == f"{sys.version_info[0]}.{sys.version_info[1]}":
        name, version = pinned.split("==")
        from importlib.metadata import PackageNotFoundError, distribution

        try:
            dist = distribution(name)
        except PackageNotFoundError:
            dist = None
        if dist is not None and dist.version == version:  # the workstation has exactly that pin: link it
            site = Path(str(dist.locate_file("")))
            for entry in site.iterdir():
                if entry.name.startswith(("tensorrt_rtx", "tensorrt-rtx")):
                    (d / entry.name).symlink_to(entry)
            linked = True
    if not linked:
        _run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(d), *reqs],
             "installing the TensorRT stand-in")
    libs = d / "tensorrt_rtx_libs"
    if (libs / "libtensorrt_rtx.so.1").exists() and not (libs / "libtensorrt_rtx.so").exists():
        (libs / "libtensorrt_rtx.so").symlink_to("libtensorrt_rtx.so.1")
    stamp.write_text(key)
    return d


def device_venv(root: Path, extras: str = "device,onnxruntime", source: Path = REPO) -> Path:
    """The python of a venv built as README.md tells a device user (`python3 -m venv`, `pip install
    ".[EXTRAS]"`), seeing the TensorRT stand-in; built once per (root, extras), rebuilt when pyproject changes."""
    root = Path(root)
    venv = root / ("venv-" + extras.replace(",", "-"))
    python = venv / "bin" / "python"
    stamp = venv / ".dvit-test-stamp"
    key = _pyproject_key(source, extras)
    if stamp.is_file() and stamp.read_text() == key and python.exists():
        return python
    shutil.rmtree(venv, ignore_errors=True)
    # pip builds the project in its folder: a copy of what it reads, never the checkout
    src = root / f"src-{extras.replace(',', '-')}"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for name in SOURCE_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, src / name)
    shutil.copytree(source / "pipeline", src / "pipeline", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _run([BASE_PYTHON, "-m", "venv", str(venv)], "python3 -m venv")
    _run([str(python), "-m", "pip", "install", "--quiet", f"{src}[{extras}]"], f'pip install ".[{extras}]"')
    (_site_packages(python) / STANDIN_PTH).write_text(f"{tensorrt_standin(root, source)}\n")
    check = ("import importlib.util as u, json, sys\n"
             "names = json.loads(sys.argv[1])\n"
             "print(json.dumps({n: u.find_spec(n) is not None for n in names}))\n")
    wanted = [m for e in extras.split(",") for m in IMPORTS.get(e, ())]
    found = json.loads(_run([str(python), "-c", check, json.dumps([*WORKSTATION_ONLY, "tensorrt_rtx", *wanted])],
                            "checking the device venv"))
    leaked = [n for n in WORKSTATION_ONLY if found[n]]
    absent = [n for n in ["tensorrt_rtx", *wanted] if not found[n]]
    if leaked or absent:
        raise DeviceEnvError(f"the device venv {venv} has {leaked} (workstation only) / lacks {absent}")
    stamp.write_text(key)
    return python


def device_session_env(root: Path, source: Path = REPO) -> dict[str, str]:
    """The environment of a device session (sshd_fixture.start_sshd(env=...)) whose `python3` is the base
    interpreter, seeing the TensorRT stand-in in its user site: as JetPack's python3 sees its TensorRT."""
    root = Path(root)
    bindir = root / "system-bin"
    bindir.mkdir(parents=True, exist_ok=True)
    link = bindir / "python3"
    if not link.is_symlink():
        link.symlink_to(BASE_PYTHON)
    userbase = root / "system-userbase"
    site = userbase / "lib" / f"python{_base_minor()}" / "site-packages"
    site.mkdir(parents=True, exist_ok=True)
    (site / STANDIN_PTH).write_text(f"{tensorrt_standin(root, source)}\n")
    return {"PATH": f"{bindir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONUSERBASE": str(userbase)}


def has_module(python: Path, name: str, env: dict[str, str] | None = None) -> bool:
    """Whether `python` finds module `name` (with `env` added to this environment: e.g. a device session's)."""
    out = _run([str(python), "-c", f"import importlib.util as u; print(u.find_spec({name!r}) is not None)"],
               f"looking for {name}", env={**os.environ, **(env or {})})
    return out.strip() == "True"


__all__ = ["BASE_PYTHON", "DeviceEnvError", "device_session_env", "device_venv", "has_module", "tensorrt_standin"]
