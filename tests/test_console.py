"""The auditor's console in a real browser: Debian's Chromium, headless, driven by Playwright.

A server is filled with the demo's story (`ledger demo`), then a pii classification, a declassified
transform output, an intake violation and a 500-node lineage fan. Each page is opened by its URL after
signing in, and checked in the DOM: the Verify button recomputes every step in the browser (WebCrypto)
and passes, then fails at the right step once the database is tampered with behind the service; a
principal without clearance sees no pii facet anywhere. Screenshots of every page go to
`test-artifacts/console/<database>/` (not committed; `LEDGER_CONSOLE_ARTIFACTS` moves them).
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from conftest import REPO, Server
from events import dataset, run_event
from playwright.sync_api import Browser, Page, sync_playwright
from sqlalchemy import create_engine, text

CHROMIUM = "/usr/bin/chromium"
SECRET_FIELD = "email"  # a column of the raw customers' schema facet, which pii clearance guards


def _artifacts(database_url: str) -> Path:
    base = Path(os.environ.get("LEDGER_CONSOLE_ARTIFACTS", REPO / "test-artifacts" / "console"))
    out = base / ("postgres" if database_url.startswith("postgresql") else "sqlite")
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed: apt-get install -y chromium (.ci/run does)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def _call(server: Server, method: str, path: str, token: str, body: Any = None) -> requests.Response:
    return requests.request(
        method, server.url + "/api/v1" + path, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=120
    )


def _tamper(database_url: str, sql: str, table: str) -> None:
    """Changes a stored row behind the service, with the append-only triggers out of the way."""
    eng = create_engine(database_url)
    with eng.begin() as c:
        if eng.dialect.name == "postgresql":
            c.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
            c.execute(text(sql))
            c.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
        else:
            triggers = c.execute(
                text("SELECT name, sql FROM sqlite_master WHERE type='trigger' AND tbl_name=:t"), {"t": table}
            ).all()
            for name, _ in triggers:
                c.execute(text(f"DROP TRIGGER {name}"))
            c.execute(text(sql))
            for _, ddl in triggers:
                c.execute(text(ddl))
    eng.dispose()


class Story:
    """The demo's story plus what the console must show besides: classification, a violation, 500 nodes."""

    def __init__(self, server: Server, tmp_path: Path) -> None:
        out = tmp_path / "demo"
        demo = server.ledger("demo", "--url", server.url, "--token", server.admin_token, "--out", str(out), check=False)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        admin = server.admin_token
        models = _call(server, "GET", "/models", admin).json()["models"]
        assert len(models) == 1
        self.model = models[0]["name"]
        suffix = self.model.removeprefix("churn-")
        self.raw, self.features = f"raw/customers-{suffix}", f"features/churn-{suffix}"
        self.security = server.add_principal("sec", "security")
        self.cleared = server.add_principal("auditor-cleared", "auditor", extra=("--clearance", "pii"))
        self.plain = server.add_principal("auditor-plain", "auditor")
        self.pipeline = server.add_principal("etl-late", "pipeline")
        lake = quote("s3://lake", safe="")
        r = _call(
            server,
            "POST",
            f"/datasets/{lake}/{quote(self.raw, safe='')}/classification",
            self.security,
            {"tags": ["pii"], "justification": "customer e-mail addresses"},
        )
        assert r.status_code == 201, r.text
        r = _call(
            server,
            "POST",
            f"/datasets/{lake}/{quote(self.features, safe='')}/classification",
            self.security,
            {"tags": ["pii"], "justification": "aggregates only, reviewed", "declassify": True},
        )
        assert r.status_code == 201, r.text
        # A pipeline without pii clearance reads the raw data: an intake violation.
        r = _call(
            server,
            "POST",
            "/lineage",
            self.pipeline,
            run_event(job="peek_customers", inputs=[dataset("s3://lake", self.raw)]),
        )
        assert r.status_code == 201, r.text
        # A fan of 250 jobs reading one dataset and writing one each: 501 nodes around fan:src.
        fan = [
            run_event(
                namespace="fan",
                job=f"fan_{i:03d}",
                inputs=[dataset("fan", "src")],
                outputs=[dataset("fan", f"out-{i:03d}")],
            )
            for i in range(250)
        ]
        r = _call(server, "POST", "/lineage/batch", self.pipeline, fan)
        assert r.status_code == 200 and r.json()["summary"]["failed"] == 0, r.text
        prov = _call(server, "GET", f"/provenance/models/{self.model}/versions/1", self.cleared).json()
        self.training_run = prov["model"]["training_run_id"]
        self.validation_seq = prov["validations"][0]["seq"]
        self.decision_seq = prov["decisions"][0]["seq"]
        raw_entries = _call(server, "GET", f"/log/entries?subject=dataset:s3://lake:{self.raw}", admin).json()
        self.raw_seq = raw_entries["entries"][0]["header"]["seq"]
        self.vkey = server.verifier_key()


