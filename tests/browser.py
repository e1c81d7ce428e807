"""A real headless Chromium driven over the DevTools protocol on a pipe (no driver, no network):
load a page, collect console errors and uncaught exceptions, read image sizes, screenshot."""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Chrome:
    def __init__(self, binary: str):
        self._to_r, self._to_w = os.pipe()  # we write commands, Chromium reads them on fd 3
        self._from_r, self._from_w = os.pipe()  # Chromium writes replies and events on fd 4
        self._profile = tempfile.mkdtemp(prefix="nasctl-chrome-")
        to_r, from_w = self._to_r, self._from_w

        def fds():  # in the child: our pipe ends become fds 3 and 4, inheritable across exec
            a, b = os.dup(to_r), os.dup(from_w)  # out of the way first: either may be 3 or 4 already
            os.dup2(a, 3)
            os.dup2(b, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--remote-debugging-pipe", f"--user-data-dir={self._profile}", "--window-size=1100,900", "about:blank"],
            close_fds=False, preexec_fn=fds,  # closing would run after fds() and take 3 and 4
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_r)
        os.close(from_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []

    def _read(self, timeout: float) -> dict | None:
        end = time.monotonic() + timeout
        while b"\0" not in self._buf:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self._from_r], [], [], left)[0]:
                return None
            chunk = os.read(self._from_r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            m = self._read(end - time.monotonic())
            if m is None:
                break
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)
        raise TimeoutError(f"no reply to {method} in {timeout} s")

    def wait_event(self, method: str, timeout: float = 30) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for e in self.events:
                if e.get("method") == method:
                    return e
            m = self._read(end - time.monotonic())
            if m is not None:
                self.events.append(m)
        raise TimeoutError(f"no {method} in {timeout} s")

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._to_w)
        os.close(self._from_r)
        shutil.rmtree(self._profile, ignore_errors=True)


def load_page(url: str, screenshot: str) -> dict:
    """Open `url`, wait for load; return console errors, exceptions, image sizes; save a PNG."""
    c = Chrome(chromium())
    try:
        target = c.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = c.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            c.send(f"{domain}.enable", session=s)
        c.send("Page.navigate", {"url": url}, session=s)
        c.wait_event("Page.loadEventFired", 60)
        images = c.send("Runtime.evaluate", {"expression": "JSON.stringify(Array.from(document.images).map("
                                             "i => [i.complete, i.naturalWidth, i.naturalHeight]))", "returnByValue": True},
                        session=s)["result"]["value"]
        title = c.send("Runtime.evaluate", {"expression": "document.title", "returnByValue": True}, session=s)["result"]["value"]
        height = c.send("Runtime.evaluate", {"expression": "document.body.scrollHeight", "returnByValue": True}, session=s)["result"]["value"]
        shot = c.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=s)["data"]
        with open(screenshot, "wb") as f:
            f.write(base64.b64decode(shot))
        errors = [e for e in c.events if e.get("method") == "Runtime.exceptionThrown"
                  or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
                  or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
        return {"title": title, "images": json.loads(images), "errors": errors, "height": height}
    finally:
        c.close()
