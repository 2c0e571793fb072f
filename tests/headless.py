"""A small driver for the system's headless chromium over the DevTools protocol (stdlib only).

Chromium is started with --remote-debugging-pipe: it reads NUL-terminated JSON commands on its
fd 3 and writes replies and events on its fd 4, so no websocket library is needed.

    with Browser() as b:
        page = b.open("file:///tmp/report.html")   # waits for the load event
        page.errors                                 # console errors, exceptions, failed loads, CSP
        page.eval("document.title")
        page.screenshot("/tmp/shot.png")

Used by tests/unit/test_report_browser.py and by 'make report-shot'.
"""
import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium():
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(RuntimeError):
    pass


class Browser(object):

    def __init__(self, binary=None, timeout=60, width=1200, height=900):
        self.binary = binary or find_chromium()
        if not self.binary:
            raise BrowserError("no chromium on PATH (apt-get install chromium)")
        self.timeout = timeout
        self.size = (width, height)
        self.proc = None
        self.next_id = 0
        self.buffer = b""
        self.events = []

    def __enter__(self):
        self.profile = tempfile.mkdtemp(prefix="kprobes-fleet-chromium-")
        to_child_r, self.to_child = os.pipe()
        self.from_child, from_child_w = os.pipe()
        # Move the child's ends out of the way of fds 3 and 4 before dup2() puts them there.
        high_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
        high_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
        os.close(to_child_r)
        os.close(from_child_w)

        def pipes():
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        argv = [self.binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--mute-audio", "--hide-scrollbars",
                "--user-data-dir=%s" % self.profile, "--window-size=%d,%d" % self.size,
                "--remote-debugging-pipe", "about:blank"]
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.stderr, pass_fds=(3, 4), preexec_fn=pipes)
        os.close(high_r)
        os.close(high_w)
        return self

    def __exit__(self, *exc):
        try:
            if self.proc and self.proc.poll() is None:
                try:
                    self.send("Browser.close", wait=False)
                    self.proc.wait(10)
                except (BrowserError, OSError, subprocess.TimeoutExpired):
                    self.proc.kill()
                    self.proc.wait(10)
        finally:
            for fd in (self.to_child, self.from_child):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.stderr.close()
            shutil.rmtree(self.profile, ignore_errors=True)

    def _read(self, deadline):
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("chromium did not answer within %d s" % self.timeout)
            ready, dummy, dummy2 = select.select([self.from_child], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.from_child, 1 << 20)
            if not chunk:
                self.stderr.seek(0)
                raise BrowserError("chromium exited: %s" % self.stderr.read()[-2000:].decode("utf-8", "replace"))
            self.buffer += chunk
        msg, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(msg.decode("utf-8"))

    def send(self, method, params=None, session=None, wait=True):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode("utf-8") + b"\0"
        while data:
            data = data[os.write(self.to_child, data):]
        if not wait:
            return None
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise BrowserError("%s: %s" % (method, reply["error"]))
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method, session, deadline):
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("method") == method and ev.get("sessionId") == session:
                    return self.events.pop(i)
            self.events.append(self._read(deadline))

    def open(self, url):
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(domain + ".enable", session=session)
        started = time.monotonic()
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait_event("Page.loadEventFired", session, time.monotonic() + self.timeout)
        page = Page(self, session, time.monotonic() - started)
        page.eval("1")  # let events queued before the load event arrive
        return page


class Page(object):

    def __init__(self, browser, session, load_seconds):
        self.browser = browser
        self.session = session
        self.load_seconds = load_seconds

    @property
    def errors(self):
        """Console errors, uncaught exceptions, failed loads and CSP violations, as text."""
        out = []
        for ev in self.browser.events:
            if ev.get("sessionId") != self.session:
                continue
            method, params = ev.get("method"), ev.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                out.append("exception: %s" % (details.get("exception", {}).get("description") or details.get("text")))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append("console.%s: %s" % (params["type"], " ".join(
                    str(a.get("value", a.get("description", ""))) for a in params.get("args", []))))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                out.append("%s: %s %s" % (entry.get("source"), entry.get("text"), entry.get("url", "")))
            elif method == "Network.loadingFailed":
                out.append("load failed: %s %s" % (params.get("errorText"), params.get("blockedReason", "")))
        return out

    @property
    def requests(self):
        return [ev["params"]["request"]["url"] for ev in self.browser.events
                if ev.get("sessionId") == self.session and ev.get("method") == "Network.requestWillBeSent"]

    def eval(self, expression):
        res = self.browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                     "awaitPromise": True}, session=self.session)
        if "exceptionDetails" in res:
            raise BrowserError("%s: %s" % (expression, res["exceptionDetails"].get("text")))
        return res.get("result", {}).get("value")

    def screenshot(self, path, full_page=True):
        params = {"format": "png"}
        if full_page:
            width, height = self.eval("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": width, "height": min(height, 16000), "scale": 1})
        data = self.browser.send("Page.captureScreenshot", params, session=self.session)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path
