"""Drive a headless Chromium from the tests: load a page, capture what the console says, screenshot it.

Chromium is driven over the DevTools protocol through `--remote-debugging-pipe` (commands on fd 3, answers and
events on fd 4, each message JSON terminated by a NUL byte: Puppeteer's pipe transport), so only the standard
library is needed: no websocket client, no port to pick. What a load records:

* console messages (Runtime.consoleAPICalled), uncaught exceptions (Runtime.exceptionThrown) and browser log
  entries (Log.entryAdded: failed resource loads, security and rendering errors);
* every URL the page requested (Network.requestWillBeSent), so a test can prove the page works offline;
* the rendered DOM (after load), facts evaluated in the page, and a full-page PNG screenshot.

`find_chromium()` returns None where no Chromium is installed: tests skip with `SKIP_REASON`.
Debian: `apt-get install -y chromium` (the binary is /usr/bin/chromium).
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import struct
import subprocess
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
SKIP_REASON = "no Chromium to render the report in: install it with 'apt-get install -y chromium' (Debian)"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions", "--disable-default-apps",
    "--mute-audio", "--hide-scrollbars", "--remote-debugging-pipe",
)


def find_chromium() -> str | None:
    env = os.environ.get("DVIT_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


class BrowserError(RuntimeError):
    pass


@dataclass
class PageLoad:
    """What loading one page produced."""

    url: str
    console: list[dict[str, Any]] = field(default_factory=list)  # {"level", "text", "source"}
    requests: list[str] = field(default_factory=list)
    dom: str = ""
    facts: Any = None
    screenshot: bytes = b""
    size: tuple[int, int] = (0, 0)  # CSS pixels of the whole page

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Console errors, warnings included (a clean page has none of either)."""
        return [m for m in self.console if m["level"] in ("error", "warning", "assert")]


