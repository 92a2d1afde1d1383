"""Which sidecar URLs master may call (``FLEET_SIDECAR_ADDRESSES``): never an arbitrary URL a
registration sends.

A comma-separated allow-list of ``host:port`` entries. ``host`` is ``{hostname}`` (the registering node's
own hostname, as Swarm's ``{{.Node.Hostname}}`` advertises it), a literal host name or IP address, or an
IP network (``10.213.7.0/24``); ``port`` is a number or ``*``. The default, ``{hostname}:8001,{hostname}:8002``,
lets a node register only its own sidecar ports; the local fleet uses ``127.0.0.1:*`` (per-node loopback
ports). The URL must be plain ``http``/``https`` without user info, query or fragment.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

OWN_HOSTNAME = "{hostname}"
DEFAULT_SIDECAR_ADDRESSES = "{hostname}:8001,{hostname}:8002"


@dataclass(frozen=True)
class AddressRule:
    host: str
    port: int | None  # None = any port

    def allows(self, *, hostname: str, host: str, port: int) -> bool:
        if self.port is not None and port != self.port:
            return False
        if self.host == OWN_HOSTNAME:
            return host == hostname.lower()
        if "/" in self.host:
            try:
                return ipaddress.ip_address(host) in ipaddress.ip_network(self.host, strict=False)
            except ValueError:
                return False
        return host == self.host


class SidecarAddresses:
    """The parsed allow-list; ``refusal(hostname, url)`` says why a URL is not allowed (None = allowed)."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.rules = [parse_rule(entry) for entry in spec.split(",") if entry.strip()]
        if not self.rules:
            raise ValueError("FLEET_SIDECAR_ADDRESSES is empty: master could call no sidecar")

    def refusal(self, hostname: str, url: str) -> str | None:
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            return f"unparsable URL ({exc})"
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "not an http(s) URL"
        if parts.username or parts.password or parts.query or parts.fragment:
            return "user info, query and fragment are not allowed"
        host = parts.hostname.lower()
        if any(rule.allows(hostname=hostname, host=host, port=port) for rule in self.rules):
            return None
        return f"{host}:{port} does not fit FLEET_SIDECAR_ADDRESSES ({self.spec})"


def parse_rule(entry: str) -> AddressRule:
    host, sep, port = entry.strip().rpartition(":")
    host = host.strip("[]").lower()
    if not sep or not host or not (port == "*" or port.isdigit()):
        raise ValueError(f"FLEET_SIDECAR_ADDRESSES entry {entry!r}: expected host:port (port a number or *)")
    if "/" in host:
        ipaddress.ip_network(host, strict=False)  # ValueError names the bad network
    return AddressRule(host=host, port=None if port == "*" else int(port))
