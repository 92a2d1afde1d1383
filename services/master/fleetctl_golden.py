"""``fleetctl golden add|list|show|remove|test``: golden requests checked on every node before a new version
of the model takes traffic (master's ``/v1/golden``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from services.master.fleetctl_client import Client, CliError, client_of, current_etag, run

golden_app = typer.Typer(help="Golden requests: checked on every node before a new version takes traffic.")

ModelArg = Annotated[str, typer.Argument(help="the model")]


def etag_or_new(client: Client, path: str) -> str:
    """The set's ETag, or ``"0"`` (create only) when the model has none yet."""
    try:
        return current_etag(client, path)
    except CliError as exc:
        if exc.status == 404:
            return '"0"'
        raise


def read_set(model: str, file: Path) -> dict[str, Any]:
    """The set from ``file``: a whole golden set, or just its list of requests (the model is filled in)."""
    try:
        loaded = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {file}: {exc}") from exc
    if isinstance(loaded, list):
        return {"model": model, "requests": loaded}
    if not isinstance(loaded, dict):
        raise CliError(f"{file}: expected a golden set object or a list of requests")
    return {**loaded, "model": loaded.get("model", model)}


@golden_app.command("add")
def golden_add(
    ctx: typer.Context,
    model: ModelArg,
    file: Annotated[Path, typer.Argument(help="JSON: a golden set, or a list of requests")],
) -> None:
    """Upload (or replace) the model's golden set; master checks it fits the version serving now."""
    client = client_of(ctx)
    body = read_set(model, file)

    def go() -> Any:
        headers = {"If-Match": etag_or_new(client, f"/v1/golden/{model}")}
        return client.request("PUT", f"/v1/golden/{model}", body=body, headers=headers).json()

    change = run(go)
    client.emit(
        change,
        f"{model}: golden set of {change['requests']} requests (digest {change['digest']}) fits version "
        f"{change['validated_against']}, generation {change['generation']}",
    )


@golden_app.command("list")
def golden_list(ctx: typer.Context) -> None:
    """Every model's golden set."""
    client = client_of(ctx)
    listing = run(lambda: client.get("/v1/golden"))
    table = Table("model", "requests", "digest", "updated", "by", title="golden sets")
    for item in listing["sets"]:
        table.add_row(
            item["model"], str(item["requests"]), item["digest"], item["updated_at"] or "-", item["updated_by"] or "-"
        )
    client.emit(listing, table)


@golden_app.command("show")
def golden_show(ctx: typer.Context, model: ModelArg) -> None:
    """The model's golden set as stored (JSON)."""
    client = client_of(ctx)
    typer.echo(json.dumps(run(lambda: client.get(f"/v1/golden/{model}")), indent=2))


@golden_app.command("remove")
def golden_remove(ctx: typer.Context, model: ModelArg) -> None:
    """Remove the set: new versions of the model then take traffic unchecked."""
    client = client_of(ctx)

    def go() -> Any:
        headers = {"If-Match": current_etag(client, f"/v1/golden/{model}")}
        return client.request("DELETE", f"/v1/golden/{model}", headers=headers).json()

    client.emit(run(go), f"{model}: golden set removed")


@golden_app.command("test")
def golden_test(
    ctx: typer.Context,
    model: ModelArg,
    node: Annotated[str | None, typer.Option(help="only this node")] = None,
) -> None:
    """Run the set on every node (or one) against the version each serves now; exit 1 unless all pass."""
    client = client_of(ctx)
    params = {"node": node} if node else None
    result = run(lambda: client.request("POST", f"/v1/golden/{model}/test", params=params).json())
    table = Table("node", "version", "result", "why", title=f"golden test of {model} (digest {result['digest']})")
    for item in result["nodes"]:
        answer = item.get("result") or {}
        failures = [
            f"{v['request']}: {'; '.join(v['failures'])}" for v in answer.get("verdicts", []) if not v["passed"]
        ]
        why = item.get("error") or " | ".join(failures) or ""
        table.add_row(item["hostname"], str(answer.get("version", "-")), "pass" if item["ok"] else "FAIL", why)
    client.emit(result, table)
    if not result["passed"]:
        raise typer.Exit(1)
