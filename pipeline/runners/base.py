"""The runner interface, and batching over it."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np

from ..errors import DvitError

R = TypeVar("R", bound="Runner")


class Runner(ABC):
    """Maps named input arrays to named output arrays. A context manager, as Polygraphy's runners are:
    `with Runner(...) as r:` closes what it holds on the way out, whatever happens inside.

    `batch` is the static batch size the runner takes (exported graphs and engines have one), or None when it
    takes any number of rows (PyTorch, a recorded reference).
    """

    name: str = "runner"
    batch: int | None = None

    @property
    @abstractmethod
    def input_names(self) -> list[str]: ...

    @property
    @abstractmethod
    def output_names(self) -> list[str]: ...

    @abstractmethod
    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise DvitError(f"{self.name} needs input(s) {missing} but was given {sorted(feeds)}: report this as a bug")
        return self._infer({n: feeds[n] for n in self.input_names})

    def require_outputs(self, needed: Sequence[str], fix: str) -> None:
        """One line naming the outputs a comparison needs that this runner does not produce, and the fix."""
        missing = [n for n in needed if n not in self.output_names]
        if missing:
            raise DvitError(f"{self.name} does not produce {', '.join(missing)}, which the comparison needs: {fix}")

    def close(self) -> None:
        """Release what the runner holds (sessions, device buffers); closing twice is harmless."""

    def __enter__(self: R) -> R:  # noqa: PYI019 (typing.Self needs Python 3.11; JetPack 6 has 3.10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_batched(runner: Runner, feeds: Mapping[str, np.ndarray], batch: int | None = None) -> dict[str, np.ndarray]:
    """Run over arrays of any length in batches of the runner's static batch size (or `batch`), the last batch
    filled by repeating the last row; returns the outputs for the real rows only."""
    n = next(iter(feeds.values())).shape[0]
    size = runner.batch or batch or n
    parts: dict[str, list[np.ndarray]] = {}
    for s in range(0, n, size):
        chunk = {k: v[s : s + size] for k, v in feeds.items()}
        real = next(iter(chunk.values())).shape[0]
        if runner.batch is not None and real < size:
            chunk = {k: np.concatenate([v, np.repeat(v[-1:], size - real, axis=0)]) for k, v in chunk.items()}
        for k, v in runner.infer(chunk).items():
            parts.setdefault(k, []).append(v[:real])
    return {k: np.concatenate(v) for k, v in parts.items()}
