"""fleetctl: the operators' CLI for master (HTTP only).

``--master`` (env FLEETCTL_MASTER, default http://localhost:80); admin token from env FLEETCTL_TOKEN or
``--token-file``; ``--json`` prints master's JSON answers. Exit 0 on success, 1 when master refuses or a
node operation partly fails, 2 when master cannot be reached. Commands taking a model accept it as the
first argument, or infer it when the bucket holds exactly one model (``fleetctl label stable 2``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console

from services.master import fleetctl_render as render

app = typer.Typer(help="Drive a modelfleet fleet through master's admin API.", no_args_is_help=True)


class CliError(Exception):
    """A readable failure; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


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
            raise CliError(describe_problem(response))
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
    if response.status_code in (401, 403):
        message += " (set FLEETCTL_TOKEN or --token-file)"
    if response.status_code == 412:
        message += " (someone else changed the desired state; run the command again)"
    return message


def fail(message: str, code: int = 1) -> NoReturn:
    Console(stderr=True).print(f"[red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@app.callback()
def main_options(
    ctx: typer.Context,
    master: Annotated[str, typer.Option(envvar="FLEETCTL_MASTER", help="master's URL")] = "http://localhost:80",
    token_file: Annotated[Path | None, typer.Option(help="file holding the admin token")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print master's JSON")] = False,
    timeout: Annotated[float, typer.Option(help="seconds per request")] = 30.0,
) -> None:
    """Options shared by every command."""
    token = os.environ.get("FLEETCTL_TOKEN")
    if token_file is not None:
        token = token_file.read_text(encoding="utf-8").strip()
    ctx.obj = Client(master=master.rstrip("/"), token=token or None, timeout=timeout, as_json=as_json)


def client_of(ctx: typer.Context) -> Client:
    client: Client = ctx.obj
    return client


def resolve_model(client: Client, given: str | None) -> str:
    """The model named, or the only one in the bucket."""
    if given:
        return given
    names = [m["name"] for m in client.get("/v1/models")["models"]]
    if len(names) != 1:
        raise CliError(f"name the model: the bucket holds {len(names)} ({', '.join(names) or 'none'})")
    return str(names[0])


def update_policy(client: Client, model: str, change: dict[str, Any]) -> None:
    """GET the model's overrides and ETag, apply ``change``, PUT with If-Match."""
    response = client.request("GET", f"/v1/models/{model}")
    policy = dict(response.json().get("overrides") or {})
    policy.update(change)
    result = client.request("PUT", f"/v1/models/{model}", body=policy, headers={"If-Match": response.headers["etag"]})
    show_change(client, result.json())


def show_change(client: Client, result: dict[str, Any]) -> None:
    effective = result["model"]["effective"]
    summary = (
        f"{result['model']['name']}: serve {render.fmt_versions(effective['serve'])}, "
        f"labels {render.fmt_labels(effective['labels'])}, generation {result['generation']}"
        + ("" if result["changed"] else " (no change)")
    )
    client.emit(result, summary)


def run(fn: Any) -> Any:
    """Run a command body, turning CliError into a readable message and exit code."""
    try:
        return fn()
    except CliError as exc:
        fail(str(exc), exc.code)


def split_model(args: list[str], rest: int) -> tuple[str | None, list[str]]:
    """``[MODEL] ARG...``: the model is present when there are more than ``rest`` arguments."""
    return (args[0], args[1:]) if len(args) > rest else (None, args)


def parse_versions(values: list[str]) -> list[int]:
    try:
        return sorted({int(v) for v in values})
    except ValueError:
        raise CliError(f"versions must be integers, got {values}") from None


@app.command()
def status(ctx: typer.Context, refresh: Annotated[bool, typer.Option(help="poll every node now")] = False) -> None:
    """Nodes by models: versions, labels, states, failures."""
    client = client_of(ctx)
    cluster = run(lambda: client.get("/v1/cluster", refresh=str(refresh).lower()))
    client.emit(cluster, render.status_table(cluster))


@app.command()
def models(ctx: typer.Context) -> None:
    """Bucket models, complete versions and effective policy."""
    client = client_of(ctx)
    listing = run(lambda: client.get("/v1/models"))
    client.emit(listing, render.models_table(listing))


@app.command()
def nodes(ctx: typer.Context) -> None:
    """Registered nodes and the health of their sidecars."""
    client = client_of(ctx)
    listing = run(lambda: client.get("/v1/nodes"))
    client.emit(listing, render.nodes_table(listing))


@app.command()
def pin(ctx: typer.Context, args: Annotated[list[str], typer.Argument(help="[MODEL] VERSION...")]) -> None:
    """Serve exactly these versions."""
    client = client_of(ctx)
    given, rest = (args[0], args[1:]) if args and not args[0].isdigit() else (None, args)
    if not rest:
        fail("give at least one version")
    run(lambda: update_policy(client, resolve_model(client, given), {"pinned": parse_versions(rest), "latest": None}))


@app.command()
def unpin(ctx: typer.Context, model: Annotated[str | None, typer.Argument()] = None) -> None:
    """Back to the latest complete version(s)."""
    client = client_of(ctx)
    run(lambda: update_policy(client, resolve_model(client, model), {"pinned": None}))


@app.command()
def label(
    ctx: typer.Context,
    args: Annotated[list[str], typer.Argument(help="[MODEL] LABEL VERSION, or [MODEL] LABEL with --remove")],
    remove: Annotated[bool, typer.Option("--remove", help="remove the label")] = False,
) -> None:
    """Point a label at a version (or remove it)."""
    client = client_of(ctx)
    given, rest = split_model(args, 1 if remove else 2)
    if len(rest) != (1 if remove else 2):
        fail("usage: fleetctl label [MODEL] LABEL VERSION  |  fleetctl label [MODEL] LABEL --remove")

    def go() -> None:
        model = resolve_model(client, given)
        if remove:
            result = client.request("DELETE", f"/v1/models/{model}/labels/{rest[0]}")
        else:
            version = parse_versions([rest[1]])[0]
            result = client.request("PUT", f"/v1/models/{model}/labels/{rest[0]}", body={"version": version})
        show_change(client, result.json())

    run(go)


@app.command()
def rollback(ctx: typer.Context, model: Annotated[str | None, typer.Argument()] = None) -> None:
    """Pin the versions served before the last serving change (see docs/master.md)."""
    client = client_of(ctx)

    def go() -> None:
        name = resolve_model(client, model)
        show_change(client, client.request("POST", f"/v1/models/{name}/rollback").json())

    run(go)


@app.command()
def retire(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument()],
    undo: Annotated[bool, typer.Option("--undo", help="serve the model again")] = False,
) -> None:
    """Unload a model everywhere on purpose (enabled=false)."""
    client = client_of(ctx)
    run(lambda: update_policy(client, model, {"enabled": undo}))


NodeArg = Annotated[str | None, typer.Argument(help="one node (default: all)")]


def _operation(ctx: typer.Context, operation: str, node: str | None) -> None:
    client = client_of(ctx)
    path = f"/v1/nodes/{node}/{operation}" if node else f"/v1/cluster/{operation}"
    result = run(lambda: client.request("POST", path).json())
    client.emit(result, render.operation_table(result))
    if not result["ok"]:
        failed = [n["hostname"] for n in result["nodes"] if not n["ok"]]
        fail(f"{operation} failed on {len(failed)} node(s): {', '.join(failed)}")


@app.command()
def sync(ctx: typer.Context, node: NodeArg = None) -> None:
    """Make nodes sync now."""
    _operation(ctx, "sync", node)


@app.command()
def gc(ctx: typer.Context, node: NodeArg = None) -> None:
    """Make nodes garbage-collect now."""
    _operation(ctx, "gc", node)


@app.command()
def audit(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="only this model")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
) -> None:
    """Who changed what, newest first."""
    client = client_of(ctx)
    params: dict[str, Any] = {"limit": limit} | ({"model": model} if model else {})
    result = run(lambda: client.get("/v1/audit", **params))
    client.emit(result, render.audit_table(result))


@app.command()
def diff(ctx: typer.Context) -> None:
    """What the fleet would change if synced now: desired (bucket) vs live, per node and model."""
    client = client_of(ctx)
    rows = run(lambda: render.compute_diff(client.get("/v1/models"), client.get("/v1/cluster", refresh="true")))
    client.emit(rows, render.diff_table(rows))


def main() -> None:
    """Console script entry point."""
    app()


if __name__ == "__main__":
    main()
