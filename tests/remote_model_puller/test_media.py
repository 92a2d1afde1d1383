"""The media reader's small HTTP/1.1 exchange against a scripted server: the framings a real server (or a
proxy in front of it) may send are read right, the ones it cannot read right are refused clearly."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import google_crc32c
import pytest

from services.common.errors import BucketError
from services.remote_model_puller.media import GenerationChanged, MediaReader
from services.remote_model_puller.native import HashBuffer

BODY = os.urandom(10_000)


@dataclass
class Reply:
    payload: bytes
    close: bool = False  # close the connection after sending
    drip: bool = False  # send one byte at a time


Responder = Callable[[str, int], Reply]  # (request head, connection number) → reply


@dataclass
class Script:
    connections: int = 0
    requests: list[str] = field(default_factory=list)


@contextmanager
def scripted_server(respond: Responder) -> Iterator[tuple[str, Script]]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    script = Script()
    stop = threading.Event()

    def serve(conn: socket.socket, number: int) -> None:
        with conn:
            data = b""
            while not stop.is_set():
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                script.requests.append(head.decode())
                reply = respond(head.decode(), number)
                if reply.drip:
                    for byte in reply.payload:
                        conn.sendall(bytes([byte]))
                else:
                    conn.sendall(reply.payload)
                if reply.close:
                    return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            script.connections += 1
            threading.Thread(target=serve, args=(conn, script.connections), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", script
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def ok(body: bytes = BODY, *, extra: str = "", status: str = "206 Partial Content", **kw: bool) -> Reply:
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nx-goog-generation: 7\r\n{extra}\r\n"
    return Reply(head.encode() + body, **kw)


def read(url: str, size: int = len(BODY)) -> tuple[bytes, int]:
    reader = MediaReader(endpoint=url, bucket="b", timeout=5, buffer_bytes=4096)
    out = bytearray(size)

    def sink(buffer: HashBuffer, count: int, offset: int) -> None:
        out[offset : offset + count] = buffer.view[:count]

    crc = reader.read_range("m/1/f", 7, 0, size, sink, lambda: False)
    return bytes(out), crc


@pytest.mark.parametrize("drip", [False, True])
def test_body_in_the_head_packet_and_a_dripped_response_read_the_same(drip: bool) -> None:
    with scripted_server(lambda head, n: ok(drip=drip)) as (url, script):
        data, crc = read(url)
    assert data == BODY and crc == google_crc32c.value(BODY)
    request = script.requests[0]
    assert request.startswith("GET /download/storage/v1/b/b/o/m%2F1%2Ff?alt=media&generation=7 HTTP/1.1")
    assert f"Range: bytes=0-{len(BODY) - 1}" in request


def test_keep_alive_connection_closed_by_the_server_is_replaced_without_an_error() -> None:
    with scripted_server(lambda head, n: ok(close=True)) as (url, script):
        reader = MediaReader(endpoint=url, bucket="b", timeout=5, buffer_bytes=4096)
        for _ in range(3):  # each read finds the previous connection closed by the server
            assert reader.read_range("f", 7, 0, len(BODY), lambda *a: None, lambda: False) == google_crc32c.value(BODY)
    assert script.connections == 3


def test_connection_close_header_is_honoured_and_keep_alive_reused() -> None:
    with scripted_server(lambda head, n: ok(extra="Connection: close\r\n", close=True)) as (url, script):
        reader = MediaReader(endpoint=url, bucket="b", timeout=5, buffer_bytes=4096)
        for _ in range(2):
            reader.read_range("f", 7, 0, len(BODY), lambda *a: None, lambda: False)
    assert script.connections == 2
    with scripted_server(lambda head, n: ok()) as (url, script):
        reader = MediaReader(endpoint=url, bucket="b", timeout=5, buffer_bytes=4096)
        for _ in range(3):
            reader.read_range("f", 7, 0, len(BODY), lambda *a: None, lambda: False)
    assert script.connections == 1


def test_bytes_beyond_the_body_mean_the_connection_is_not_reused() -> None:
    with scripted_server(lambda head, n: Reply(ok().payload + b"HTTP/1.1 200 OK\r\n")) as (url, script):
        reader = MediaReader(endpoint=url, bucket="b", timeout=5, buffer_bytes=4096)
        for _ in range(2):
            reader.read_range("f", 7, 0, len(BODY), lambda *a: None, lambda: False)
    assert script.connections == 2


@pytest.mark.parametrize(
    ("endpoint", "host"),
    [
        ("http://127.0.0.1:4443", "127.0.0.1:4443"),
        ("https://storage.googleapis.com", "storage.googleapis.com"),
        ("http://[::1]:8080", "[::1]:8080"),
    ],
)
def test_host_header_names_the_port_and_brackets_ipv6(endpoint: str, host: str) -> None:
    assert MediaReader(endpoint=endpoint, bucket="b", timeout=1, buffer_bytes=4096).host_header == host


@pytest.mark.parametrize(
    ("reply", "message", "retryable"),
    [
        (Reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), "without Content-Length", False),
        (ok(BODY + b"x", status="200 OK"), "bytes for a range of", False),
        (ok(extra="x-goog-stored-content-encoding: gzip\r\n"), "gzip", False),
        (Reply(b"HTTP/1.1 206 Partial Content\r\nContent-Length: 10000\r\n\r\nshort", close=True), "closed", True),
        (Reply(b"garbage\r\n\r\n"), "not an HTTP status line", True),
        (Reply(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"), "HTTP 503", True),
        (Reply(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"), "HTTP 403", False),
    ],
)
def test_answers_that_cannot_be_read_right_are_refused_clearly(reply: Reply, message: str, retryable: bool) -> None:
    with scripted_server(lambda head, n: reply) as (url, _script), pytest.raises(BucketError) as caught:
        read(url)
    assert message in str(caught.value) and "m/1/f" in str(caught.value)
    assert caught.value.retryable is retryable


def test_another_generation_or_a_missing_object_means_the_object_changed() -> None:
    other = Reply(b"HTTP/1.1 206 Partial Content\r\nContent-Length: 10000\r\nx-goog-generation: 8\r\n\r\n" + BODY)
    for reply in (other, Reply(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")):
        with scripted_server(lambda head, n, r=reply: r) as (url, _script), pytest.raises(GenerationChanged):
            read(url)
