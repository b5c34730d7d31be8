"""Real HTTP endpoints on 127.0.0.1 for the Langfuse and judge tests.

Imported by the test modules (not a conftest). Nothing here fakes a client library: the
real Langfuse SDK and the project's httpx judge client talk HTTP to these servers.

- :class:`LocalServer`: a threaded ``http.server`` on port 0 that records every request
  and answers through a handler function ``(Request) -> Reply``.
- :func:`langfuse_handler`: speaks the two Langfuse endpoints the pipeline uses,
  ``GET /api/public/v2/prompts/{name}`` (from a dict of prompt bodies) and
  ``POST /api/public/otel/v1/traces`` (OTLP/HTTP protobuf, gzip or not), decoding each
  ``ExportTraceServiceRequest`` with ``opentelemetry.proto``.
- :func:`openai_handler`: ``POST /v1/chat/completions`` answered by a function of the
  request (deterministic judges), optionally failing first with given statuses.
- :func:`closed_port`: a port nothing listens on (connection refused at once).
"""

from __future__ import annotations

import gzip
import json
import re
import socket
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

TRACES_PATH = "/api/public/otel/v1/traces"
PROMPTS_PREFIX = "/api/public/v2/prompts/"
CHAT_PATH = "/v1/chat/completions"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes  # decompressed

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | dict | list = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


Handler = Callable[[Request], Reply]


def _decompress(body: bytes, encoding: str | None) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


class LocalServer:
    """A threaded HTTP server on 127.0.0.1:0; every request is recorded (body decompressed)."""

    def __init__(self, handler: Handler) -> None:
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        outer = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                req = Request(
                    method=self.command,
                    path=unquote(parts.path),
                    query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=_decompress(raw, self.headers.get("Content-Encoding")),
                )
                with outer._lock:
                    outer.requests.append(req)
                try:
                    reply = handler(req)
                except Exception as err:  # a broken test handler shows up as a 599
                    reply = Reply(599, {"error": repr(err)})
                data = reply.encoded()
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(data)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> LocalServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def matching(self, method: str, path_prefix: str) -> list[Request]:
        with self._lock:
            return [
                r for r in self.requests if r.method == method and r.path.startswith(path_prefix)
            ]


def closed_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago (nothing listens: connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- Langfuse


def prompt_body(
    name: str, prompt: str | list[dict[str, str]], version: int, label: str = "production"
) -> dict:
    """A prompt as ``GET /api/public/v2/prompts/{name}`` returns it."""
    return {
        "name": name,
        "version": version,
        "type": "text" if isinstance(prompt, str) else "chat",
        "prompt": prompt,
        "config": {},
        "labels": [label, "latest"],
        "tags": [],
        "commitMessage": None,
    }


def langfuse_handler(prompts: Mapping[str, dict], label: str = "production") -> Handler:
    """Answer prompt fetches from ``prompts`` (404 otherwise) and accept OTLP trace exports."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    def handle(req: Request) -> Reply:
        if req.method == "GET" and req.path.startswith(PROMPTS_PREFIX):
            name = req.path[len(PROMPTS_PREFIX) :]
            if name in prompts and req.query.get("label", [label]) == [label]:
                return Reply(200, prompts[name])
            return Reply(
                404, {"message": f"prompt {name!r} not found", "error": "LangfuseNotFoundError"}
            )
        if req.method == "POST" and req.path == TRACES_PATH:
            ExportTraceServiceRequest.FromString(
                req.body
            )  # a malformed export fails the test's handler
            return Reply(
                200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf"
            )
        return Reply(404, {"message": "unknown path"})

    return handle


def _any_value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


def exported_spans(server: LocalServer) -> list[dict[str, Any]]:
    """Every span the server received: name, ids, scope, attributes (plain Python values)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    spans = []
    for req in server.matching("POST", TRACES_PATH):
        msg = ExportTraceServiceRequest.FromString(req.body)
        for rs in msg.resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    spans.append(
                        {
                            "name": sp.name,
                            "trace_id": sp.trace_id.hex(),
                            "span_id": sp.span_id.hex(),
                            "parent_span_id": sp.parent_span_id.hex(),
                            "scope": ss.scope.name,
                            "attributes": {kv.key: _any_value(kv.value) for kv in sp.attributes},
                            "duration_ns": sp.end_time_unix_nano - sp.start_time_unix_nano,
                        }
                    )
    return spans


# --------------------------------------------------------------------------- OpenAI-compatible


def chat_reply(content: str | None, prompt_tokens: int = 50, completion_tokens: int = 1) -> dict:
    """A chat-completions response body."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": "judge-test",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def openai_handler(
    answer: Callable[[dict], Reply | str], fail_first: Iterator[int] | None = None
) -> Handler:
    """``POST /v1/chat/completions``: ``answer(request_json)`` gives the reply or the verdict text.

    ``fail_first`` yields HTTP statuses returned (one per request) before answering.
    """
    lock = threading.Lock()

    def handle(req: Request) -> Reply:
        if req.method != "POST" or req.path != CHAT_PATH:
            return Reply(404, {"error": {"message": "unknown path"}})
        if fail_first is not None:
            with lock:
                status = next(fail_first, None)
            if status is not None:
                return Reply(
                    status, {"error": {"message": "try again"}}, headers={"Retry-After": "0"}
                )
        out = answer(req.json())
        return out if isinstance(out, Reply) else Reply(200, chat_reply(out))

    return handle


SECTION_RE = r"### Response {label}\n(.*?)(?:\n\n### |\Z)"


def judged_responses(request: dict) -> tuple[str, str]:
    """Response A and B as the bundled judge prompt lays them out in the user message."""
    text = request["messages"][-1]["content"]
    a = re.search(SECTION_RE.format(label="A"), text, re.S)
    b = re.search(SECTION_RE.format(label="B"), text, re.S)
    if not (a and b):
        raise AssertionError("judge prompt without '### Response A' / '### Response B' sections")
    return a.group(1).strip(), b.group(1).strip()