class Chromium:
    """One headless Chromium process; use as a context manager."""

    def __init__(self, binary: str | None = None, width: int = 1280, height: int = 2400, timeout: float = 30.0) -> None:
        binary = binary or find_chromium()
        if binary is None:
            raise BrowserError(SKIP_REASON)
        self.binary, self.width, self.height, self.timeout = binary, width, height, timeout
        self._next_id = 0
        self._buffer = b""
        self._events: list[dict[str, Any]] = []

    # ------------------------------------------------------------ process and transport
    def __enter__(self) -> Chromium:  # noqa: PYI034 (Python 3.10 has no typing.Self)
        self.profile = tempfile.mkdtemp(prefix="dvit-chromium-")
        cmd_r, self._cmd_w = os.pipe()
        self._out_r, out_w = os.pipe()

        # runs in the child: commands on fd 3, answers on fd 4 (close_fds=False keeps them: Python's own fds are
        # not inheritable, so nothing else leaks)
        def child_fds() -> None:
            a = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(out_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)
            os.close(a)
            os.close(b)

        argv = [self.binary, *FLAGS, f"--user-data-dir={self.profile}", f"--window-size={self.width},{self.height}",
                "about:blank"]
        self.stderr = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr,
                                         preexec_fn=child_fds, close_fds=False)  # noqa: PLW1509 (tests: one thread)
        finally:
            os.close(cmd_r)
            os.close(out_w)
        try:
            self._session = self._attach()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            try:
                self._send("Browser.close")
                proc.wait(timeout=5)
            except (BrowserError, OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait(timeout=5)
        for fd in (self._cmd_w, self._out_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def _stderr_tail(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-2000:]

    def _send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> int:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self._cmd_w, data):]
        except OSError as e:
            raise BrowserError(f"Chromium closed its DevTools pipe ({e}): {self._stderr_tail()}") from e
        return self._next_id

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"Chromium did not answer within {self.timeout:.0f} s: {self._stderr_tail()}")
            ready, _, _ = select.select([self._out_r], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._out_r, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium exited (code {self.proc.poll()}): {self._stderr_tail()}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        """Send a command and wait for its answer; events read meanwhile are queued."""
        want = self._send(method, params, session)
        deadline = time.monotonic() + self.timeout
        while True:
            msg = self._read_message(deadline)
            if msg.get("id") == want:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error'].get('message')}")
                return dict(msg.get("result") or {})
            if "method" in msg:
                self._events.append(msg)

    def wait_for(self, method: str, session: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            for i, ev in enumerate(self._events):
                if ev["method"] == method and (session is None or ev.get("sessionId") == session):
                    return self._events.pop(i)
            msg = self._read_message(deadline)
            if "method" in msg:
                self._events.append(msg)

    def _attach(self) -> str:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        return str(self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"])

    # ------------------------------------------------------------ one page
    def load(self, path: str | os.PathLike[str], facts_js: str | None = None, screenshot: bool = True) -> PageLoad:
        """Load a local file, wait for its load event, and record console, requests, DOM, facts, screenshot."""
        s = self._session
        url = Path(path).resolve().as_uri()
        self._events.clear()
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=s)
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False}, session=s)
        self.call("Page.navigate", {"url": url}, session=s)
        self.wait_for("Page.loadEventFired", session=s)
        # fonts and layout settle; any late console message arrives meanwhile
        self.call("Runtime.evaluate", {"expression": "document.fonts.ready.then(() => true)", "awaitPromise": True},
                  session=s)
        out = PageLoad(url)
        if facts_js is not None:
            r = self.call("Runtime.evaluate", {"expression": facts_js, "returnByValue": True}, session=s)
            if "exceptionDetails" in r:
                raise BrowserError(f"facts script failed: {r['exceptionDetails']}")
            out.facts = r["result"].get("value")
        dom = self.call("Runtime.evaluate", {"expression": "document.documentElement.outerHTML", "returnByValue": True},
                        session=s)
        out.dom = str(dom["result"].get("value") or "")
        if screenshot:
            metrics = self.call("Page.getLayoutMetrics", session=s)
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            w, h = int(size["width"]), int(size["height"])
            out.size = (w, h)
            shot = self.call("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True, "optimizeForSpeed": True,
                "clip": {"x": 0, "y": 0, "width": max(w, 1), "height": max(h, 1), "scale": 1}}, session=s)
            out.screenshot = base64.b64decode(shot["data"])
        self._collect(out)
        return out

    def _collect(self, out: PageLoad) -> None:
        # drain whatever is already in the pipe without blocking
        while True:
            ready, _, _ = select.select([self._out_r], [], [], 0.2)
            if not ready and b"\0" not in self._buffer:
                break
            msg = self._read_message(time.monotonic() + self.timeout)
            if "method" in msg:
                self._events.append(msg)
        for ev in self._events:
            m, p = ev["method"], ev.get("params") or {}
            if m == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                level = {"warning": "warning", "error": "error", "assert": "assert"}.get(p.get("type", ""), p.get("type", "log"))
                out.console.append({"level": level, "text": text, "source": "console-api"})
            elif m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails") or {}
                text = (d.get("exception") or {}).get("description") or d.get("text", "exception")
                out.console.append({"level": "error", "text": text, "source": "exception"})
            elif m == "Log.entryAdded":
                e = p.get("entry") or {}
                out.console.append({"level": e.get("level", "info"), "text": e.get("text", ""), "source": e.get("source", "")})
            elif m == "Network.requestWillBeSent":
                out.requests.append(str((p.get("request") or {}).get("url", "")))
        self._events.clear()


# ---------------------------------------------------------------- PNG decoding (for screenshot checks)
def decode_png(data: bytes) -> np.ndarray:
    """uint8 [height, width, channels] of a non-interlaced 8-bit PNG (zlib and numpy only).

    Rows filtered None, Sub or Up (what Chromium's fast encoder writes) decode vectorised; Average and Paeth
    rows pixel by pixel."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, header = 8, [], None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError("PNG without IHDR")
    w, h, depth, ctype, _, _, interlace = header
    if depth != 8 or interlace or ctype not in (0, 2, 4, 6):
        raise ValueError(f"unsupported PNG (depth {depth}, colour type {ctype}, interlace {interlace})")
    ch = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(h, w * ch + 1)
    out = np.zeros((h, w * ch), np.uint8)
    prev = np.zeros(w * ch, np.int64)
    for y in range(h):
        f, line = int(raw[y, 0]), raw[y, 1:].astype(np.int64)
        if f == 1:
            line = np.cumsum(line.reshape(w, ch), axis=0).reshape(-1) & 255
        elif f == 2:
            line = (line + prev) & 255
        elif f in (3, 4):
            line = line.copy()
            for x in range(w * ch):
                a = int(line[x - ch]) if x >= ch else 0
                b = int(prev[x])
                if f == 3:
                    line[x] = (line[x] + (a + b) // 2) & 255
                else:
                    c = int(prev[x - ch]) if x >= ch else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        elif f != 0:
            raise ValueError(f"bad PNG filter {f} in row {y}")
        out[y] = line
        prev = line
    return out.reshape(h, w, ch)
