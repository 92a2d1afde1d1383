"""Linux network namespaces for partition tests: one namespace joined to the root namespace by a veth pair.

The addresses live in a private /24 that exists only between the root namespace and our own namespaces
(``10.213.7.0/24`` by default): the root end of the pair is ``.1``, the namespace end ``.2``. Cutting
the link sets the namespace end down, so the root end loses its carrier: connections towards the
namespace fail ("no route to host" after ARP gives up) while everything on loopback keeps working.

Names carry the ``mfh-`` prefix; :func:`remove_stale` deletes leftovers of a crashed run.
Needs root (``ip netns``); nothing here touches any other interface or namespace.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

PREFIX = "mfh-"
IP = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "ip"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([IP, *args], check=check, capture_output=True, text=True, timeout=20)


def netns_available() -> bool:
    """True when we are root and ``ip netns`` works."""
    if os.geteuid() != 0:
        return False
    try:
        return _ip("netns", "list", check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def remove_stale(prefix: str = PREFIX) -> list[str]:
    """Delete namespaces and root-side links named with ``prefix`` (debris of an interrupted run)."""
    removed: list[str] = []
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(prefix):
            _ip("netns", "delete", name, check=False)
            removed.append(name)
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            link = parts[1].strip().split("@")[0]
            if link.startswith(prefix):
                _ip("link", "delete", link, check=False)
                removed.append(link)
    return removed


@dataclass
class NetNamespace:
    """One namespace ``name`` with a veth pair: ``root_ip`` on our side, ``ns_ip`` inside."""

    name: str
    subnet: str = "10.213.7"
    root_octet: int = 1
    ns_octet: int = 2

    @property
    def root_ip(self) -> str:
        return f"{self.subnet}.{self.root_octet}"

    @property
    def ns_ip(self) -> str:
        return f"{self.subnet}.{self.ns_octet}"

    @property
    def root_link(self) -> str:
        return f"{self.name}-r"[:15]

    @property
    def ns_link(self) -> str:
        return f"{self.name}-n"[:15]

    def create(self) -> None:
        """Create the namespace, the veth pair and the addresses; bring everything up."""
        if not self.name.startswith(PREFIX):
            raise ValueError(f"namespace names must start with {PREFIX!r}")
        _ip("netns", "add", self.name)
        _ip("link", "add", self.root_link, "type", "veth", "peer", "name", self.ns_link)
        _ip("link", "set", self.ns_link, "netns", self.name)
        _ip("addr", "add", f"{self.root_ip}/24", "dev", self.root_link)
        _ip("link", "set", self.root_link, "up")
        self.exec_ip("addr", "add", f"{self.ns_ip}/24", "dev", self.ns_link)
        self.exec_ip("link", "set", "lo", "up")
        self.exec_ip("link", "set", self.ns_link, "up")

    def exec_ip(self, *args: str) -> None:
        _ip("netns", "exec", self.name, IP, *args)

    def command(self, args: Sequence[str]) -> list[str]:
        """``args`` run inside the namespace (``ip netns exec`` execs, so the pid is the command's)."""
        return [IP, "netns", "exec", self.name, *args]

    def cut(self) -> None:
        """Cut the link (namespace end down): the node is unreachable, loopback is untouched."""
        self.exec_ip("link", "set", self.ns_link, "down")

    def restore(self) -> None:
        """Bring the link back."""
        self.exec_ip("link", "set", self.ns_link, "up")

    def link_up(self) -> bool:
        out = _ip("netns", "exec", self.name, IP, "-o", "link", "show", self.ns_link).stdout
        return ",UP" in out or "<UP" in out

    def delete(self) -> None:
        """Delete the namespace and the root end of the pair (idempotent)."""
        _ip("netns", "delete", self.name, check=False)
        _ip("link", "delete", self.root_link, check=False)


@contextlib.contextmanager
def namespace(name: str, *, subnet: str = "10.213.7") -> Iterator[NetNamespace]:
    """A fresh namespace for the duration of the block (stale ones with our prefix removed first)."""
    remove_stale()
    ns = NetNamespace(name=name, subnet=subnet)
    try:
        ns.create()
        yield ns
    finally:
        ns.delete()
