"""The history dashboard in a real browser: Chromium driven by Playwright for Python, offline, on CPU.

Skipped, with the reason, where Playwright (pip install playwright) or a Chromium binary (Debian: apt-get install
chromium; or FLUXPERF_CHROMIUM=/path/to/chrome) is missing. The screenshot is written beside the test's page, under
its tmp_path; FLUXPERF_SCREENSHOT=PATH also writes the view of the stepped chart there (docs/history.md's).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from fluxperf import history
from tests.unit.test_history import step_history

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright missing: pip install playwright")

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _chromium() -> str:
    for candidate in (os.environ.get("FLUXPERF_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.skip("no Chromium binary: apt-get install chromium, or set FLUXPERF_CHROMIUM")


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    """The page of a 43-session history (test_history.step_history: compile steps +6% at session 24), opened in
    Chromium with every request but the page itself refused and recorded."""
    chromium = _chromium()
    root = tmp_path_factory.mktemp("dashboard")
    step_history(root / "history.sqlite")
    with history.open_store(root / "history.sqlite", create=False) as store:
        index = history.write_site(store, root / "site")
    problems, fetched = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

        def route(r):
            if r.request.url == index.as_uri():
                r.continue_()
            else:
                fetched.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        page.goto(index.as_uri(), wait_until="load")
        yield page, problems, fetched, root
        browser.close()


def test_the_page_loads_offline_with_no_console_errors(dashboard):
    page, problems, fetched, _ = dashboard
    assert page.title() == "fluxperf history"
    assert problems == []
    assert fetched == []


def test_one_chart_per_variant(dashboard):
    page, *_ = dashboard
    charts = page.locator("figure.variant-chart")
    names = sorted(charts.nth(i).get_attribute("data-variant") for i in range(charts.count()))
    assert names == ["compile", "compile", "eager", "pruna_cache_compile", "pruna_cache_compile"]
    for i in range(charts.count()):
        assert charts.nth(i).locator("svg").first.is_visible()


def test_the_step_marker_is_drawn_at_the_step(dashboard):
    page, *_ = dashboard
    chart = page.locator('figure.variant-chart[data-variant="compile"][data-gpu="sim-gpu"]')
    marker = chart.locator("line.step-marker")
    assert marker.count() == 1
    x = marker.bounding_box()["x"]
    before = chart.locator('circle[data-session="sim-023"]').bounding_box()
    after = chart.locator('circle[data-session="sim-025"]').bounding_box()
    # The history's step is at session 24: the marker sits between sessions 23 and 25 (a session either way is
    # within what 1.6% noise allows for a 6% step; the line is drawn half a session before the first one after it).
    assert before["x"] < x < after["x"] + after["width"], (before, x, after)
    assert chart.locator("text.step-label").text_content().startswith("+")
    # pruna_cache_compile didn't change: no step in its chart.
    assert (
        page.locator(
            'figure.variant-chart[data-variant="pruna_cache_compile"][data-gpu="sim-gpu"] line.step-marker'
        ).count()
        == 0
    )


def test_a_click_on_a_point_shows_that_sessions_environment_and_verdicts(dashboard):
    page, problems, _, root = dashboard
    chart = page.locator('figure.variant-chart[data-variant="compile"][data-gpu="sim-gpu"]')
    chart.locator('circle[data-session="sim-030"]').click()
    details = page.locator("aside#details").inner_text()
    assert "compile — 2026-10-01T02:17:00Z" in details
    assert "torch" in details and "2.12.0" in details  # the environment after the step's torch update
    assert "within the tolerance of its baseline" in details  # that session's verdict
    assert problems == []
    shot = root / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("FLUXPERF_SCREENSHOT"):
        # The view docs/history.md shows: the stepped chart with the clicked session's details beside it.
        chart.scroll_into_view_if_needed()
        page.screenshot(path=os.environ["FLUXPERF_SCREENSHOT"])
