"""master's fan-out HTTP client against real servers: uvicorn (Content-Length and chunked), garbage, silence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import aiohttp
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

from services.master.wire import SidecarClient, WireError
from tests.master.support import ServerThread
from tests.support.gcs import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    app = FastAPI()

    @app.get("/prefix/v1/status")
    async def status(request: Request) -> dict[str, str | None]:
        return {"auth": request.headers.get("authorization"), "host": request.headers.get("host")}

    @app.get("/chunked")
    async def chunked() -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            for i in range(50):
                yield f"part{i};".encode()

        return StreamingResponse(parts(), media_type="text/plain")

    @app.get("/chunked-big")
    async def chunked_big() -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b"y" * 500

        return StreamingResponse(parts(), media_type="application/octet-stream")

    @app.post("/v1/sync")
    async def sync(request: Request) -> Response:
        return Response(status_code=202, headers={"X-Body-Length": request.headers.get("content-length", "none")})

    @app.get("/big")
    async def big() -> Response:
        return Response(b"x" * 5000, media_type="application/octet-stream")

    running = ServerThread(app).start()
    yield running
    running.stop()


@pytest.fixture
async def client() -> AsyncIterator[SidecarClient]:
    sidecars = SidecarClient(token="fleet-secret")
    yield sidecars
    await sidecars.close()


async def test_requests_carry_the_token_and_read_both_body_framings(
    server: ServerThread, client: SidecarClient
) -> None:
    response = await client.request("GET", server.url + "/prefix/v1/status")
    assert response.status == 200
    assert response.body == f'{{"auth":"Bearer fleet-secret","host":"127.0.0.1:{server.port}"}}'.encode()
    assert response.headers["content-type"] == "application/json"
    chunked = await client.request("GET", server.url + "/chunked")
    assert chunked.headers["transfer-encoding"] == "chunked"
    assert chunked.body == "".join(f"part{i};" for i in range(50)).encode()
    synced = await client.request("POST", server.url + "/v1/sync")
    assert (synced.status, synced.headers["x-body-length"]) == (202, "0")
    assert (await client.request("GET", server.url + "/missing")).status == 404


async def test_oversized_bodies_are_refused_whether_declared_or_streamed(server: ServerThread) -> None:
    small = SidecarClient(token=None, max_body=1000)
    try:
        with pytest.raises(WireError, match="5000 bytes refused"):
            await small.request("GET", server.url + "/big")
        with pytest.raises(WireError, match="over 1000 bytes refused"):
            await small.request("GET", server.url + "/chunked-big")
        # The refused answers' connections are dropped; the client keeps working.
        assert (await small.request("GET", server.url + "/chunked")).status == 200
    finally:
        await small.close()


async def test_unreachable_hosts_and_bad_urls_are_wire_errors(client: SidecarClient) -> None:
    with pytest.raises(WireError, match="ClientConnectorError") as refused:
        await client.request("GET", f"http://127.0.0.1:{free_port()}/v1/status")
    cause = refused.value.__cause__
    assert isinstance(cause, aiohttp.ClientConnectorError) and isinstance(cause.os_error, ConnectionRefusedError)
    with pytest.raises(WireError, match="unsupported URL"):
        await client.request("GET", "ftp://node/v1/status")
    with pytest.raises(WireError, match="unsupported URL"):
        await client.request("GET", "http:///v1/status")


async def serve(handler: Handler) -> tuple[asyncio.Server, str]:
    listening = await asyncio.start_server(handler, "127.0.0.1", 0)
    return listening, f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}/"


async def test_a_non_http_answer_is_a_wire_error(client: SidecarClient) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        writer.close()

    listening, url = await serve(garbage)
    async with listening:
        with pytest.raises(WireError, match="ClientResponseError: Bad status line") as caught:
            await client.request("GET", url)
    assert "\n" not in str(caught.value)


async def test_the_callers_deadline_fires_on_a_silent_server_and_closes_the_connection(
    client: SidecarClient,
) -> None:
    requests: list[bytes] = []
    closed = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.readuntil(b"\r\n\r\n"))
        await reader.read()  # returns once the client closes its end
        closed.set()
        writer.close()

    listening, url = await serve(silent)
    async with listening:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.request("GET", url), 0.3)
        await asyncio.wait_for(closed.wait(), 2)
    assert len(requests) == 1 and b"Authorization: Bearer fleet-secret" in requests[0]


async def test_connections_are_reused_and_closed_with_the_client() -> None:
    connections: list[asyncio.Event] = []

    async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        gone = asyncio.Event()
        connections.append(gone)
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            gone.set()
        writer.close()

    listening, url = await serve(keep_alive)
    sidecars = SidecarClient(token=None)
    async with listening:
        try:
            for _ in range(3):
                assert (await sidecars.request("GET", url)).body == b"{}"
            assert len(connections) == 1 and not connections[0].is_set()
        finally:
            await sidecars.close()
        await asyncio.wait_for(connections[0].wait(), 2)
    with pytest.raises(WireError, match="closed"):
        await sidecars.request("GET", url)
