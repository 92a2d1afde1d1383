"""RUNBOOK.md says what the deployed stack does: the on-call reader acts on it at 3 a.m."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.deploy.conftest import REPO, RUNBOOK

SHORT_NAMES = {"puller": "remote_model_puller", "config_manager": "config_manager", "master": "master"}
SHORT_NAMES["tfserving"] = "tfserving"
ALERT_TOPICS = [
    "node up",
    "load failures",
    "reload staleness",
    "version skew",
    "puller failures",
    "mass-removal alarm",
    "free disk",
]


@pytest.fixture(scope="module")
def runbook() -> str:
    return RUNBOOK.read_text()


def section(text: str, title: str) -> str:
    """The body of the ``## <number> <title>`` section."""
    match = re.search(rf"^## \d+\. {re.escape(title)}.*?$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, title
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    """Cells of the rows of the first markdown table in ``text`` (header and rule lines included)."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    return rows


def test_no_personal_contacts_or_original_host_names(runbook: str) -> None:
    assert not re.search(r"[\w.+-]+@[\w-]+\.[\w.]+", runbook), "e-mail address"
    assert not re.search(r"\+?\d[\d ()-]{8,}\d", runbook.replace("5000000", "")), "phone number"
    assert "icfsys" not in runbook


def test_states_the_impact_on_search(runbook: str) -> None:
    impact = section(runbook, "Impact on search")
    for fact in ("600 ms", "25 %", "killswitch", "60", "15"):
        assert fact in impact


def test_fleetctl_commands_are_the_ones_fleetctl_has(runbook: str) -> None:
    from services.master.fleetctl import app

    commands = {command.name or command.callback.__name__ for command in app.registered_commands}  # type: ignore[union-attr]
    commands |= {group.name for group in app.registered_groups if group.name}  # fleetctl state show|restore|accept
    used = set(re.findall(r"(?:`|^|\s)fleetctl (?:--[a-z-]+ \S+ )*([a-z]+)\b(?! /)", runbook, re.MULTILINE))
    assert used >= {
        "status",
        "models",
        "nodes",
        "rollback",
        "retire",
        "sync",
        "gc",
        "pin",
        "label",
        "audit",
        "diff",
        "state",
    }
    assert used <= commands
    for option in re.findall(r"`fleetctl [^`]*?(--[a-z-]+)", runbook):
        assert option in {"--remove", "--undo", "--model", "--master", "--json", "--token-file"}, option


def test_every_docker_command_names_a_service_of_the_stack(runbook: str, services: dict[str, Any]) -> None:
    named = set(re.findall(r"\bdocker service [a-z]+ (?:--?[a-z-]+(?:[ =]\S+)? )*modelfleet_([a-z_<>]+)", runbook))
    assert {"tfserving", "master", "config_manager"} <= named
    assert named <= set(services) | {"<service>"}


def test_metrics_table_covers_every_alert_and_follows_the_naming(runbook: str) -> None:
    metrics = section(runbook, "Metrics and alerts")
    topics = [row[0] for row in table_rows(metrics)]
    for topic in ALERT_TOPICS:
        assert topic in topics
    names = set(re.findall(r"\bmodelfleet_[a-z_]+", metrics)) - {
        "modelfleet_fleet",
        "modelfleet_tfserving",
    }  # network, service
    assert len(names) >= 8
    for name in names:
        assert re.fullmatch(r"modelfleet_(master|config_manager|puller)_[a-z]+(_[a-z]+)*", name), name
    for name in re.findall(r"\bmodelfleet_[a-z_]+_total\b", metrics):
        assert f"increase({name}" in metrics  # counters are alerted on their increase, never their value


def test_resources_table_matches_the_stack(runbook: str, services: dict[str, Any]) -> None:
    rows = {row[0]: row for row in table_rows(section(runbook, "Resources"))}
    gib, mib = 1024**3, 1024**2
    assert int(services["tfserving"]["deploy"]["resources"]["reservations"]["memory"]) == 12 * gib
    assert "reservation 12G (no limit)" in rows["tfserving"][-1]
    for name in ("config_manager", "remote_model_puller", "master"):
        limits = services[name]["deploy"]["resources"]["limits"]
        assert int(limits["memory"]) == 500 * mib
        assert f"limit 500M, {float(limits['cpus']):g} CPU" in rows[name][-1]


def test_settings_table_matches_the_stack(runbook: str, services: dict[str, Any]) -> None:
    rows = table_rows(section(runbook, "Settings reference"))[2:]
    assert len(rows) >= 14
    for variable, who, value in rows:
        variable = variable.strip("`")
        targets = ["remote_model_puller", "config_manager", "master"] if who == "all three" else []
        targets += [SHORT_NAMES[name.strip()] for name in who.split(",") if name.strip() in SHORT_NAMES]
        assert targets, variable
        for name in targets:
            environment = services[name]["environment"]
            if value.startswith("unset"):
                assert variable not in environment, (variable, name)
                continue
            assert variable in environment, (variable, name)
            stated = value.split("`")[1] if value.startswith("`") else ""
            if stated and not stated.startswith("$"):
                assert environment[variable] == stated, (variable, name)


def exported_metric_names() -> set[str]:
    """Every metric name the three services export (counters with their ``_total`` suffix)."""
    from prometheus_client import CollectorRegistry

    from services.config_manager.metrics import Metrics
    from services.master.metrics import MasterMetrics
    from services.remote_model_puller.metrics import PullerMetrics

    master = CollectorRegistry()
    MasterMetrics(master)
    names: set[str] = set()
    for registry in (Metrics().registry, PullerMetrics().registry, master):
        for family in registry.collect():
            names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    # master's fleet gauges are built at scrape time from the cluster view: take them from the source.
    source = (REPO / "services" / "master" / "metrics.py").read_text()
    names.update(re.findall(r'"(modelfleet_master_[a-z_]+)"', source))
    return names


def test_every_metric_the_runbook_names_is_exported(runbook: str) -> None:
    metrics = section(runbook, "Metrics and alerts")
    named = set(re.findall(r"\bmodelfleet_[a-z_]+", metrics)) - {"modelfleet_fleet", "modelfleet_tfserving"}
    assert named <= exported_metric_names()
