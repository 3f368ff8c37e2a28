r"""Screenshot a web page (the MLflow UI) in headless Chromium, with a few steps first.

Stdlib only: starts Chromium with a DevTools port, talks to it over a websocket, and starts
nothing else. The steps run in the order given, after the page has loaded:

    --wait-for TEXT   wait until TEXT is on the page (fails after --timeout seconds)
    --wait-js EXPR    wait until a JavaScript expression is true (same timeout)
    --click TEXT      click the visible element whose text (or aria-label, placeholder, title)
                      is TEXT, else whose text contains TEXT: a real mouse click at its centre
    --type TEXT       type TEXT into the element that has the focus (after a --click on it)
    --js EXPR         evaluate a JavaScript expression (awaited if it returns a promise)
    --sleep SECONDS   wait

    python tools/screenshot_mlflow.py URL OUT.png [--size 1400x900] [steps...]

Retake docs/mlflow_trials_val_accuracy.png and docs/mlflow_completions_view_as_table.png
(MLflow 3.17; a fresh store, so the experiment is 1; the sweep is seeded: trial #0 is the same
run every time; a minute or two on 2 cores; run it from the repository's root):

    T=$(mktemp -d)
    mlflow server --host 127.0.0.1 --port 5718 --workers 1 \
      --backend-store-uri sqlite:///$T/mlflow.db --artifacts-destination $T/mlartifacts &
    until curl -sf http://127.0.0.1:5718/health >/dev/null; do sleep 1; done
    python -m grpo.run -m +sweep=rce_grpo hydra.sweeper.n_trials=3 \
      hydra.sweeper.storage=sqlite:///$T/optuna.db hydra.sweep.dir=$T/multirun \
      logger.tracking_uri=http://127.0.0.1:5718 \
      schedule.rce_steps=200 trainer.max_steps=10 eval.eval_every=30
    E=http://127.0.0.1:5718/#/experiments/1
    # (a) the trials' val/accuracy: chart view, the assistant panel closed, the sweep's parent
    #     hidden from the charts (it has no val/accuracy) and expanded, the chart full screen
    python tools/screenshot_mlflow.py "$E/runs?workflowType=machine_learning&compareRunsMode=CHART" \
      docs/mlflow_trials_val_accuracy.png --wait-for rce_grpo --click Close \
      --js "document.querySelectorAll('.ag-row').forEach(row => {
              const b = row.querySelector('button[data-component-id*=runnamecellrenderer]');
              if (b) { row.querySelector('.is-visibility-toggle-checkbox').click(); b.click(); } })" \
      --wait-for "#0 kl_beta" --click "Search metric charts" --type val/accuracy --sleep 2 \
      --js "document.querySelector('button[data-component-id=fullscreen_button_chartcard]').click()" \
      --wait-js "document.querySelector('[role=dialog]')" --sleep 2
    # (b) a completions table of trial #0 (its last GRPO step): "View as table" is on by default
    RUN=$(MLFLOW_TRACKING_URI=http://127.0.0.1:5718 python -c "import mlflow; print(mlflow.search_runs(
      ['1'], \"attributes.run_name LIKE '#0 %'\", output_format='list')[0].info.run_id)")
    python tools/screenshot_mlflow.py \
      "$E/runs/$RUN/artifacts/completions/step_000210.json?workflowType=machine_learning" \
      docs/mlflow_completions_view_as_table.png --size 1400x640 --wait-for step_000210.json \
      --click Close --wait-js "[...document.querySelectorAll('label')].some(l =>
        l.innerText.trim() === 'View as table' && l.querySelector('input').checked)" \
      --wait-for completion --sleep 2
    kill %1
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--mute-audio",
]


# ----------------------------------------------------------------------------- websocket
class WebSocket:
    """The client half of RFC 6455, enough for the DevTools protocol (text frames)."""

    def __init__(self, url: str):
        assert url.startswith("ws://"), url
        hostport, path = url[len("ws://") :].split("/", 1)
        host, port = hostport.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("DevTools closed the websocket handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))

    def send(self, text: str) -> None:
        data = text.encode()
        n = len(data)
        if n < 126:
            header = struct.pack(">BB", 0x81, 0x80 | n)
        elif n < 1 << 16:
            header = struct.pack(">BBH", 0x81, 0x80 | 126, n)
        else:
            header = struct.pack(">BBQ", 0x81, 0x80 | 127, n)
        mask = os.urandom(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("DevTools closed the websocket")
            out += chunk
        return out

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._exact(8))[0]
            payload = self._exact(n)
            if b0 & 0x0F in (0x1, 0x2, 0x0):  # text, binary, continuation (control frames skipped)
                message += payload
                if b0 & 0x80:
                    return message.decode()


# The innermost visible element whose text, aria-label, placeholder or title is `want` (else whose
# text contains it), not the page's body; scrolled into view. Returns its centre, or null.
FIND_CLICKABLE = """want => {
  const seen = el => { const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && getComputedStyle(el).visibility !== 'hidden'; };
  const all = [...document.querySelectorAll('body *')].filter(seen);
  const norm = el => (el.innerText || el.textContent || '').trim();
  const label = el => ['aria-label', 'placeholder', 'title'].some(a => el.getAttribute(a) === want);
  let hits = all.filter(el => norm(el) === want || label(el));
  if (!hits.length) hits = all.filter(el => norm(el).includes(want));
  if (!hits.length) return null;
  const el = hits.find(h => !hits.some(o => o !== h && h.contains(o)));  // the innermost, first on the page
  el.scrollIntoView({block: 'center'});
  const r = el.getBoundingClientRect();
  return [r.left + r.width / 2, r.top + r.height / 2];
}"""


# ----------------------------------------------------------------------------- the page
class Page:
    def __init__(self, ws: WebSocket):
        self.ws, self.next_id = ws, 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:  # events (no id) are not needed here
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expression: str):
        res = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"JS error in {expression[:80]!r}: {res['exceptionDetails'].get('text')}")
        return res.get("result", {}).get("value")

    def wait(self, expression: str, timeout: float, what: str):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.js(f"(() => {{ try {{ return Boolean({expression}); }} catch (e) {{ return false; }} }})()"):
                return
            time.sleep(0.25)
        raise TimeoutError(f"waited {timeout:.0f}s for {what}")

    def wait_for_text(self, text: str, timeout: float):
        self.wait(f"document.body && document.body.innerText.includes({json.dumps(text)})", timeout, repr(text))

    def click_text(self, text: str, timeout: float):
        # A real mouse click at the element's centre, once it is there and has stopped moving.
        find = f"({FIND_CLICKABLE})({json.dumps(text)})"
        end, xy, last = time.monotonic() + timeout, None, None
        while xy is None or xy != last:  # found, and in the same place twice: panels slide, rows load
            if time.monotonic() > end:
                raise TimeoutError(
                    f"nothing to click with the text {text!r}" if xy is None else f"{text!r} kept moving"
                )
            time.sleep(0.3)
            last, xy = xy, self.js(find)
        x, y = xy
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)


# ----------------------------------------------------------------------------- chromium
def start_chromium(width: int, height: int, profile: str) -> tuple[subprocess.Popen, WebSocket]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not binary:
        sys.exit("error: no chromium on PATH (Debian: apt-get install chromium)")
    proc = subprocess.Popen(
        [
            binary,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            f"--window-size={width},{height}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    port_file = os.path.join(profile, "DevToolsActivePort")  # Chromium writes the port it chose
    for _ in range(120):
        text = Path(port_file).read_text() if os.path.exists(port_file) else ""
        if "\n" in text:  # both lines written: the port, then the browser's path
            port = int(text.split()[0])
            break
        if proc.poll() is not None:
            sys.exit(f"error: chromium exited with {proc.returncode} before it opened its DevTools port")
        time.sleep(0.25)
    else:
        raise TimeoutError("chromium did not open a DevTools port in 30 s")
    for _ in range(40):
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        pages = [t for t in targets if t.get("type") == "page"]
        if pages:
            return proc, WebSocket(pages[0]["webSocketDebuggerUrl"])
        time.sleep(0.25)
    raise TimeoutError("chromium opened no page")


def stop_chromium(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the browser and its helpers only
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def screenshot(url: str, out: str, width: int, height: int, steps: list[tuple[str, str]], timeout: float) -> None:
    profile = tempfile.mkdtemp(prefix="screenshot-chromium-")
    proc = None
    try:
        proc, ws = start_chromium(width, height, profile)
        page = Page(ws)
        page.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        page.call("Page.navigate", url=url)
        page.wait("document.readyState === 'complete'", timeout, "the page to load")
        for kind, arg in steps:
            print(f"  {kind} {arg}", file=sys.stderr)
            if kind == "wait-for":
                page.wait_for_text(arg, timeout)
            elif kind == "wait-js":
                page.wait(arg, timeout, arg)
            elif kind == "click":
                page.click_text(arg, timeout)
            elif kind == "type":
                page.call("Input.insertText", text=arg)
            elif kind == "js":
                page.js(arg)
            elif kind == "sleep":
                time.sleep(float(arg))
        time.sleep(1.0)  # let charts finish their transitions
        data = page.call("Page.captureScreenshot", format="png")["data"]
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "wb") as f:
            f.write(base64.b64decode(data))
        print(f"{out}: {width}x{height}, {os.path.getsize(out) // 1024} KB", file=sys.stderr)
    finally:
        if proc is not None:
            stop_chromium(proc)
        shutil.rmtree(profile, ignore_errors=True)


class Step(argparse.Action):
    """Keeps the steps (--wait-for, --wait-js, --click, --type, --js, --sleep) in the order given."""

    def __call__(self, parser, namespace, value, option_string=None):
        namespace.steps = [*(namespace.steps or []), (option_string.lstrip("-"), value)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url")
    p.add_argument("out", help="the PNG to write")
    p.add_argument("--size", default="1400x900", help="window size WIDTHxHEIGHT (default 1400x900)")
    p.add_argument("--timeout", type=float, default=30, help="seconds to wait for the page, a text, a click")
    for flag, metavar, help in [
        ("--wait-for", "TEXT", "wait until TEXT is on the page"),
        ("--wait-js", "EXPR", "wait until the JavaScript expression EXPR is true"),
        ("--click", "TEXT", "click the element whose text, aria-label, placeholder or title is TEXT"),
        ("--type", "TEXT", "type TEXT into the focused element"),
        ("--js", "EXPR", "evaluate the JavaScript expression EXPR"),
        ("--sleep", "SECONDS", "wait SECONDS"),
    ]:
        p.add_argument(flag, action=Step, dest="steps", metavar=metavar, help=help + " (a step: steps run in order)")
    args = p.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    screenshot(args.url, args.out, width, height, args.steps or [], args.timeout)


if __name__ == "__main__":
    main()
