"""``fleetctl rollout status|pause|resume|abort|promote MODEL`` and the rollouts table of ``fleetctl status``."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Group
from rich.table import Table

from services.master.fleetctl_client import client_of, current_etag, run

JSON = dict[str, Any]
ACTIVE = ("running", "paused", "baking", "waiting")

rollout_app = typer.Typer(help="Progressive rollouts: where each stands, and the operator's commands.")


def rollouts_table(rollouts: list[JSON], *, title: str = "rollouts") -> Table:
    """One row per rollout: version, state, wave, bake left, what it waits for or why it reverted."""
    table = Table(title=title)
    for column in ("model", "version", "previous", "state", "wave", "bake left", "waiting for / reason"):
        table.add_column(column)
    for r in rollouts:
        waves = r["waves"]
        wave = f"{r['wave'] + 1}/{len(waves)} ({', '.join(waves[r['wave']]['nodes'])})" if waves else "-"
        left = r.get("bake_remaining_seconds")
        table.add_row(
            r["model"],
            str(r["version"]),
            ",".join(map(str, r["previous"])) or "-",
            r["state"],
            wave,
            f"{left:.0f}s" if left is not None else "-",
            r.get("waiting_for") or r.get("reason") or "-",
        )
    return table


def active(rollouts: list[JSON]) -> list[JSON]:
    return [r for r in rollouts if r["state"] in ACTIVE]


def with_rollouts(table: Any, rollouts: list[JSON]) -> Any:
    """``fleetctl status``: the cluster table, then the rollouts in progress (if any)."""
    running = active(rollouts)
    return Group(table, rollouts_table(running, title="rollouts in progress")) if running else table


@rollout_app.command("status")
def rollout_status(ctx: typer.Context, model: Annotated[str | None, typer.Argument()] = None) -> None:
    """Every model's last rollout, or one model's with its waves."""
    client = client_of(ctx)
    if model is None:
        listing = run(lambda: client.get("/v1/rollouts"))
        client.emit(listing, rollouts_table(listing["rollouts"]))
        return
    view = run(lambda: client.get(f"/v1/rollouts/{model}"))
    waves = Table(title="waves")
    for column in ("wave", "nodes", "state"):
        waves.add_column(column)
    for index, wave in enumerate(view["waves"]):
        waves.add_row(str(index + 1), ", ".join(wave["nodes"]), wave["state"])
    client.emit(view, Group(rollouts_table([view], title=f"rollout of {model}"), waves))


def _command(ctx: typer.Context, model: str, command: str) -> None:
    client = client_of(ctx)

    def go() -> Any:
        headers = {"If-Match": current_etag(client, f"/v1/rollouts/{model}")}
        return client.request("POST", f"/v1/rollouts/{model}/{command}", headers=headers).json()

    result = run(go)
    state = (result["model"].get("overrides") or {}).get("rollout_state") or {}
    client.emit(result, f"{model}: rollout {command}: now {state.get('state', '?')}, generation {result['generation']}")


@rollout_app.command("pause")
def rollout_pause(ctx: typer.Context, model: str) -> None:
    """Freeze the rollout where it is (no wave starts, passes or reverts)."""
    _command(ctx, model, "pause")


@rollout_app.command("resume")
def rollout_resume(ctx: typer.Context, model: str) -> None:
    """Resume a paused rollout (the current wave bakes again), or restart an aborted one at wave 1."""
    _command(ctx, model, "resume")


@rollout_app.command("abort")
def rollout_abort(ctx: typer.Context, model: str) -> None:
    """Send every node back to the previous versions; the version is held, not marked bad."""
    _command(ctx, model, "abort")


@rollout_app.command("promote")
def rollout_promote(ctx: typer.Context, model: str) -> None:
    """Skip the current wave's remaining bake time."""
    _command(ctx, model, "promote")
