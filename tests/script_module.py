"""Scripts under benchmarks/ and tools/, loaded as modules: they are files, not package modules. Each is registered
in sys.modules under its file name (its dataclasses look their module up) and loaded once, so the test files that use
one share it; its folder goes on sys.path because the benchmarks import one another."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_script(relpath: str) -> ModuleType:
    """The script at `relpath` (from the repository root) as a module, e.g. load_script("tools/check_trt_api.py")."""
    path = (REPO / relpath).resolve()
    loaded = sys.modules.get(path.stem)
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() == path:
        return loaded
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None, f"{path} is not a Python file"
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module
