"""What keeps `ossrag serve` private on a shared machine: a Host-header check against DNS
rebinding, and security headers on every response. Both are plain ASGI middleware."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
from collections.abc import Sequence

from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ossrag.config import Settings

#: Answered whatever the Host header says: liveness probes often send the pod or node IP.
UNCHECKED_PATHS = frozenset({"/healthz"})

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")  # Starlette keeps IPv6's brackets
WILDCARD_BINDS = ("0.0.0.0", "::", "")

PAGE_CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def allowed_host_names(settings: Settings) -> list[str]:
    """Host names a browser may legitimately send: loopback, the bound address, this machine's
    name when bound to every interface, and `allowed_hosts` ('*' allows any)."""
    names = [*LOOPBACK_NAMES, *settings.allowed_hosts]
    host = settings.host.strip("[]")
    if host in WILDCARD_BINDS:
        hostname = socket.gethostname()
        names += [hostname, socket.getfqdn(hostname)]
    else:
        names.append(f"[{host}]" if ":" in host else host)
    return list(dict.fromkeys(name.lower() for name in names if name))


class HostCheck:
    """Starlette's TrustedHostMiddleware decides; a refused request gets an OpenAI-shaped 400
    JSON error (not its plain-text body), and UNCHECKED_PATHS pass."""

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str]) -> None:
        self.app = app
        self.allowed_hosts = list(allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in UNCHECKED_PATHS:
            await self.app(scope, receive, send)
            return
        accepted = False

        async def accept(scope: Scope, receive: Receive, send: Send) -> None:
            nonlocal accepted
            accepted = True

        async def discard(message: Message) -> None:
            return None

        check = TrustedHostMiddleware(accept, self.allowed_hosts, www_redirect=False)
        await check(scope, receive, discard)
        if accepted:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps(
            {
                "error": {
                    "message": "Host header not allowed: this server answers only for "
                    "loopback names and its own address (add names with "
                    "OSSRAG_ALLOWED_HOSTS / --allowed-host)",
                    "type": "invalid_request_error",
                    "param": "Host",
                    "code": "host_not_allowed",
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def script_hash(script: str) -> str:
    """The CSP source that allows exactly this inline script."""
    digest = hashlib.sha256(script.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


class SecurityHeaders:
    """Adds a Content-Security-Policy without inline script, nosniff, no-referrer and
    frame-ancestors 'none' to every HTTP response; `path_csp` overrides the CSP per path."""

    def __init__(self, app: ASGIApp, path_csp: dict[str, str] | None = None) -> None:
        self.app = app
        self.path_csp = path_csp or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = self.path_csp.get(scope["path"], PAGE_CSP).encode()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() not in _SET_HERE
                ]
                headers += [
                    (b"content-security-policy", csp),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class PlainErrorsAsJson:
    """Error responses Starlette writes in plain text (a body over the size limit: 413) are
    rewritten in OpenAI's JSON error shape, like every other error of the API."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        text = b""

        async def send_json_errors(message: Message) -> None:
            nonlocal held, text
            if message["type"] == "http.response.start":
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                if message["status"] >= 400 and content_type.startswith(b"text/plain"):
                    held = message
                    return
            elif held is not None and message["type"] == "http.response.body":
                text += message.get("body", b"")
                if message.get("more_body"):
                    return
                body = json.dumps(
                    {
                        "error": {
                            "message": text.decode(errors="replace"),
                            "type": "invalid_request_error",
                            "param": None,
                            "code": None,
                        }
                    }
                ).encode()
                headers = [
                    (name, value)
                    for name, value in held.get("headers", [])
                    if name.lower() not in (b"content-type", b"content-length")
                ]
                headers += [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ]
                await send({**held, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, send_json_errors)


_SET_HERE = frozenset(
    {b"content-security-policy", b"x-content-type-options", b"referrer-policy", b"x-frame-options"}
)
