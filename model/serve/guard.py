"""What keeps a web page the user opens from using the model server (an ASGI middleware,
`BrowserGuard`, in front of every endpoint):

- a POST must say `Content-Type: application/json` (415 otherwise): a page can send a
  cross-origin `text/plain` or form POST without a CORS preflight, never a JSON one;
- without a bearer token (a loopback server), the `Host` header must be a loopback address,
  `localhost`, or a name in `allowed_hosts` (421 otherwise): a page on a name that its DNS points
  at 127.0.0.1 (DNS rebinding) sends its own name. With a token the Host is not checked: the
  page does not have the token.
- no CORS headers unless `cors_origins` names origins (then Starlette's CORSMiddleware answers
  for them).

Refusals are JSON in the server's error shape.
"""

from __future__ import annotations

import ipaddress
import json

JSON_TYPES = ("application/json",)


def host_name(host: str) -> str:
    """The name part of a Host header: `[::1]:8000` -> `::1`, `localhost:80` -> `localhost`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def loopback_host(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class BrowserGuard:
    def __init__(self, app, check_host: bool, allowed_hosts=()):
        self.app = app
        self.check_host = check_host
        self.allowed = {h.lower() for h in allowed_hosts}

    def problem(self, scope) -> tuple[int, str] | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.check_host:
            name = host_name(headers.get("host", ""))
            if not (loopback_host(name) or name in self.allowed):
                return 421, (
                    f"Host {name or '(none)'!r} is not this server's: a loopback server without "
                    "a token answers localhost and loopback addresses, and the names of "
                    "allowed_hosts"
                )
        if scope["method"] == "POST":
            kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if kind not in JSON_TYPES:
                return 415, f"a POST body must be sent as application/json, not {kind or 'none'}"
        return None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or (problem := self.problem(scope)) is None:
            await self.app(scope, receive, send)
            return
        status, message = problem
        kind = "invalid_request_error"
        body = json.dumps({"error": {"message": message, "type": kind, "code": status}}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