# WCAG 2 contrast of every visible text node against the background it is drawn on (the nearest
# ancestor with an opaque background); returns the texts below 4.5:1.
LOW_CONTRAST = """() => {
  const rgb = (c) => (c.match(/[0-9.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const bg = (el) => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || c[3] > 0.9) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const bad = [];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    const el = n.parentElement;
    if (!n.textContent.trim() || !el || !el.checkVisibility() || el.closest('.skip')) continue;
    const s = getComputedStyle(el);
    const a = lum(rgb(s.color).slice(0, 3)), b = lum(bg(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) bad.push(`${ratio.toFixed(2)}: ${n.textContent.trim().slice(0, 40)}`);
  }
  return bad;
}"""


class Console:
    """One signed-in browser tab, with every CSP report and script error it meets."""

    def __init__(self, browser: Browser, server: Server, token: str, shots: Path) -> None:
        self.server, self.shots = server, shots
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(f"script error: {e}"))
        self.page.on(
            "console",
            lambda m: self.errors.append(m.text) if "Content Security Policy" in m.text else None,
        )
        self.page.goto(server.url + "/console/")
        self.page.wait_for_selector("#token")
        self.page.fill("#token", token)
        self.page.press("#token", "Enter")
        self.page.wait_for_selector("main[data-ready], main .problem")

    def open(self, path: str, *, fails: bool = False) -> Page:
        self.page.goto(self.server.url + path)
        self.page.wait_for_function(
            "p => document.getElementById('main').getAttribute('data-ready') === p", arg=path, timeout=60_000
        )
        failed = self.page.query_selector("main > div > h1:text('Could not load this page')") is not None
        assert failed == fails, self.text()
        return self.page

    def text(self) -> str:
        return self.page.inner_text("main")

    def shot(self, name: str) -> None:
        """A screenshot of the page, once its text is checked for readable contrast."""
        low = self.page.evaluate(LOW_CONTRAST)
        assert not low, f"{name}: text below 4.5:1 contrast: {low}"
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)

    def verify(self, vkey: str) -> dict[str, str]:
        self.page.fill("#vkey", vkey)
        self.page.evaluate("document.getElementById('steps').removeAttribute('data-result')")
        self.page.click("#verify")
        self.page.wait_for_selector("#steps[data-result]", timeout=30_000)
        return {
            li.get_attribute("data-step") or "": li.get_attribute("data-status") or ""
            for li in self.page.query_selector_all("#steps li[data-step]")
        }

    def close(self) -> None:
        assert not self.errors, self.errors
        self.context.close()


@pytest.fixture
def story(server: Server, tmp_path: Path) -> Story:
    return Story(server, tmp_path)


