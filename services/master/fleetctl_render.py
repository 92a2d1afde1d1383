"""fleetctl's rendering and the ``diff`` computation (pure functions over master's JSON answers)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

JSON = dict[str, Any]


def fmt_versions(values: list[int] | None) -> str:
    if values is None:
        return "?"
    return ",".join(str(v) for v in sorted(values)) or "-"


def fmt_labels(labels: dict[str, int] | None) -> str:
    if not labels:
        return "-"
    return " ".join(f"{k}={v}" for k, v in sorted(labels.items()))


def fmt_states(live: list[JSON] | None) -> str:
    if not live:
        return "-"
    return " ".join(f"{v['version']}:{v['state']}" for v in sorted(live, key=lambda v: v["version"]))


def fmt_failed(entry: JSON) -> str:
    parts = [f"v{v}: {reason}" for v, reason in sorted(entry.get("failed", {}).items())]
    parts += [f"held v{h['version']}: {h['reason']}" for h in entry.get("held", [])]
    parts += [
        f"capacity v{c['version']}: needs ~{c['bytes_needed']} bytes, waits for memory"
        for c in entry.get("capacity", [])
    ]
    parts += list(entry.get("problems", []))
    return "; ".join(parts) or "-"


def node_health(node: JSON) -> str:
    if node["healthy"]:
        return "[green]healthy[/]" + (" [yellow](stale)[/]" if node["stale"] else "")
    errors = [f"{role}: {s['last_error']}" for role, s in node["sidecars"].items() if s.get("last_error")]
    return "[red]unhealthy[/]" + (f" ({'; '.join(errors)})" if errors else "")


def status_table(cluster: JSON) -> Table:
    """Nodes by models: serve, AVAILABLE, states, labels, failures, converged."""
    age = cluster.get("age_seconds")
    title = f"fleet {'converged' if cluster['converged'] else 'NOT converged'}: "
    title += f"{cluster['nodes_healthy']}/{cluster['nodes_total']} nodes healthy"
    title += f", polled {age:.1f}s ago" if age is not None else ", not polled yet"
    alarm = cluster.get("state_alarm")
    if alarm:
        title += f"\n[red]STATE DOCUMENT ALARM ({alarm['kind']}):[/] {alarm['message']}"
    table = Table(title=title)
    for column in ("node", "health", "model", "serve", "available", "states", "labels", "failures", "converged"):
        table.add_column(column)
    for node in cluster["nodes"]:
        models = node["models"] or {"-": None}
        for model, entry in sorted(models.items()):
            if entry is None:
                table.add_row(node["hostname"], node_health(node), "-", "", "", "", "", "", "")
                continue
            table.add_row(
                node["hostname"],
                node_health(node),
                model,
                fmt_versions(entry["serve"]),
                fmt_versions(entry["available"]),
                fmt_states(entry.get("live")),
                fmt_labels(entry.get("config_labels")),
                fmt_failed(entry),
                "[green]yes[/]" if entry["converged"] else "[yellow]no[/]",
            )
    return table


def models_table(listing: JSON) -> Table:
    table = Table(title=f"models (desired-state generation {listing['generation']})")
    for column in ("model", "complete", "serve", "keep", "labels", "overrides", "not complete"):
        table.add_column(column)
    for model in listing["models"]:
        effective = model["effective"]
        overrides = model.get("overrides")
        shown = (
            "default"
            if not overrides
            else ", ".join(
                f"{k}={v}"
                for k, v in overrides.items()
                if v not in (None, {}, [], True) or (k == "enabled" and v is False)
            )
        )
        incomplete = "; ".join(f"{v}: {why}" for v, why in model.get("incomplete", {}).items()) or "-"
        table.add_row(
            model["name"],
            fmt_versions(model["complete_versions"]),
            "retired" if not effective["enabled"] else fmt_versions(effective["serve"]),
            fmt_versions(effective["keep"]),
            fmt_labels(effective["labels"]),
            shown or "default",
            incomplete,
        )
    return table


def nodes_table(listing: JSON) -> Table:
    table = Table(title="nodes")
    for column in ("node", "role", "healthy", "stale", "failures", "last poll error", "url", "version"):
        table.add_column(column)
    for node in listing["nodes"]:
        for role, sidecar in sorted(node["sidecars"].items()):
            table.add_row(
                node["hostname"],
                role,
                "[green]yes[/]" if sidecar["healthy"] else "[red]no[/]",
                "yes" if sidecar["stale"] else "no",
                str(sidecar["consecutive_failures"]),
                sidecar.get("last_error") or "-",
                sidecar["base_url"],
                sidecar["software_version"],
            )
    return table


def operation_table(result: JSON) -> Table:
    table = Table(
        title=f"{result['operation']}: {result['nodes_ok']}/{result['nodes_total']} nodes ok "
        f"in {result['elapsed_seconds']:.2f}s"
    )
    for column in ("node", "role", "result"):
        table.add_column(column)
    for node in result["nodes"]:
        for call in node["results"]:
            outcome = "[green]ok[/]" if call["ok"] else f"[red]{call.get('error') or 'failed'}[/]"
            table.add_row(node["hostname"], call["role"], outcome)
    return table


def audit_table(audit: JSON) -> Table:
    table = Table(title="audit (newest first)")
    for column in ("at", "actor", "model", "action", "served before", "generation"):
        table.add_column(column)
    for entry in audit["entries"]:
        table.add_row(
            entry["at"],
            entry["actor"],
            entry["model"],
            entry["action"],
            fmt_versions(entry.get("serving_before")),
            str(entry.get("generation")),
        )
    return table


def compute_diff(models: JSON, cluster: JSON) -> list[JSON]:
    """Per healthy node and model: what a sync now would change (desired from the bucket vs live).

    ``load``: versions to serve that are not AVAILABLE; ``unload``: AVAILABLE versions no longer wanted;
    ``download``: wanted versions not on disk yet; ``labels``: label moves; ``blocked``: wanted versions
    recorded as failed on the node (not retried until their bytes change; what serves now stays).
    Unchanged pairs are omitted.
    """
    wanted = {m["name"]: m["effective"] for m in models["models"]}
    rows: list[JSON] = []
    for node in cluster["nodes"]:
        if not node["healthy"]:
            rows.append({"node": node["hostname"], "model": "*", "unreachable": True})
            continue
        for model in sorted(set(wanted) | set(node["models"])):
            effective = wanted.get(model, {"serve": [], "labels": {}, "enabled": False})
            entry = node["models"].get(model, {})
            want = set(effective["serve"]) if effective.get("enabled", True) else set()
            have = set(entry.get("available") or [])
            on_disk = set(entry.get("on_disk") or [])
            failed = {int(v) for v in entry.get("failed", {})}
            labels_want = effective.get("labels", {}) if want else {}
            labels_have = entry.get("config_labels") or {}
            change = {
                "node": node["hostname"],
                "model": model,
                "load": sorted(want - have - failed),
                "blocked": sorted((want - have) & failed),
                # What serves now stays until something wanted can be AVAILABLE (DESIGN.md).
                "unload": sorted(have - want) if (want - failed) or not want else [],
                "download": sorted(want - on_disk) if entry.get("on_disk") is not None else sorted(want - have),
                "labels": {
                    k: [labels_have.get(k), labels_want.get(k)]
                    for k in set(labels_want) | set(labels_have)
                    if labels_want.get(k) != labels_have.get(k)
                },
            }
            if any(change[k] for k in ("load", "unload", "labels", "download", "blocked")):
                rows.append(change)
    return rows


def diff_table(rows: list[JSON]) -> Table:
    table = Table(title="what a sync now would change" if rows else "in sync: nothing would change")
    for column in ("node", "model", "download", "load", "unload", "labels (now → wanted)", "blocked (failed)"):
        table.add_column(column)
    for row in rows:
        if row.get("unreachable"):
            table.add_row(row["node"], "*", "[red]node unhealthy: unknown[/]", "", "", "", "")
            continue
        labels = " ".join(
            f"{k}: {old if old is not None else '-'} → {new if new is not None else '-'}"
            for k, (old, new) in sorted(row["labels"].items())
        )
        table.add_row(
            row["node"],
            row["model"],
            fmt_versions(row["download"]),
            fmt_versions(row["load"]),
            fmt_versions(row["unload"]),
            labels or "-",
            fmt_versions(row["blocked"]) if row["blocked"] else "-",
        )
    return table


def state_table(report: JSON) -> Table:
    """The state-document report: alarm, what rules, what the bucket holds."""
    alarm = report.get("alarm")
    title = f"[red]ALARM {alarm['kind']}[/]: {alarm['message']}" if alarm else "state document: ok (the bucket's rules)"
    table = Table(title=title)
    for column in ("", "present", "generation", "revision", "models", "retired"):
        table.add_column(column)
    for name in ("ruling", "bucket"):
        side = report[name]
        table.add_row(
            name,
            "yes" if side["present"] else "no",
            str(side["generation"]),
            "-" if side["revision"] is None else str(side["revision"]),
            ", ".join(side["models"]) or "-",
            ", ".join(side["retired"]) or "-",
        )
    return table
