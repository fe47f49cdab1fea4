"""A scripted OpenAI-compatible HTTP server for tests and benchmarks.

It speaks real HTTP/1.1 and real server-sent events, in the exact wire shapes of the OpenAI
chat-completions API, and imitates the ways gpt-oss servers deliver reasoning:

- ``reasoning``          delta/message field ``reasoning`` (vLLM >= 0.11, Ollama /v1, OpenRouter)
- ``reasoning_content``  field ``reasoning_content`` (LM Studio, llama.cpp, older vLLM)
- ``harmony``            raw harmony markup inside ``content`` (a server without a reasoning parser)
- ``think``              ``<think>...</think>`` inside ``content``
- ``none``               no reasoning at all, only the answer

Use it as a context manager::

    with ScriptedLLMServer(Reply(content="Milvus is a vector database [1].")) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x")
        server.enqueue(Reply(status=500), Reply(status=429, retry_after=0.01))  # next 2 requests
        ...
        assert server.bodies()[-1]["reasoning_effort"] == "high"

Each chat request is answered by the next queued ``Reply`` (``server.enqueue``) or, when the queue
is empty, by the default ``Reply`` of the requested model (``server.add_model``); an unknown model
gets OpenAI's 404. A ``Reply`` with a ``respond`` hook computes the real reply from the request
body, for dynamic behaviour (agents: answer once a tool result is in the messages).

Also served: ``GET /v1/models`` and ``POST /v1/embeddings`` (deterministic hashed bag-of-words
vectors, L2-normalised: texts sharing words are similar, identical texts are identical).

Standalone, for manual runs and benchmarks::

    python tests/llm_server.py --port 8089 --delay 0.01 --dialect harmony
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import re
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DIALECTS = ("reasoning", "reasoning_content", "harmony", "think", "none")
AUTO = "auto"  # finish_reason: "tool_calls" when the reply has tool calls, else "stop"

_ERROR_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    429: "RateLimitError",
}


@dataclass
class Reply:
    """How the server answers one chat request (also used as a model's default script)."""

    content: str = ""
    reasoning: str = ""
    dialect: str = "reasoning"  # one of DIALECTS: where the reasoning text travels
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # [{name, arguments}]
    finish_reason: str | None = AUTO  # None: never send one (a truncated or odd server)
    usage: dict[str, Any] | None = None  # None: estimated from text lengths
    send_usage: bool = True  # False: no usage at all (servers that never report it)
    chunk_size: int = 8  # characters per streamed delta
    delay_s: float = 0.0  # sleep before each streamed delta after the first
    first_token_delay_s: float = 0.0  # sleep before the first delta (headers go out at once)
    status: int = 200  # non-200: answer with OpenAI's error shape instead
    error: str | None = None  # error message (default: one per status)
    retry_after: float | None = None  # seconds, sent as Retry-After and retry-after-ms
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers
    drop_after_chunks: int | None = None  # close the socket after this many SSE events
    respond: Callable[[dict[str, Any]], Reply] | None = None  # request body -> actual reply

    def __post_init__(self) -> None:
        if self.dialect not in DIALECTS:
            raise ValueError(f"dialect must be one of {DIALECTS}, not {self.dialect!r}")


Script = Reply  # a model's default script is simply the Reply it gives to every request


@dataclass
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or None


# --------------------------------------------------------------------------- wire shapes


def harmony_text(reasoning: str, content: str) -> str:
    """Reasoning and answer as a gpt-oss server without a reasoning parser emits them."""
    text = ""
    if reasoning:
        text += f"<|channel|>analysis<|message|>{reasoning}<|end|><|start|>assistant"
    return text + f"<|channel|>final<|message|>{content}<|return|>"


def think_text(reasoning: str, content: str) -> str:
    """Reasoning and answer in ``<think>`` tags."""
    return f"<think>{reasoning}</think>\n\n{content}" if reasoning else content


def content_text(reply: Reply) -> str:
    """The ``content`` string the reply puts on the wire for its dialect."""
    if reply.dialect == "harmony":
        return harmony_text(reply.reasoning, reply.content)
    if reply.dialect == "think":
        return think_text(reply.reasoning, reply.content)
    return reply.content


def reasoning_field(reply: Reply) -> str | None:
    """Name of the message field that carries reasoning, if the dialect uses one."""
    return reply.dialect if reply.dialect in ("reasoning", "reasoning_content") else None


def tool_call_objects(reply: Reply, request_id: int) -> list[dict[str, Any]]:
    """The reply's tool calls in OpenAI's message shape, with stable ids."""
    calls = []
    for i, call in enumerate(reply.tool_calls):
        args = call.get("arguments", {})
        calls.append(
            {
                "id": call.get("id") or f"call_{request_id}_{i}",
                "type": "function",
                "function": {
                    "name": call["name"],
                    "arguments": args if isinstance(args, str) else json.dumps(args),
                },
            }
        )
    return calls


def finish_reason(reply: Reply) -> str | None:
    if reply.finish_reason == AUTO:
        return "tool_calls" if reply.tool_calls else "stop"
    return reply.finish_reason


def estimate_usage(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """Rough token counts (4 characters a token) unless the reply scripts its own."""
    if reply.usage is not None:
        return reply.usage
    prompt = sum(len(str(m.get("content") or "")) for m in body.get("messages", []))
    args = sum(len(str(c.get("arguments", ""))) for c in reply.tool_calls)
    reasoning = len(reply.reasoning) // 4
    completion = (len(reply.reasoning) + len(reply.content) + args) // 4 + 1
    return {
        "prompt_tokens": prompt // 4 + 1,
        "completion_tokens": completion,
        "total_tokens": prompt // 4 + 1 + completion,
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def pieces(text: str, size: int) -> Iterator[str]:
    size = max(1, size)
    for start in range(0, len(text), size):
        yield text[start : start + size]


def error_body(status: int, message: str | None) -> dict[str, Any]:
    """OpenAI's error shape."""
    default = {
        401: "Incorrect API key provided.",
        403: "You are not allowed to use this model.",
        404: "The model does not exist.",
        429: "Rate limit reached, retry later.",
    }.get(status, "The server had an error while processing your request.")
    return {
        "error": {
            "message": message or default,
            "type": _ERROR_TYPES.get(
                status, "server_error" if status >= 500 else "invalid_request"
            ),
            "param": None,
            "code": status,
        }
    }


_WORD = re.compile(r"\w+")


def embed(text: str, dim: int = 384) -> list[float]:
    """A deterministic unit vector: hashed bag of lower-cased words (whole text if none)."""
    vec = [0.0] * dim
    for word in _WORD.findall(text.lower()) or [text]:
        digest = hashlib.blake2b(word.encode(), digest_size=16).digest()
        for k in range(3):  # three signed buckets per word
            bucket = int.from_bytes(digest[4 * k : 4 * k + 4], "little") % dim
            vec[bucket] += 1.0 if digest[12 + k] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


# --------------------------------------------------------------------------- server


class ScriptedLLMServer:
    """A real OpenAI-compatible HTTP server on 127.0.0.1, answering from scripts."""

    def __init__(
        self,
        script: Reply | None = None,
        *,
        model: str = "gpt-oss-20b",
        api_key: str | None = None,
        embedding_dim: int = 384,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.models: dict[str, Reply] = {model: script or Reply(content="OK.")}
        self.api_key = api_key  # when set, requests need "Authorization: Bearer <api_key>"
        self.embedding_dim = embedding_dim
        self.requests: list[RecordedRequest] = []
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._ids = 0
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.scripted = self
        self._thread: threading.Thread | None = None

    # -- lifecycle

    @property
    def root_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def base_url(self) -> str:
        return self.root_url + "/v1"

    def start(self) -> ScriptedLLMServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> ScriptedLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting

    def add_model(self, name: str, script: Reply) -> None:
        """Serve ``name`` (listed in /v1/models), answering with ``script`` by default."""
        with self._lock:
            self.models[name] = script

    def enqueue(self, *replies: Reply) -> None:
        """Answer the next chat requests with these replies, in order, whatever the model."""
        with self._lock:
            self._queue.extend(replies)

    def bodies(self, path: str = "/v1/chat/completions") -> list[Any]:
        """JSON bodies of the requests received on ``path``, oldest first."""
        with self._lock:
            return [r.body for r in self.requests if r.path == path]

    # -- used by the handler

    def _record(self, request: RecordedRequest) -> int:
        with self._lock:
            self.requests.append(request)
            self._ids += 1
            return self._ids

    def _reply_for(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            if self._queue:
                reply = self._queue.popleft()
            elif body.get("model") in self.models:
                reply = self.models[body["model"]]
            else:
                return Reply(status=404, error=f"The model `{body.get('model')}` does not exist.")
        return reply.respond(body) if reply.respond else reply


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many concurrent clients
    scripted: ScriptedLLMServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # a client hung up (e.g. closed a stream early): normal, not worth a traceback
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, chunked SSE
    server: _HTTPServer
    timeout = 60  # idle keep-alive connections end eventually

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet

    # -- routing

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        scripted = self.server.scripted
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = self.path.split("?")[0].rstrip("/")
        headers = {k.lower(): v for k, v in self.headers.items()}
        request_id = scripted._record(RecordedRequest(method, path, headers, body))
        try:
            if scripted.api_key and headers.get("authorization") != f"Bearer {scripted.api_key}":
                self._send_json(401, error_body(401, None))
            elif (method, path) == ("GET", "/v1/models"):
                self._models()
            elif (method, path) == ("POST", "/v1/chat/completions"):
                self._chat(body, request_id)
            elif (method, path) == ("POST", "/v1/embeddings"):
                self._embeddings(body)
            else:
                self._send_json(404, error_body(404, f"No route for {method} {path}"))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away; nothing to tell it

    # -- endpoints

    def _models(self) -> None:
        names = list(self.server.scripted.models)
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "scripted"} for n in names]
        self._send_json(200, {"object": "list", "data": data})

    def _chat(self, body: Any, request_id: int) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self._send_json(400, error_body(400, "'messages' is a required property"))
            return
        reply = self.server.scripted._reply_for(body)
        if reply.status != 200:
            self._send_error_reply(reply)
        elif body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._stream_chat(body, reply, request_id, include_usage)
        else:
            self._json_chat(body, reply, request_id)

    def _embeddings(self, body: Any) -> None:
        if not isinstance(body, dict) or "input" not in body:
            self._send_json(400, error_body(400, "'input' is a required property"))
            return
        inputs = body["input"]
        if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)):
            inputs = [inputs]  # one text, or one text as token ids
        dim = int(body.get("dimensions") or self.server.scripted.embedding_dim)
        data = []
        for i, item in enumerate(inputs):
            vector = embed(item if isinstance(item, str) else json.dumps(item), dim)
            encoded: Any = vector
            if body.get("encoding_format") == "base64":
                encoded = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        tokens = sum(len(str(x)) for x in inputs) // 4 + 1
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        model = body.get("model", "")
        self._send_json(200, {"object": "list", "data": data, "model": model, "usage": usage})

    # -- chat replies

    def _send_error_reply(self, reply: Reply) -> None:
        headers = dict(reply.headers)
        if reply.retry_after is not None:
            headers["Retry-After"] = f"{reply.retry_after:g}"
            headers["retry-after-ms"] = f"{reply.retry_after * 1000:g}"
        self._send_json(reply.status, error_body(reply.status, reply.error), headers)

    def _json_chat(self, body: dict[str, Any], reply: Reply, request_id: int) -> None:
        text = content_text(reply)
        n_chunks = len(range(0, len(text), max(1, reply.chunk_size)))
        time.sleep(reply.first_token_delay_s + reply.delay_s * max(0, n_chunks - 1))
        if reply.drop_after_chunks is not None:
            self._drop()
            return
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if (name := reasoning_field(reply)) and reply.reasoning:
            message[name] = reply.reasoning
        if reply.tool_calls:
            message["tool_calls"] = tool_call_objects(reply, request_id)
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": finish_reason(reply),
        }
        payload = {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [choice],
            "usage": estimate_usage(body, reply) if reply.send_usage else None,
        }
        self._send_json(200, payload, reply.headers)

    def _stream_chat(
        self, body: dict[str, Any], reply: Reply, request_id: int, include_usage: bool
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.flush()

        base = {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", ""),
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**base, "choices": [choice], **({"usage": None} if include_usage else {})}

        events: list[dict[str, Any]] = [chunk({"role": "assistant", "content": ""})]
        if (field_name := reasoning_field(reply)) and reply.reasoning:
            events += [chunk({field_name: p}) for p in pieces(reply.reasoning, reply.chunk_size)]
        events += [chunk({"content": p}) for p in pieces(content_text(reply), reply.chunk_size)]
        for i, call in enumerate(tool_call_objects(reply, request_id)):
            head = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
            events.append(chunk({"tool_calls": [{"index": i, **head}]}))
            for p in pieces(call["function"]["arguments"], reply.chunk_size):
                events.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": p}}]}))
        events.append(chunk({}, finish_reason(reply)))
        if include_usage and reply.send_usage:
            events.append({**base, "choices": [], "usage": estimate_usage(body, reply)})

        for n, event in enumerate(events):
            if n == reply.drop_after_chunks:
                self._drop()
                return
            if n == 1:
                time.sleep(reply.first_token_delay_s)
            elif n > 1:
                time.sleep(reply.delay_s)
            self._write_chunk(f"data: {json.dumps(event)}\n\n".encode())
        self._write_chunk(b"data: [DONE]\n\n")
        self._write_chunk(b"")  # end of the chunked body

    # -- low level

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _drop(self) -> None:
        """Close the connection abruptly, mid-response."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


# --------------------------------------------------------------------------- standalone

DEFAULT_REASONING = (
    "The user asks a question. The context passages are numbered; passage [1] is the most "
    "relevant, so I will answer from it and cite it."
)
DEFAULT_CONTENT = "According to the documentation, the answer is in the first passage [1]."


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a scripted OpenAI-compatible LLM.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--model", action="append", help="model name to serve (repeatable)")
    parser.add_argument("--dialect", choices=DIALECTS, default="reasoning")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between deltas")
    parser.add_argument("--first-token-delay", type=float, default=0.0)
    parser.add_argument("--chunk-size", type=int, default=8)
    parser.add_argument("--content", default=DEFAULT_CONTENT)
    parser.add_argument("--reasoning", default=DEFAULT_REASONING)
    parser.add_argument("--dim", type=int, default=384, help="embedding dimension")
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args(argv)

    script = Reply(
        content=args.content,
        reasoning=args.reasoning,
        dialect=args.dialect,
        chunk_size=args.chunk_size,
        delay_s=args.delay,
        first_token_delay_s=args.first_token_delay,
    )
    names = args.model or ["gpt-oss-20b", "gpt-oss-120b"]
    server = ScriptedLLMServer(
        script,
        model=names[0],
        api_key=args.api_key,
        embedding_dim=args.dim,
        host=args.host,
        port=args.port,
    )
    for name in names[1:]:
        server.add_model(name, replace(script))
    print(f"scripted LLM serving {', '.join(names)} at {server.base_url}", flush=True)
    try:
        server._httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()


if __name__ == "__main__":
    main()
