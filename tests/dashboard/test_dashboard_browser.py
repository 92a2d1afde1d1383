"""Issue 18: master's dashboard in a real headless chromium against a 2-node local fleet.

Wrong token refused; the matrix shows what the nodes serve; a read token sees everything but cannot act;
a failing version shows TF Serving's reason, its markup as text; a rollback clicked in the page changes
what the nodes serve and lands in the audit trail; rollouts render the announced /v1/rollouts shape.
Screenshots of each step are written under each test's tmp_path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Route, expect

from services.local_fleet.convergence import wait_available
from services.local_fleet.fleet import ADMIN_NAME, READ_NAME, LocalFleet
from services.local_fleet.savedmodels import write_model
from tests.dashboard.conftest import MARKUP, PHONE, run_async

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def sign_in(page: Page, fleet: LocalFleet, token: str) -> None:
    """Open the page and sign in with the keyboard only (tab to the field, type, Enter)."""
    page.goto(f"{fleet.master_url}/")
    page.keyboard.press("Tab")
    expect(page.locator("#token")).to_be_focused()
    page.keyboard.type(token)
    page.keyboard.press("Enter")


def cell(page: Page, node: str, model: str) -> Any:
    return page.locator(f'#matrix button[data-node="{node}"][data-model="{model}"]')


def page_errors(errors: list[str]) -> list[str]:
    """Console errors other than the browser's note about a refused request (401/403 are expected)."""
    return [e for e in errors if "Failed to load resource" not in e]