def test_console_pages_in_chromium(
    server: Server, story: Story, browser: Browser, database_url: str, tmp_path: Path
) -> None:
    shots = _artifacts(database_url)
    lake_raw = f"dataset:s3://lake:{story.raw}"

    # Sign-in: the page asks for a token; a wrong one is refused with the API's problem detail.
    c = Console(browser, server, "lgr_not-a-token", shots)
    assert c.page.is_visible("#token")
    assert "Unauthorized (401): invalid or revoked token" in c.text()
    c.shot("signin")
    c.page.fill("#token", story.cleared)
    c.page.press("#token", "Enter")
    c.page.wait_for_selector("#log-size")
    assert c.page.evaluate("document.cookie") == ""
    assert c.page.evaluate("sessionStorage.getItem('ledger.console.token')") == story.cleared
    assert c.page.evaluate("localStorage.length") == 0
    assert story.cleared not in c.page.url

    # Log: size, checkpoint, keys, entries filterable by kind.
    p = c.open("/console/log")
    size = int(p.inner_text("#log-size").replace(",", ""))
    assert size == int(requests.get(server.url + "/api/v1/log/checkpoint", timeout=10).text.split("\n")[1])
    assert p.inner_text("#checkpoint").startswith("ledger.test/e2e\n")
    assert story.vkey in c.text()
    assert "current" in c.text()
    assert "No witness has cosigned" in c.text() or "witness" in c.text()
    c.shot("log")
    # Witness cosignatures, once a checkpoint carries them (C2SP tlog-cosignature lines), are listed.
    note = requests.get(server.url + "/api/v1/log/checkpoint", timeout=10).text
    cosig = base64.b64encode(b"\x01\x02\x03\x04" + (1764550000).to_bytes(8, "big") + bytes(64)).decode()
    cosigned = note + f"\u2014 witness.example/w1 {cosig}\n"
    p.route(
        "**/api/v1/log/checkpoint", lambda route: route.fulfill(status=200, content_type="text/plain", body=cosigned)
    )
    c.open("/console/log")
    witnesses = p.inner_text("section[aria-label='Current checkpoint'] table")
    assert "witness.example/w1" in witnesses and "01020304" in witnesses and "2025-12-01 00:46:40Z" in witnesses
    p.unroute("**/api/v1/log/checkpoint")
    p.select_option("#kind", "promotion.decision")
    p.click("form.filters button[type=submit]")
    p.wait_for_function("() => (document.getElementById('main').getAttribute('data-ready') || '').includes('kind=')")
    rows = p.query_selector_all("section[aria-label=Entries] tbody tr")
    assert len(rows) == 2 and all("promotion.decision" in r.inner_text() for r in rows)
    assert "/console/log?kind=promotion.decision" in p.url  # a link an auditor can send
    c.open("/console/log?subject=model:nobody@1")
    assert "No entry matches this filter" in c.text()

    # Entry: header, payload, receipt, and Verify: every step passes in the browser.
    p = c.open(f"/console/entries/{story.validation_seq}")
    assert "validation.result" in c.text() and '"auc": 0.91' in p.inner_text("#payload")
    assert len(p.query_selector_all("ol.hashes li")) >= 1
    steps = c.verify(story.vkey)
    assert steps == {"leaf": "passed", "payload": "passed", "inclusion": "passed", "signature": "passed"}, steps
    assert "Every check passed" in c.page.inner_text("#steps")
    c.shot("entry-verified")
    # A key that is not the log's fails the signature step, and only that one.
    name, key_id, _ = story.vkey.split("+", 2)
    other = f"{name}+{key_id}+AQ{'A' * 42}="
    assert c.verify(other)["signature"] == "failed"
    p.click("text=Pin this key")  # pinned: the next entry's page starts with it
    p = c.open(f"/console/entries/{story.decision_seq}")
    assert p.input_value("#vkey") == other
    assert c.verify(story.vkey) == {"leaf": "passed", "payload": "passed", "inclusion": "passed", "signature": "passed"}
    # An entry that does not exist: the API's problem detail, on the page.
    c.open("/console/entries/999999", fails=True)
    assert "no entry with seq 999999" in c.text()

    # Models: the registry, with the stage per environment.
    c.open("/console/models")
    assert story.model in c.text() and "stage in prod-eu" in c.text() and "production" in c.text()
    assert "✓ reproducible" in c.text() and "✓ traceable" in c.text() and "✓ verifiable" in c.text()
    c.shot("models")

    # Model version: verdicts, validations with thresholds, approvals, decisions with violations,
    # deployments, classifications, the bundle and the command to verify it.
    p = c.open(f"/console/models/{story.model}/versions/1")
    body = c.text()
    for k in ("reproducible", "traceable", "verifiable"):
        assert p.get_attribute(f"[data-verdict={k}]", "class") == "card verdict ok"
    assert "auc ≥ 0.85" in body and "demographic_parity_gap ≤ 0.05" in body
    assert "reviewed the model card" in body
    assert "denied" in body and "no bias validation of model" in body and "allowed" in body
    assert "prod-eu" in body and "deployed" in body
    assert story.raw in body and "pii" in body and "none (declassified)" in body
    assert f"ledger verify bundle-{story.model}-1.json --key '{story.vkey}'" == p.inner_text("#verify-cmd")
    c.shot("model-version")
    with p.expect_download() as dl:
        p.click("#bundle")
    bundle = tmp_path / "bundle.json"
    dl.value.save_as(bundle)
    ok = server.ledger("verify", str(bundle), "--key", story.vkey, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    # Lineage: a left-to-right DAG, tags coloured, the declassification marked, a click opens a node.
    p = c.open(f"/console/lineage?node=run:{story.training_run}&depth=10&direction=both")
    p.wait_for_selector("#graph[data-nodes]")
    assert int(p.get_attribute("#graph", "data-nodes") or 0) >= 7
    drawn = p.evaluate(
        """() => document.getElementById('graph').__cy.nodes().map(n => ({id: n.id(), x: n.position('x'),
            cls: n.classes().join(' '), colour: n.data('colour')}))"""
    )
    by_id = {n["id"]: n for n in drawn}
    raw, features = by_id[lake_raw], by_id[f"dataset:s3://lake:{story.features}"]
    assert "tagged" in raw["cls"] and raw["colour"] == "#b3261e"  # pii red
    assert "declassified" in features["cls"] and "tagged" not in features["cls"]
    assert raw["x"] < features["x"] < by_id["job:ml:train_churn"]["x"]  # left to right
    assert "focus" in by_id["job:ml:train_churn"]["cls"]  # the run asked for is its job's
    assert "job: job:ml:train_churn" in p.inner_text("#node-panel")  # and opened beside the graph
    c.shot("lineage")
    pos = p.evaluate(
        f"() => document.getElementById('graph').__cy.getElementById({json.dumps(lake_raw)}).renderedPosition()"
    )
    box = p.locator("#graph").bounding_box()
    assert box is not None
    p.mouse.click(box["x"] + pos["x"], box["y"] + pos["y"])
    p.wait_for_function(f"() => document.getElementById('node-panel').innerText.includes({json.dumps(story.raw)})")
    panel = p.inner_text("#node-panel")
    assert "pii" in panel and SECRET_FIELD in panel  # cleared: the schema is shown
    p.click("#node-panel >> text=Centre the graph here")
    p.wait_for_function(
        "n => (document.getElementById('main').getAttribute('data-ready') || '').includes(n)",
        arg=quote(lake_raw, safe=""),
    )
    c.open("/console/lineage")
    assert "Name a dataset, job or run" in c.text()  # the empty state says what to do

    # 500 nodes: drawn, laid out left to right, with every node in the list beside it.
    t0 = time.monotonic()
    p = c.open("/console/lineage?node=dataset:fan:src&depth=2&direction=both")
    p.wait_for_selector("#graph[data-nodes]", timeout=60_000)
    took = time.monotonic() - t0
    assert int(p.get_attribute("#graph", "data-nodes") or 0) == 501
    assert len(p.query_selector_all(".node-list li")) == 501
    assert took < 20, took
    print(f"500-node lineage: page {took:.2f} s, layout {p.get_attribute('#graph', 'data-layout-ms')} ms")
    assert p.evaluate("document.getElementById('graph').__cy.zoom()") >= 0.8  # labels at a readable size
    p.click("text=Fit all")
    extent = p.evaluate(
        "(() => { const cy = document.getElementById('graph').__cy; return cy.elements().renderedBoundingBox(); })()"
    )
    assert extent["h"] <= p.locator("#graph").bounding_box()["height"] + 1  # the whole fan on one screen
    p.click("text=Back to this node")
    c.shot("lineage-500")

    # Keyboard: the skip link, then the navigation, reach every page without a mouse.
    c.open("/console/log")
    for _ in range(8):
        p.keyboard.press("Tab")
        if p.evaluate("document.activeElement.getAttribute('href')") == "/console/models":
            break
    assert p.evaluate("document.activeElement.getAttribute('href')") == "/console/models"
    p.keyboard.press("Enter")
    p.wait_for_function("() => document.getElementById('main').getAttribute('data-ready') === '/console/models'")

    # Violations: an auditor sees the open one (resolving is the security role's).
    c.open("/console/violations")
    assert "peek_customers" in c.text()
    c.close()

    # Security resolves it from the page.
    sec = Console(browser, server, story.security, shots)
    p = sec.open("/console/violations")
    sec.shot("violations")
    p.click("button:has-text('Resolve')")
    assert "Say why" in sec.text()
    p.fill("main input", "ticket SEC-42: access approved after review")
    p.click("button:has-text('Resolve')")
    p.wait_for_selector("main .badge.ok")
    sec.open("/console/violations")
    assert "No open violation" in sec.text()
    sec.close()

    # A pipeline's token: the page shows the API's 403 detail, not a blank page.
    pipe = Console(browser, server, story.pipeline, shots)
    pipe.open("/console/violations", fails=True)
    assert "(403)" in pipe.text()
    pipe.close()

    # Tampered behind the service: the same button names the failing step.
    _tamper(
        database_url,
        f"UPDATE entry_payloads SET payload = replace(payload, '0.91', '0.97') WHERE seq = {story.validation_seq}",
        "entry_payloads",
    )
    _tamper(
        database_url, f"UPDATE log_entries SET principal = 'mallory' WHERE seq = {story.decision_seq}", "log_entries"
    )
    c = Console(browser, server, story.cleared, shots)
    c.open(f"/console/entries/{story.validation_seq}")
    assert c.verify(story.vkey) == {"leaf": "passed", "payload": "failed", "inclusion": "passed", "signature": "passed"}
    assert "1 of 4 checks failed" in c.page.inner_text("#steps")
    c.shot("entry-tampered-payload")
    c.open(f"/console/entries/{story.decision_seq}")
    steps = c.verify(story.vkey)
    assert steps["leaf"] == "failed" and steps["inclusion"] == "failed" and steps["signature"] == "passed", steps
    assert "mallory" in c.text()
    c.shot("entry-tampered-header")

    # An erasure: the model version lists it, the entry says why its payload is gone, and Verify still
    # checks the header, the proof and the signature.
    r = _call(server, "POST", f"/log/entries/{story.raw_seq}/erasure", story.security, {"reason": "GDPR request 7"})
    assert r.status_code == 201, r.text
    erasure_seq = r.json()["receipt"]["seq"]
    c.open(f"/console/models/{story.model}/versions/1")
    row = c.page.inner_text("section[aria-label=Erasures] tbody")
    assert "GDPR request 7" in row and f"#{story.raw_seq}" in row and f"#{erasure_seq}" in row
    c.open(f"/console/entries/{story.raw_seq}")
    assert "The payload was erased" in c.page.inner_text("#payload")
    assert c.page.get_attribute("#payload a", "href") == f"/console/entries/{erasure_seq}"  # the API names it
    c.page.click("#payload a")  # to the erasure entry itself
    c.page.wait_for_function(
        f"() => (document.getElementById('main').getAttribute('data-ready') || '') === '/console/entries/{erasure_seq}'"
    )
    assert f"Entry {erasure_seq}" in c.page.inner_text("h1") and "payload.erasure" in c.text()
    c.open(f"/console/entries/{story.raw_seq}")
    steps = c.verify(story.vkey)
    assert steps == {"leaf": "passed", "payload": "not applicable", "inclusion": "passed", "signature": "passed"}
    assert "only its header was checked" in c.page.inner_text("#steps")
    c.shot("entry-erased")
    c.close()

    # The token never reached a log line.
    log = server.log_path.read_text()
    for t in (story.cleared, story.security, story.pipeline):
        assert t not in log


def test_console_shows_no_pii_without_clearance(
    server: Server, story: Story, browser: Browser, database_url: str
) -> None:
    """Every page, as an auditor without pii clearance: the raw customers' schema never appears; the
    same pages show it to a cleared auditor (so the check can fail)."""
    shots = _artifacts(database_url)
    lake_raw = f"dataset:s3://lake:{story.raw}"
    pages = [
        "/console/log",
        f"/console/log?subject={quote(lake_raw, safe='')}",
        f"/console/entries/{story.raw_seq}",
        f"/console/entries/{story.raw_seq + 1}",
        "/console/models",
        f"/console/models/{story.model}/versions/1",
        f"/console/lineage?node={quote(lake_raw, safe='')}&depth=5&direction=both",
        "/console/violations",
    ]

    def tour(token: str, name: str) -> tuple[str, str]:
        c = Console(browser, server, token, shots)
        seen = []
        for path in pages:
            p = c.open(path)
            if "lineage" in path:
                p.wait_for_selector("#graph[data-nodes]")
                p.click("details.node-list summary")
                for b in p.query_selector_all(".node-list button"):  # open every node's panel
                    b.click()
                    seen.append(p.inner_text("#node-panel"))
            seen.append(p.content())
        c.open(f"/console/entries/{story.raw_seq}")
        c.shot(f"entry-raw-{name}")
        entry_text = c.text()
        c.close()
        return "\n".join(seen), entry_text

    plain, plain_entry = tour(story.plain, "uncleared")
    assert SECRET_FIELD not in plain
    assert "customer_id" not in plain
    assert "withheld" in plain_entry
    cleared, _ = tour(story.cleared, "cleared")
    assert SECRET_FIELD in cleared
