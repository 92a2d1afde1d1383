"""A small HTTP CONNECT proxy on loopback that counts the tunnels it opens (what a corporate egress proxy
does for https://), so a test can prove traffic went through it — or did not."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class ProxyLog:
    tunnels: list[str] = field(default_factory=list)  # "host:port" of each CONNECT accepted
    refused: list[str] = field(default_factory=list)  # request lines it refused (anything but CONNECT)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _handle(client: socket.socket, log: ProxyLog) -> None:
    with client:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                return
            head += chunk
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        method, target, _ = [*line.split(" ", 2), "", ""][:3]
        if method != "CONNECT":
            log.refused.append(line)
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        host, _, port = target.rpartition(":")
        try:
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
        except OSError:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        log.tunnels.append(target)
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        client.settimeout(None)
        upstream.settimeout(None)
        with upstream:
            back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
            back.start()
            _pipe(client, upstream)
            back.join(timeout=10)


@contextmanager
def connect_proxy() -> Iterator[tuple[str, ProxyLog]]:
    """Run the proxy on 127.0.0.1; yields its URL (``http://127.0.0.1:<port>``) and its log."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    log = ProxyLog()
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=_handle, args=(client, log), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", log
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
