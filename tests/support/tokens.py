"""A stand-in for Google's token endpoints and the GCE metadata server, on loopback.

One server answers what google-auth asks for each credential type, and checks what it must:
- ``POST /token``: an ``authorized_user`` refresh (the refresh token must match), a service-account JWT
  grant (the assertion's RSA signature must verify against the key's public half), an STS token exchange
  for ``external_account`` (the subject token must be the credential source's);
- ``/computeMetadata/v1/...`` (``Metadata-Flavor: Google`` required) and the ping at ``/``.
Every token it issues is recorded; :meth:`TokenServer.accepts` tells whether a bearer header carries a
token still valid (issued, not revoked, not expired), which a gate in front of the emulator enforces.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from google.auth import jwt

REFRESH_TOKEN = "test-refresh-token"
SUBJECT_TOKEN = "test-subject-token"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
STS_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"


@dataclass
class TokenServer:
    url: str = ""
    public_key_pem: str = ""  # of the service-account key whose JWT grants are accepted
    expires_in: int = 3600
    grants: list[str] = field(default_factory=list)  # grant type of every token issued
    issued: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    _expiry: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def issue(self, grant: str) -> dict[str, object]:
        with self._lock:
            token = f"token-{len(self.issued) + 1}-{grant.rsplit(':', 1)[-1]}"
            self.grants.append(grant)
            self.issued.append(token)
            self._expiry[token] = time.time() + self.expires_in
        return {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}

    def revoke_all(self) -> None:
        """Every token issued so far stops working (a key rotation, a revoked grant)."""
        with self._lock:
            self._expiry.clear()

    def accepts(self, authorization: str | None) -> bool:
        if not authorization or not authorization.startswith("Bearer "):
            return False
        with self._lock:
            expiry = self._expiry.get(authorization.removeprefix("Bearer "))
        return expiry is not None and expiry > time.time()

    def token_grant(self, form: dict[str, str]) -> dict[str, object] | None:
        grant = form.get("grant_type", "")
        if grant == "refresh_token" and form.get("refresh_token") == REFRESH_TOKEN:
            return self.issue("authorized_user")
        if grant == JWT_GRANT:
            try:
                audiences = [f"{self.url}/token", GOOGLE_TOKEN_URI]  # google-auth signs for Google's endpoint
                jwt.decode(form.get("assertion", ""), certs=self.public_key_pem, audience=audiences)
            except ValueError as exc:
                self.refused.append(f"jwt: {exc}")
                return None
            return self.issue("service_account")
        if grant == STS_GRANT and form.get("subject_token") == SUBJECT_TOKEN:
            reply = self.issue("external_account")
            reply["issued_token_type"] = "urn:ietf:params:oauth:token-type:access_token"
            return reply
        self.refused.append(grant)
        return None


METADATA_INFO = {"email": "puller@test.iam.gserviceaccount.com", "aliases": ["default"], "scopes": ["cloud-platform"]}


@contextmanager
def token_server() -> Iterator[TokenServer]:
    state = TokenServer()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _reply(self, status: int, body: object, content_type: str = "application/json") -> None:
            data = (json.dumps(body) if content_type == "application/json" else str(body)).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Metadata-Flavor", "Google")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            reply = state.token_grant(form) if self.path == "/token" else None
            if reply is None:
                self._reply(400, {"error": "invalid_grant", "error_description": "refused by the stand-in"})
            else:
                self._reply(200, reply)

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/":
                self._reply(200, "", "text/plain")  # the metadata ping: only the header matters
                return
            if self.headers.get("Metadata-Flavor") != "Google":
                self._reply(403, {"error": "missing Metadata-Flavor"})
                return
            base = "/computeMetadata/v1/"
            texts = {"project/project-id": "test-project", "universe/universe-domain": "googleapis.com"}
            key = path.removeprefix(base)
            if key == "instance/service-accounts/default/token":
                self._reply(200, state.issue("metadata"))
            elif key.startswith("instance/service-accounts/default"):
                self._reply(200, METADATA_INFO)
            elif key in texts:
                self._reply(200, texts[key], "application/text")
            else:
                self._reply(404, {"error": path})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
