"""A scriptable OpenAI-compatible provider on 127.0.0.1 for real Hermes workers.

While "limited" (now < limited_until) every chat completion is answered with
HTTP 429 and a usage-limit body: Codex-style by default (``style="codex"``:
"The usage limit has been reached", which names openai-codex), or vendor-neutral
(``style="generic"``: "Rate limit reached for <model>. resets_at: N", the 429 of
a custom OpenAI-compatible endpoint). Both carry ``resets_at`` in the body.  Afterwards a chat completion is
answered with a tool call to ``kanban_complete`` (the worker's real kanban tool,
tools/kanban_tools.py: ``KANBAN_COMPLETE_SCHEMA``), and once the conversation
carries the tool's result, with a final assistant message.  So a real
``hermes chat`` worker completes a real task through its own tool.

Everything else (``GET /v1/models`` and other start-up probes) gets a model list.
Streaming (SSE) and non-streaming requests are both supported.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "test-model"


class FakeProvider:
    def __init__(self, model: str = MODEL, usage_limit_seconds: float = 0.0, style: str = "codex"):
        self.model = model
        self.style = style
        self.lock = threading.Lock()
        self.limited_until = 0.0
        self.pending_limit: float | None = None  # armed by limit_from_first_call
        self.requests: list[dict] = []  # {"t", "method", "path", "answer"}
        self.summary = "completed by the fake provider's kanban_complete tool call"
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        if usage_limit_seconds:
            self.limit_for(usage_limit_seconds)

    # -- scripting -----------------------------------------------------
    def limit_until(self, epoch: float) -> None:
        """Answer 429 (usage limit) until ``epoch``; resets_at in the body = epoch."""
        with self.lock:
            self.limited_until = float(epoch)

    def limit_for(self, seconds: float) -> float:
        until = time.time() + seconds
        self.limit_until(until)
        return until

    def unlimit(self) -> None:
        with self.lock:
            self.pending_limit = None
            self.limited_until = 0.0

    def limit_from_first_call(self, seconds: float) -> None:
        """The limit starts with the next chat completion and lasts ``seconds``:
        however slowly a worker starts, its first call is limited, and the reset
        is ``seconds`` after it (see ``limit_armed``)."""
        with self.lock:
            self.pending_limit = float(seconds)
            self.limited_until = 0.0

    @property
    def limit_armed(self) -> int | None:
        """resets_at once a limit is running (or over), None while it waits for its first call."""
        with self.lock:
            return int(self.limited_until + 0.999) if self.limited_until else None

    @property
    def resets_at(self) -> int:
        return int(self.limited_until + 0.999)

    def chat_answers(self) -> list[str]:
        with self.lock:
            return [r["answer"] for r in self.requests if r["answer"] != "probe"]

    # -- server ----------------------------------------------------------
    def start(self) -> "FakeProvider":
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # keep pytest output clean
                pass

            def _json(self, code: int, obj, headers: dict | None = None):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _note(self, answer: str, stream: bool | None = None):
                with provider.lock:
                    provider.requests.append({"t": time.time(), "method": self.command, "path": self.path,
                                              "answer": answer, "stream": stream})

            def do_GET(self):
                self._note("probe")
                self._json(200, {"object": "list", "data": [
                    {"id": provider.model, "object": "model", "created": 0, "owned_by": "fake",
                     "context_length": 128000}]})

            def do_HEAD(self):
                self._note("probe")
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                try:
                    req = json.loads(raw or b"{}")
                except ValueError:
                    req = {}
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._note("unsupported")
                    self._json(404, {"error": {"message": f"not served: {self.path}", "type": "not_found"}})
                    return
                now = time.time()
                with provider.lock:
                    if provider.pending_limit is not None:
                        provider.limited_until = now + provider.pending_limit
                        provider.pending_limit = None
                    limited_until = provider.limited_until
                if now < limited_until:
                    self._note("429", bool(req.get("stream")))
                    resets_at = int(limited_until + 0.999)
                    secs = max(1, resets_at - int(now))
                    if provider.style == "generic":
                        body = {"error": {"type": "rate_limit_exceeded", "code": "rate_limit_exceeded",
                                          "message": f"Rate limit reached for {provider.model}. resets_at: {resets_at}",
                                          "resets_at": resets_at}}
                    else:
                        body = {"error": {"type": "usage_limit_reached", "message": "The usage limit has been reached",
                                          "plan_type": "team", "resets_at": resets_at, "resets_in_seconds": secs}}
                    self._json(429, body)
                    return
                messages = req.get("messages") or []
                done_tool = any(m.get("role") == "tool" for m in messages if isinstance(m, dict))
                if done_tool:
                    self._note("final", bool(req.get("stream")))
                    self._reply(req, content="The task is complete.", tool_call=None)
                else:
                    self._note("tool_call", bool(req.get("stream")))
                    self._reply(req, content=None, tool_call={
                        "id": f"call_{int(now * 1000)}",
                        "type": "function",
                        "function": {"name": "kanban_complete",
                                     "arguments": json.dumps({"summary": provider.summary})},
                    })

            def _reply(self, req: dict, content, tool_call):
                model = req.get("model") or provider.model
                created = int(time.time())
                finish = "tool_calls" if tool_call else "stop"
                usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
                if not req.get("stream"):
                    msg = {"role": "assistant", "content": content}
                    if tool_call:
                        msg["tool_calls"] = [tool_call]
                    self._json(200, {"id": "chatcmpl-fake", "object": "chat.completion", "created": created,
                                     "model": model, "choices": [{"index": 0, "message": msg,
                                                                  "finish_reason": finish}],
                                     "usage": usage})
                    return
                chunks = []
                base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created, "model": model}
                if tool_call:
                    delta = {"role": "assistant", "content": None, "tool_calls": [{
                        "index": 0, "id": tool_call["id"], "type": "function",
                        "function": {"name": tool_call["function"]["name"],
                                     "arguments": tool_call["function"]["arguments"]}}]}
                else:
                    delta = {"role": "assistant", "content": content}
                chunks.append({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
                chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
                chunks.append({**base, "choices": [], "usage": usage})
                payload = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-provider", daemon=True)
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
