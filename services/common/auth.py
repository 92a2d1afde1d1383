"""Tokens and roles shared by every service, and the "auth on by default" start-up rule.

- The **fleet token** (``FLEET_TOKEN_FILE``, one line) is what sidecars and master share: registration
  on master, and every master→sidecar call (status, config, sync, gc).
- The **tokens file** (``FLEET_ADMIN_TOKENS_FILE``, master only) holds people and tools, one per line:
  ``[role ]name:token`` with role ``admin`` (the default, so old ``name:token`` files keep working) or
  ``read``. ``admin`` implies ``read``. The name goes into the audit log.
- **Auth is on by default**: a service listening on a non-loopback address without its token files
  refuses to start (clear log line, exit status 2) unless ``FLEET_AUTH=disabled`` is set explicitly.

Tokens are compared in constant time, and every entry is compared (no early exit on a match).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

Role = Literal["read", "admin"]
ROLES: tuple[Role, ...] = ("read", "admin")
REFUSED_EXIT_STATUS = 2


def tokens_match(given: str, expected: str) -> bool:
    """Constant-time token comparison."""
    return hmac.compare_digest(given.encode(), expected.encode())


@dataclass(frozen=True)
class Principal:
    """Who called: the token's name (the audit log's actor) and its role."""

    name: str
    role: Role

    def may(self, role: Role) -> bool:
        """``admin`` may do everything ``read`` may."""
        return self.role == "admin" or role == "read"


class TokenBook:
    """The tokens file, parsed: ``[role ]name:token`` lines (``#`` comments and blank lines ignored)."""

    def __init__(self, entries: Mapping[str, Principal]) -> None:
        if not entries:
            raise ValueError("tokens file has no tokens")
        self._entries = dict(entries)

    @classmethod
    def parse(cls, text: str) -> TokenBook:
        entries: dict[str, Principal] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            role: str = "admin"
            head, sep, token = line.partition(":")
            words = head.split()
            if len(words) == 2:
                role, name = words
            elif len(words) == 1:
                name = words[0]
            else:
                name = ""
            token = token.strip()
            if not sep or not name or not token:
                raise ValueError(f"tokens file line {number}: expected '[read|admin ]name:token'")
            if role not in ROLES:
                raise ValueError(f"tokens file line {number}: unknown role {role!r} (read or admin)")
            if token in entries:
                raise ValueError(f"tokens file line {number}: token reused (names must be distinguishable)")
            entries[token] = Principal(name=name, role=role)
        return cls(entries)

    @classmethod
    def load(cls, path: Path) -> TokenBook:
        return cls.parse(path.read_text(encoding="utf-8"))

    def match(self, given: str) -> Principal | None:
        """The principal whose token ``given`` is, or None (every entry compared in constant time)."""
        found: Principal | None = None
        for token, principal in self._entries.items():
            if tokens_match(given, token):
                found = principal
        return found

    def roles(self) -> dict[str, int]:
        """How many tokens of each role (for the start-up log line)."""
        return {role: sum(p.role == role for p in self._entries.values()) for role in ROLES}


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost`` (an address only this machine reaches)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refuse_open_start(*, host: str, auth: str, required: Mapping[str, Path | None], service: str) -> None:
    """Exit (status 2, one clear error line) when ``host`` is reachable from the network and a token file
    of ``required`` (setting name → path) is not configured, unless ``FLEET_AUTH=disabled``."""
    missing = [name for name, path in required.items() if path is None]
    if not missing:
        return
    if auth == "disabled":
        logger.warning("%s: FLEET_AUTH=disabled: %s unset, its API accepts any caller", service, ", ".join(missing))
        return
    if is_loopback(host):
        logger.warning("%s: %s unset: API open to this machine only (%s)", service, ", ".join(missing), host)
        return
    logger.error(
        "%s refuses to start: listening on %s without %s; configure the token file(s), "
        "or set FLEET_AUTH=disabled to run without auth on purpose",
        service,
        host,
        ", ".join(missing),
    )
    raise SystemExit(REFUSED_EXIT_STATUS)
