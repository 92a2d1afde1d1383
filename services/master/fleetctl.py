"""fleetctl: the operators' CLI for master (HTTP only).

``--master`` (env FLEETCTL_MASTER, default http://localhost:80); admin token from env FLEETCTL_TOKEN or
``--token-file``; ``--json`` prints master's JSON answers. Exit 0 on success, 1 when master refuses or a
node operation partly fails, 2 when master cannot be reached. Commands taking a model accept it as the
first argument, or infer it when the bucket holds exactly one model (``fleetctl label stable 2``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from services.master import fleetctl_render as render
from services.master.fleetctl_client import Client, CliError, client_of, current_etag, fail, run
from services.master.fleetctl_golden import golden_app
from services.master.fleetctl_rollout import rollout_app, with_rollouts

MASTER_FIELDS = ("rollout_state", "nodes", "bad_versions")
app = typer.Typer(help="Drive a modelfleet fleet through master's admin API.", no_args_is_help=True)


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
    for name in MASTER_FIELDS:  # master keeps what it wrote (a rollout, bad versions) when not sent
        policy.pop(name, None)
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
    """Nodes by models: versions, labels, states, failures; then the rollouts in progress."""
    client = client_of(ctx)
    cluster = run(lambda: client.get("/v1/cluster", refresh=str(refresh).lower()))
    rollouts = run(lambda: client.get("/v1/rollouts"))["rollouts"]
    client.emit({**cluster, "rollouts": rollouts}, with_rollouts(render.status_table(cluster), rollouts))


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
        headers = {"If-Match": current_etag(client, f"/v1/models/{model}")}
        if remove:
            result = client.request("DELETE", f"/v1/models/{model}/labels/{rest[0]}", headers=headers)
        else:
            version = parse_versions([rest[1]])[0]
            path = f"/v1/models/{model}/labels/{rest[0]}"
            result = client.request("PUT", path, body={"version": version}, headers=headers)
        show_change(client, result.json())

    run(go)


@app.command()
def rollback(ctx: typer.Context, model: Annotated[str | None, typer.Argument()] = None) -> None:
    """Pin the versions served before the last serving change (see docs/master.md)."""
    client = client_of(ctx)

    def go() -> None:
        name = resolve_model(client, model)
        headers = {"If-Match": current_etag(client, f"/v1/models/{name}")}
        show_change(client, client.request("POST", f"/v1/models/{name}/rollback", headers=headers).json())

    run(go)


@app.command()
def retire(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument()],
    undo: Annotated[bool, typer.Option("--undo", help="serve the model again")] = False,
) -> None:
    """Unload a model everywhere on purpose (enabled=false); also one gone from the bucket that nodes serve."""
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


app.add_typer(golden_app, name="golden")
app.add_typer(rollout_app, name="rollout")

state_app = typer.Typer(help="The desired-state document's alarm and the admin's decision on it.")
app.add_typer(state_app, name="state")


@state_app.command("show")
def state_show(ctx: typer.Context) -> None:
    """Whether the bucket's document rules, or the last good one does (missing or reset)."""
    client = client_of(ctx)
    report = run(lambda: client.get("/v1/state"))
    client.emit(report, render.state_table(report))


def _decide(ctx: typer.Context, action: str) -> None:
    client = client_of(ctx)

    def go() -> Any:
        headers = {"If-Match": current_etag(client, "/v1/state")}
        return client.request("POST", f"/v1/state/{action}", headers=headers).json()

    decision = run(go)
    kept = decision.get("kept_retired") or []
    summary = f"state {action}: generation {decision['generation']}, revision {decision['revision']}"
    summary += f"; still retired: {', '.join(kept)}" if kept else ""
    client.emit(decision, summary)


@state_app.command("restore")
def state_restore(ctx: typer.Context) -> None:
    """Write the last good document back to the bucket."""
    _decide(ctx, "restore")


@state_app.command("accept")
def state_accept(ctx: typer.Context) -> None:
    """Take what the bucket holds now (or its absence) as the truth; retired models stay retired."""
    _decide(ctx, "accept")


def main() -> None:
    """Console script entry point."""
    app()


if __name__ == "__main__":
    main()
