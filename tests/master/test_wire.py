"""master's fan-out HTTP client against real servers: uvicorn (Content-Length and chunked), garbage, silence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

from services.master.wire import SidecarClient, WireError
from tests.master.support import ServerThread, free_port


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

    @app.post("/v1/sync")
    async def sync() -> Response:
        return Response(status_code=202)

    @app.get("/big")
    async def big() -> Response:
        return Response(b"x" * 5000, media_type="application/octet-stream")

    running = ServerThread(app).start()
    yield running
    running.stop()


async def test_requests_carry_the_token_and_read_both_body_framings(server: ServerThread) -> None:
    client = SidecarClient(token="fleet-secret")
    response = await client.request("GET", server.url + "/prefix/v1/status")
    assert response.status == 200
    assert response.body == f'{{"auth":"Bearer fleet-secret","host":"127.0.0.1:{server.port}"}}'.encode()
    chunked = await client.request("GET", server.url + "/chunked")
    assert chunked.body == "".join(f"part{i};" for i in range(50)).encode()
    assert (await client.request("POST", server.url + "/v1/sync")).status == 202
    assert (await client.request("GET", server.url + "/missing")).status == 404


async def test_oversized_bodies_unreachable_hosts_and_non_http_answers_are_wire_errors(server: ServerThread) -> None:
    with pytest.raises(WireError, match="limit 1000"):
        await SidecarClient(token=None, max_body=1000).request("GET", server.url + "/big")
    with pytest.raises(WireError, match="ConnectionRefused"):
        await SidecarClient(token=None).request("GET", f"http://127.0.0.1:{free_port()}/v1/status")
    with pytest.raises(WireError, match="unsupported URL"):
        await SidecarClient(token=None).request("GET", "ftp://node/v1/status")

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        writer.close()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    bad = await asyncio.start_server(garbage, "127.0.0.1", 0)
    quiet = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with bad, quiet:
        with pytest.raises(WireError, match="not an HTTP"):
            await SidecarClient(token=None).request("GET", f"http://127.0.0.1:{bad.sockets[0].getsockname()[1]}/")
        # The deadline is the caller's; the connection is closed when it fires.
        with pytest.raises(TimeoutError):
            url = f"http://127.0.0.1:{quiet.sockets[0].getsockname()[1]}/"
            await asyncio.wait_for(SidecarClient(token=None).request("GET", url), 0.3)
