"""A real OpenAI-compatible HTTP server for tests: standard library, 127.0.0.1, a free port.

    with OpenAIServer() as server:            # started; stopped (port closed) on exit
        cfg.base_url = server.url             # "http://127.0.0.1:PORT/v1"
        server.script(["429", "500", "sleep:3", "ok"])   # the next chat requests' fates, in order

Endpoints: POST /v1/chat/completions and GET /v1/models, with OpenAI's JSON (id, object,
created, model, choices[0].message.content, finish_reason "stop", usage with prompt /
completion / total tokens: the whitespace-separated words of all messages / of the answer).

The deterministic executor answers the last user message:
- a judge prompt (it holds a line "Reference answer: R" and, after it, a line "Response:" with the
  graded text below it, the text ending at a line starting "Rate the response" or at the end):
  "Score: 10" when the response, stripped, equals R; "Score: 5" when R occurs in it; otherwise
  "Score: N" with N = (length of the stripped response) % 4, so 0..3;
- otherwise the value of the LAST arithmetic expression in it (numbers joined by + - * / ** and
  parentheses: "what is 12 + 7 * 3?" -> "33"; integral results without ".0");
- otherwise `answer` (default "42").

Fault injection: `script(actions, then="ok")` queues one action per chat request, `then` once the
queue is empty: "ok"; an HTTP status ("429", "500", "503", ...: an OpenAI-style error body);
"sleep:S" (wait S seconds, then answer ok: past the client's timeout it times out); "reset"
(close the connection without an answer). `delay` (seconds) slows every answer, to observe
concurrency. Recorded: `requests` (chat requests received), `bodies` (their JSON),
`max_in_flight`, `authorizations` (the Authorization headers received).

From a shell, to try the AFlow tasks on a CPU without a real executor (Ctrl-C stops it):

    python -m tests.helpers.openai_server --port 8001     # serves http://127.0.0.1:8001/v1
"""

from __future__ import annotations

import ast
import json
import operator
import re
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

JUDGE = re.compile(
    r"Reference answer:[ \t]*(?P<ref>[^\n]*)\n.*?^Response:[ \t]*\n(?P<resp>.*?)(?:^Rate the response|\Z)", re.S | re.M
)
EXPRESSION = re.compile(r"[\d(][\d\s.+\-*/()]*[\d)]")
OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _value(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in OPS:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ValueError("exponent too large")
        return OPS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in OPS:
        return OPS[type(node.op)](_value(node.operand))
    raise ValueError("not arithmetic")


def arithmetic(text: str) -> str | None:
    """The value of the last arithmetic expression (with at least one operator) in `text`."""
    for candidate in reversed(EXPRESSION.findall(text)):
        if not re.search(r"\d\s*[-+*/]", candidate):
            continue
        try:
            value = _value(ast.parse(candidate.strip(), mode="eval").body)
        except (SyntaxError, ValueError, ZeroDivisionError, OverflowError):
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return str(value)
    return None


def judge(text: str) -> str | None:
    m = JUDGE.search(text)
    if not m:
        return None
    ref, resp = m["ref"].strip(), m["resp"].strip()
    score = 10 if resp == ref else 5 if ref and ref in resp else len(resp) % 4
    return f"Score: {score}"


class OpenAIServer:
    def __init__(self, *, model: str = "test-executor", answer: str = "42", delay: float = 0.0):
        self.model, self.answer, self.delay = model, answer, delay
        self._queue: deque[str] = deque()
        self._then = "ok"
        self._lock = threading.Lock()
        self.requests = 0
        self.bodies: list[dict] = []
        self.authorizations: list[str] = []
        self.in_flight = self.max_in_flight = 0
        self._httpd: ThreadingHTTPServer | None = None

    # -- control ---------------------------------------------------------------------------------
    def script(self, actions: list[str], then: str = "ok") -> None:
        with self._lock:
            self._queue = deque(actions)
            self._then = then

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self, port: int = 0) -> OpenAIServer:
        """Serve on 127.0.0.1:`port` (0: a free one)."""
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False  # stop() does not wait for a scripted sleep to end
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- answers ---------------------------------------------------------------------------------
    def next_action(self) -> str:
        with self._lock:
            self.requests += 1
            return self._queue.popleft() if self._queue else self._then

    def reply_text(self, body: dict) -> str:
        users = [m for m in body.get("messages", []) if m.get("role") == "user"]
        last = str(users[-1].get("content", "")) if users else ""
        return judge(last) or arithmetic(last) or self.answer

    def completion(self, body: dict) -> dict:
        text = self.reply_text(body)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        completion_tokens = len(text.split())
        with self._lock:
            n = len(self.bodies)
        return {
            "id": f"chatcmpl-test-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


def _handler(server: OpenAIServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection: a stopped server answers nothing more

        def log_message(self, *args):  # quiet
            pass

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
                pass

        def do_GET(self):
            if self.path.rstrip("/").endswith("/v1/models"):
                model = {"id": server.model, "object": "model", "created": 0, "owned_by": "tests"}
                self._send(200, {"object": "list", "data": [model]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

        def do_POST(self):
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                return
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            action = server.next_action()
            with server._lock:
                server.bodies.append(body)
                server.authorizations.append(self.headers.get("Authorization", ""))
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
            try:
                self._act(action, body)
            finally:
                with server._lock:
                    server.in_flight -= 1

        def _act(self, action: str, body: dict) -> None:
            if action == "reset":
                self.close_connection = True
                self.connection.close()
                return
            if action.isdigit():
                status = int(action)
                error = {"message": f"scripted {status}", "type": "rate_limit" if status == 429 else "server_error"}
                self._send(status, {"error": {**error, "code": status}})
                return
            if action.startswith("sleep:"):
                time.sleep(float(action.split(":", 1)[1]))
            elif action != "ok":
                raise ValueError(f"unknown scripted action {action!r}")
            if server.delay:
                time.sleep(server.delay)
            self._send(200, server.completion(body))

    return Handler


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="The tests' deterministic OpenAI-compatible executor, on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8001, help="0 picks a free port (default 8001)")
    parser.add_argument("--model", default="test-executor", help="the model name /v1/models lists")
    args = parser.parse_args(argv)
    try:
        server = OpenAIServer(model=args.model).start(args.port)
    except OSError as exc:
        why = exc.strerror or exc
        raise SystemExit(f"error: cannot serve on 127.0.0.1:{args.port}: {why} (pick another --port)") from None
    print(f"serving {server.url} (model {args.model}); Ctrl-C stops it", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
