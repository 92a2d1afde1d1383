"""fleetctl's HTTP client and error handling: one call to master, problem+json answers made readable."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NoReturn

import httpx
import typer
from rich.console import Console


class CliError(Exception):
    """A readable failure; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1, *, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status  # master's HTTP status, when it answered


@dataclass
class Client:
    master: str
    token: str | None
    timeout: float
    as_json: bool

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """One call to master; problem+json answers become CliError with master's detail."""
        sent = dict(headers or {})
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        try:
            with httpx.Client(base_url=self.master, timeout=self.timeout, trust_env=False) as http:
                response = http.request(method, path, json=body, headers=sent, params=params)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach master at {self.master}: {type(exc).__name__} {exc}", code=2) from exc
        if response.status_code >= 400:
            raise CliError(describe_problem(response), status=response.status_code)
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None).json()

    def emit(self, payload: Any, table: Any) -> None:
        if self.as_json:
            typer.echo(json.dumps(payload, indent=2))
        else:
            Console().print(table)


def describe_problem(response: httpx.Response) -> str:
    """ "node-2 unhealthy, retry in 3 s" from a problem+json answer (and its Retry-After)."""
    try:
        problem = response.json()
        detail = str(problem.get("detail") or problem.get("title") or response.reason_phrase)
    except ValueError:
        detail = response.text[:200] or response.reason_phrase
    retry = response.headers.get("retry-after")
    if retry and "retry in" not in detail:
        detail += f", retry in {retry} s"
    message = f"{response.status_code}: {detail}"
    if response.status_code == 401:
        message += " (set FLEETCTL_TOKEN or --token-file)"
    if response.status_code == 403:
        message += " (an admin token is needed: FLEETCTL_TOKEN or --token-file)"
    if response.status_code == 412:
        message += " (someone else changed the desired state; run the command again)"
    return message


def fail(message: str, code: int = 1) -> NoReturn:
    Console(stderr=True).print(f"[red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def client_of(ctx: typer.Context) -> Client:
    client: Client = ctx.obj
    return client


def current_etag(client: Client, path: str) -> str:
    """The ETag (desired-state generation) to send as If-Match: every write says what it was based on."""
    return client.request("GET", path).headers["etag"]


def run(fn: Any) -> Any:
    """Run a command body, turning CliError into a readable message and exit code."""
    try:
        return fn()
    except CliError as exc:
        fail(str(exc), exc.code)
