"""How bucket clients reach GCS on a real network: the CA bundle and the HTTPS proxy.

Both clients follow the same settings, read once into :class:`BucketNetwork`:

- ``REQUESTS_CA_BUNDLE``, else ``SSL_CERT_FILE``: a PEM bundle that *replaces* the system store (as in
  requests and OpenSSL), for a private CA or a TLS-inspecting corporate proxy. Unset: the system store.
- ``HTTPS_PROXY`` (an ``http://[user:pass@]host:port`` proxy) carries ``https://`` endpoints through an
  HTTP CONNECT tunnel; ``NO_PROXY`` (comma-separated hosts, domain suffixes, ``*``) bypasses it, with
  the standard library's matching rules. Plain ``http://`` endpoints (an emulator) are never proxied by
  the media client.

The SDK client (requests) gets sessions verifying against the same bundle (and reads the proxy variables
itself); the project's own media client opens its sockets with :meth:`BucketNetwork.connect`.
"""

from __future__ import annotations

import base64
import functools
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]  # stdlib, untyped

import requests

from services.common.settings import BucketSettings

HEAD_LIMIT = 64 * 1024


class ProxyRefused(OSError):
    """The HTTPS proxy did not open a tunnel (an OSError: a network failure like any other)."""


@dataclass(frozen=True)
class BucketNetwork:
    """CA bundle and proxy settings of the bucket clients."""

    ca_file: Path | None = None
    https_proxy: str | None = None
    no_proxy: str | None = None

    def __post_init__(self) -> None:
        if self.https_proxy:
            parts = urlsplit(self.https_proxy if "://" in self.https_proxy else "http://" + self.https_proxy)
            if parts.scheme != "http" or not parts.hostname:
                raise ValueError(f"HTTPS_PROXY must look like http://host:port, got {self.https_proxy!r}")
        if self.ca_file is not None and not self.ca_file.is_file():
            raise ValueError(f"CA bundle {self.ca_file} (REQUESTS_CA_BUNDLE / SSL_CERT_FILE) is not a file")

    @classmethod
    def from_settings(cls, settings: BucketSettings) -> BucketNetwork:
        return cls(ca_file=settings.ca_bundle(), https_proxy=settings.https_proxy, no_proxy=settings.no_proxy)

    @functools.cached_property
    def tls_context(self) -> ssl.SSLContext:
        """Certificate and host name checks against the CA bundle, or the system store (built once:
        loading a bundle costs milliseconds, and every download thread opens its own connection)."""
        if self.ca_file is not None:
            return ssl.create_default_context(cafile=str(self.ca_file))
        return ssl.create_default_context()

    def proxy_for(self, host: str) -> str | None:
        """The proxy URL for an ``https://`` endpoint on ``host``, or None (no proxy, or NO_PROXY matches)."""
        if not self.https_proxy:
            return None
        if self.no_proxy and proxy_bypass_environment(host, {"no": self.no_proxy}):
            return None
        return self.https_proxy if "://" in self.https_proxy else "http://" + self.https_proxy

    def connect(self, host: str, port: int, *, tls: bool, timeout: float) -> socket.socket:
        """A connected socket to ``host:port``: through the proxy's tunnel when one applies, TLS when asked."""
        proxy = self.proxy_for(host) if tls else None
        if proxy is None:
            raw = socket.create_connection((host, port), timeout=timeout)
        else:
            raw = _tunnel(proxy, host, port, timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not tls:
            return raw
        try:
            return self.tls_context.wrap_socket(raw, server_hostname=host)
        except BaseException:
            raw.close()
            raise

    def session(self) -> requests.Session:
        """A requests session verifying against the same CA bundle (see :class:`PinnedCaSession`)."""
        session = PinnedCaSession()
        session.pinned_ca = str(self.ca_file) if self.ca_file is not None else None
        return session


class PinnedCaSession(requests.Session):
    """A requests session whose configured CA bundle wins over requests' environment fallbacks.

    requests lets ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE`` replace a session's ``verify``; the
    settings already took the first, and the second must not make the SDK trust another store than the
    media client. Proxies still come from the environment (HTTPS_PROXY, NO_PROXY: same names, same rules).
    """

    pinned_ca: str | None = None

    def merge_environment_settings(self, url: str, proxies: Any, stream: Any, verify: Any, cert: Any) -> dict[str, Any]:
        merged: dict[str, Any] = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if self.pinned_ca is not None and verify in (None, True):
            merged["verify"] = self.pinned_ca
        return merged


def _tunnel(proxy: str, host: str, port: int, *, timeout: float) -> socket.socket:
    """Open an HTTP CONNECT tunnel to ``host:port`` through ``proxy``."""
    parts = urlsplit(proxy)
    assert parts.hostname is not None  # checked in __post_init__
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    if parts.username:
        basic = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        lines.append(f"Proxy-Authorization: Basic {base64.b64encode(basic.encode()).decode()}")
    sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
    try:
        sock.sendall(("\r\n".join([*lines, "", ""])).encode("latin-1"))
        head = b""
        while b"\r\n\r\n" not in head:  # nothing follows the head until the client speaks TLS
            chunk = sock.recv(4096)
            if not chunk:
                raise ProxyRefused(f"proxy {parts.hostname}:{parts.port} closed the connection on CONNECT {target}")
            head += chunk
            if len(head) > HEAD_LIMIT:
                raise ProxyRefused(f"proxy {parts.hostname}:{parts.port} sent an oversized CONNECT answer")
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        fields = status_line.split(" ", 2)
        if len(fields) < 2 or fields[1] != "200":
            raise ProxyRefused(f"proxy {parts.hostname}:{parts.port} refused CONNECT {target}: {status_line[:120]}")
        return sock
    except BaseException:
        sock.close()
        raise