def test_wrong_token_is_refused(fleet: LocalFleet, open_page: Any) -> None:
    page, screens, errors = open_page()
    sign_in(page, fleet, "not-a-token")
    expect(page.locator("#error")).to_contain_text("Token refused (401)")
    expect(page.locator("#board")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0
    assert "not-a-token" not in page.url
    screens.shot("wrong-token-refused")
    assert page_errors(errors) == []


def test_matrix_shows_the_served_versions(fleet: LocalFleet, open_page: Any) -> None:
    page, screens, errors = open_page()
    sign_in(page, fleet, fleet.admin_token)
    expect(page.locator("#who")).to_have_text(f"{ADMIN_NAME} (admin)")
    for node in fleet.nodes:
        expect(cell(page, node.hostname, "ranker").locator(".serving")).to_have_text("v2")
        expect(cell(page, node.hostname, "scorer").locator(".serving")).to_contain_text("v1")
        expect(page.locator("#matrix th", has_text=node.hostname)).to_contain_text("healthy")
    expect(page.locator("#rollouts-note")).to_have_text("No rollouts.")  # master's /v1/rollouts: none yet
    expect(page.locator("#actions")).to_be_visible()
    # The token lives in sessionStorage only, never in a URL.
    assert page.evaluate("sessionStorage.getItem('modelfleet.token')") == fleet.admin_token
    assert fleet.admin_token not in page.url
    screens.shot("matrix-1280x800")
    # Live: one round every 2 s, start to start; clicks (each asks for a round now) never add polling loops.
    first = cell(page, fleet.nodes[0].hostname, "ranker")
    for _ in range(3):
        first.click()
    expect(page.locator("#details")).to_be_visible()
    polls: list[str] = []
    page.on("request", lambda request: polls.append(request.url) if "/v1/cluster" in request.url else None)
    page.wait_for_timeout(4_500)
    assert 1 <= len(polls) <= 4, polls  # three loops (a round per click, each rescheduling) would make ~9
    assert page_errors(errors) == []


def test_read_token_sees_everything_but_cannot_act(fleet: LocalFleet, open_page: Any) -> None:
    page, screens, errors = open_page(PHONE)
    sign_in(page, fleet, fleet.read_token)
    expect(page.locator("#who")).to_have_text(f"{READ_NAME} (read-only)")
    expect(cell(page, fleet.nodes[0].hostname, "ranker").locator(".serving")).to_have_text("v2")
    expect(page.locator("#audit")).to_be_visible()
    expect(page.locator("#actions")).to_be_hidden()
    expect(page.locator("#read-only-note")).to_be_visible()
    assert page.locator("#actions button:enabled").count() == 0
    # Phone width: the page does not scroll sideways (wide tables scroll in their own box).
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screens.shot("read-only-390px")
    # Even a hand-made request with the read token is refused by master.
    status = page.evaluate(
        """async (token) => (await fetch('/v1/models/ranker/rollback', {method: 'POST',
            headers: {Authorization: 'Bearer ' + token, 'If-Match': '*'}})).status""",
        fleet.read_token,
    )
    assert status == 403
    with fleet.admin() as client:
        assert [e for e in client.get("/v1/audit").json()["entries"] if e["actor"] == READ_NAME] == []
    assert page_errors(errors) == []


def test_failing_version_shows_its_reason_as_text(fleet: LocalFleet, open_page: Any) -> None:
    page, screens, errors = open_page()
    response = page.goto(f"{fleet.master_url}/ui/")
    assert response is not None
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    sign_in(page, fleet, fleet.admin_token)
    node = fleet.nodes[0].hostname
    failing = cell(page, node, "scorer")
    expect(failing).to_have_class("cell failing", timeout=90_000)  # scorer v2 was published by the fixture
    expect(failing.locator(".serving")).to_have_text("v1")  # the last good version keeps serving
    screens.shot("failing-version-in-matrix")
    failing.focus()
    page.keyboard.press("Enter")
    reasons = page.locator("#details .reasons")
    expect(reasons).to_contain_text("v2 failed: ")
    expect(reasons).to_contain_text(f"Failed to parse warmup record: {MARKUP}")
    assert MARKUP in (failing.get_attribute("title") or "")  # on hover too
    # Shown as text: no element was created from it, nothing ran.
    assert page.locator("#injected").count() == 0
    assert page.locator("main img, main b").count() == 0
    assert page.evaluate("document.body.dataset.pwned") is None
    screens.shot("failure-reason-as-text")
    # The CSP's Trusted Types rule is live: the browser itself refuses an HTML string.
    assert page_errors(errors) == []
    html_sink = "() => { try { document.body.innerHTML = '<b>x</b>'; return 'taken' } catch (e) { return e.name } }"
    assert page.evaluate(html_sink) == "TypeError"


def test_rollouts_render_the_announced_shape_and_send_if_match(fleet: LocalFleet, open_page: Any) -> None:
    """/v1/rollouts comes with issue 16; its announced shape is served here by the browser's router."""
    page, screens, errors = open_page()
    listing = {
        "generation": 7,
        "rollouts": [
            {
                "model": "ranker",
                "version": 3,
                "previous": [2],
                "state": "baking",
                "wave": 1,
                "waves": [{"nodes": ["node-1"], "state": "baking"}, {"nodes": ["node-2"], "state": "pending"}],
                "bake_remaining_seconds": 42,
                "waiting_for": None,
                "reason": None,
                "started_at": "2026-12-03T07:00:00Z",
                "updated_at": "2026-12-03T07:01:00Z",
            },
            {
                "model": "scorer",
                "version": 2,
                "previous": [1],
                "state": "reverted",
                "wave": 1,
                "waves": [{"nodes": ["node-1"], "state": "reverted"}],
                "bake_remaining_seconds": None,
                "waiting_for": None,
                "reason": "golden request <b>r1</b> failed",
                "started_at": "2026-12-03T07:00:00Z",
                "updated_at": "2026-12-03T07:02:00Z",
            },
        ],
    }
    posts: list[dict[str, Any]] = []

    def rollouts(route: Route) -> None:
        if route.request.method == "GET":
            route.fulfill(status=200, json=listing, headers={"ETag": '"7"'})
        else:
            posts.append({"url": route.request.url, "if_match": route.request.headers.get("if-match")})
            route.fulfill(status=200, body=json.dumps({"model": "ranker", "state": "paused"}))

    page.route("**/v1/rollouts**", rollouts)
    sign_in(page, fleet, fleet.admin_token)
    rows = page.locator("#rollouts tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("baking")
    expect(rows.nth(0)).to_contain_text("42 s")
    expect(page.locator("#alarms")).to_contain_text("rollout-reverted")
    expect(page.locator("#alarms")).to_contain_text("golden request <b>r1</b> failed")
    assert page.locator("main b").count() == 0
    assert rows.nth(1).get_by_role("button").count() == 0  # nothing to pause or abort once reverted
    rows.nth(0).get_by_role("button", name="pause").click()
    expect(page.locator("#confirm")).to_be_visible()
    screens.shot("rollout-pause-confirmation")
    page.locator("#confirm-ok").click()
    expect(page.locator("#action-result")).to_contain_text("pause ranker")
    assert posts == [{"url": f"{fleet.master_url}/v1/rollouts/ranker/pause", "if_match": '"7"'}]
    assert page_errors(errors) == []


def test_a_real_rollout_shows_in_the_page_and_is_paused_and_aborted_from_it(
    fleet: LocalFleet, open_page: Any, tmp_path: Path
) -> None:
    """Issue 16's API behind the same page: a model under a rollout policy, a new version held at wave 1."""
    models = tmp_path / "waved"
    fleet.publish("waved", write_model(models, 1))
    run_async(wait_available(fleet.nodes, "waved", [1], timeout=120))
    with fleet.admin() as admin:
        etag = admin.get("/v1/models/waved").headers["etag"]
        policy = {"rollout": {"waves": [1, "100%"], "bake_seconds": 3600}}
        answer = admin.put("/v1/models/waved", json=policy, headers={"If-Match": etag})
        assert answer.status_code == 200, answer.text
    fleet.publish("waved", write_model(models, 2))
    page, screens, errors = open_page()
    sign_in(page, fleet, fleet.admin_token)
    row = page.locator("#rollouts tbody tr").filter(has_text="waved")
    expect(row).to_contain_text("v2", timeout=90_000)
    expect(row.get_by_role("button", name="pause")).to_be_visible(timeout=90_000)
    screens.shot("real-rollout")
    row.get_by_role("button", name="pause").click()
    page.locator("#confirm-ok").click()
    expect(page.locator("#action-result")).to_contain_text("pause waved")
    with fleet.admin() as admin:
        assert admin.get("/v1/rollouts/waved").json()["state"] == "paused"
    expect(row).to_contain_text("paused")
    row.get_by_role("button", name="abort").click()
    page.locator("#confirm-ok").click()
    expect(page.locator("#action-result")).to_contain_text("abort waved")
    with fleet.admin() as admin:
        assert admin.get("/v1/rollouts/waved").json()["state"] == "aborted"
        audit = admin.get("/v1/audit", params={"model": "waved"}).json()["entries"]
    assert [e["actor"] for e in audit[:2]] == [ADMIN_NAME, ADMIN_NAME], audit[:2]
    screens.shot("real-rollout-aborted")
    assert page_errors(errors) == []


def test_rollback_clicked_in_the_page_changes_what_nodes_serve(fleet: LocalFleet, open_page: Any) -> None:
    page, screens, errors = open_page()
    sign_in(page, fleet, fleet.admin_token)
    expect(cell(page, fleet.nodes[0].hostname, "ranker").locator(".serving")).to_have_text("v2")
    page.locator("#action-model").select_option("ranker")
    page.get_by_role("button", name="Roll back").click()
    expect(page.locator("#confirm-text")).to_contain_text("Roll back ranker?")
    screens.shot("rollback-confirmation")
    page.locator("#confirm-ok").click()
    expect(page.locator("#action-result")).to_contain_text("ranker: serve v1")
    # The nodes' model servers themselves (not master's view) now serve v1 only.
    run_async(wait_available(fleet.nodes, "ranker", [1], timeout=90))
    for node in fleet.nodes:
        expect(cell(page, node.hostname, "ranker").locator(".serving")).to_have_text("v1", timeout=30_000)
    first = page.locator("#audit tbody tr").first
    expect(first).to_contain_text(ADMIN_NAME)
    expect(first).to_contain_text("ranker")
    expect(first).to_contain_text("rollback")
    expect(first).to_contain_text("v2")  # served before
    screens.shot("after-rollback-audit")
    with fleet.admin() as client:
        newest = client.get("/v1/audit", params={"model": "ranker", "limit": 1}).json()["entries"][0]
    assert (newest["actor"], newest["action"], newest["serving_before"]) == (ADMIN_NAME, "rollback", [2])
    assert page_errors(errors) == []


def test_label_move_and_sync_from_the_page(fleet: LocalFleet, open_page: Any) -> None:
    page, screens, errors = open_page()
    sign_in(page, fleet, fleet.admin_token)
    page.locator("#action-model").select_option("ranker")
    page.get_by_label("Label").fill("stable")
    page.get_by_label("Version", exact=True).fill("1")
    page.get_by_role("button", name="Move label", exact=True).click()
    expect(page.locator("#confirm-text")).to_contain_text("Move label stable of ranker to version 1?")
    page.locator("#confirm-ok").click()
    expect(page.locator("#action-result")).to_contain_text("labels stable=1")
    for node in fleet.nodes:  # config_manager moves the label once v1 is AVAILABLE (it is)
        expect(cell(page, node.hostname, "ranker").locator(".labels")).to_have_text("stable=1", timeout=30_000)
    expect(page.locator("#audit tbody tr").first).to_contain_text("label stable=1")
    page.locator("#action-node").select_option("")
    page.get_by_role("button", name="Sync", exact=True).click()
    expect(page.locator("#confirm-text")).to_contain_text("Sync every node now?")
    page.locator("#confirm-ok").click()
    expect(page.locator("#action-result")).to_contain_text(f"sync: {len(fleet.nodes)}/{len(fleet.nodes)} nodes ok")
    screens.shot("label-moved-and-synced")
    assert page_errors(errors) == []


def test_alarms_show_mass_removal_and_a_missing_state_document(fleet: LocalFleet, open_page: Any) -> None:
    """Last: it breaks the bucket on purpose (scorer's versions and the state document vanish)."""
    page, screens, errors = open_page()
    sign_in(page, fleet, fleet.read_token)
    expect(page.locator("#read-only-note")).to_be_visible()
    bucket = fleet.bucket()
    for blob in list(bucket.list_blobs(prefix=f"{fleet.options.prefix}/scorer/")):
        blob.delete()
    bucket.blob(f"{fleet.options.prefix}/_fleet/state.json").delete()
    alarms = page.locator("#alarms")
    # master's alarm, then each puller's (they judge the document by the same rule).
    expect(alarms.locator("li.critical", has_text="desired-state-missing")).to_contain_text(
        ["master", *(node.hostname for node in fleet.nodes)], timeout=30_000
    )
    expect(alarms.locator("li.critical", has_text="mass-removal")).to_contain_text(
        [f"{node.hostname} / scorer" for node in fleet.nodes], timeout=30_000
    )
    # Nothing was unloaded: the last good version of scorer keeps serving.
    expect(cell(page, fleet.nodes[0].hostname, "scorer").locator(".serving")).to_have_text("v1")
    screens.shot("alarms")
    assert page_errors(errors) == []
