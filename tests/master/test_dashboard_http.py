"""The dashboard's HTTP side: the page and its files need no token and carry a strict CSP; ``/v1/whoami``
tells the page the token's role; the shipped files never build HTML from strings nor fetch elsewhere.
(The page itself, in a real browser against a local fleet: tests/dashboard/.)"""

from __future__ import annotations

import re
from collections.abc import Callable

from services.master.routes.dashboard import STATIC_DIR
from tests.master.conftest import ADMIN, READER, MasterHandle

REQUIRED_CSP = [
    "default-src 'self'",
    "script-src 'self'",
    "frame-ancestors 'none'",
    "require-trusted-types-for 'script'",
]
FILES = [("/ui/", "text/html"), ("/ui/dashboard.js", "text/javascript"), ("/ui/dashboard.css", "text/css")]


def test_page_and_files_need_no_token_and_carry_a_strict_csp(start_master: Callable[..., MasterHandle]) -> None:
    master = start_master()
    with master.client(headers={}) as client:
        root = client.get("/")
        assert root.status_code == 307 and root.headers["location"] == "/ui/"
        for path, media in FILES:
            answer = client.get(path)
            assert answer.status_code == 200 and answer.headers["content-type"].startswith(media), path
            csp = answer.headers["content-security-policy"]
            assert all(directive in csp for directive in REQUIRED_CSP), csp
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["x-frame-options"] == "DENY"
        for path in ["/ui/app.py", "/ui/..%2Fapp.py", "/ui/index.html.bak", "/ui/static"]:
            assert client.get(path).status_code == 404, path
        # The API keeps its own rules: no token, no data.
        assert client.get("/v1/cluster").status_code == 401
        assert "/ui/" not in client.get("/openapi.json").json()["paths"]


def test_whoami_names_the_token_and_its_role(start_master: Callable[..., MasterHandle]) -> None:
    master = start_master()
    with master.client(headers={}) as client:
        assert client.get("/v1/whoami", headers=ADMIN).json() == {"name": "alice", "role": "admin"}
        assert client.get("/v1/whoami", headers=READER).json() == {"name": "grafana", "role": "read"}
        refused = client.get("/v1/whoami", headers={"Authorization": "Bearer nope"})
        assert refused.status_code == 401 and refused.headers["content-type"] == "application/problem+json"
        assert client.get("/v1/whoami").status_code == 401


def test_shipped_files_use_no_inline_script_no_html_strings_and_no_other_origin() -> None:
    html = (STATIC_DIR / "index.html").read_text()
    script = (STATIC_DIR / "dashboard.js").read_text()
    css = (STATIC_DIR / "dashboard.css").read_text()
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="/ui/dashboard.js" defer>']
    assert not re.search(r"\son[a-z]+=|\sstyle=|javascript:", html), "inline handler or style"
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
    for text in (html, script, css):
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import|url\(", text), "external reference"
    assert "localStorage" not in script and "sessionStorage.setItem(TOKEN_KEY" in script
    assert "?token" not in script and "&token" not in script
