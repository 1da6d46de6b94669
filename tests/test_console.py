"""The web console at /ui in headless Chromium against a real `trove serve`: every page, a search, a build's
progress bar, promoting and rolling back an upgrade, a read-only key, keyboard use and phone width.

The browser is Debian's chromium and chromium-driver; the session fixture installs them with apt when they are
missing and this process is root. Screenshots of each page go to test-artifacts/console/ (git-ignored;
TROVE_TEST_ARTIFACTS moves it).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import ROOT, ServerProcess, launch_server
from tests.corpus import stdlib_labelled, stdlib_sentences

WRITE_KEY, READ_KEY = "console-write-key", "console-read-key"
ARTIFACTS = Path(os.environ.get("TROVE_TEST_ARTIFACTS") or ROOT / "test-artifacts") / "console"
BUILD_ROWS = 250
DESKTOP, PHONE = (1280, 900), (390, 844)
# Every button a read-only key may press: they read, or change only what the browser holds.
READ_BUTTONS = {"Use key", "Forget key", "Search", "Look up", "Browse from the start", "Cancel"}


def _browser_paths() -> tuple[str | None, str | None]:
    return shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """Debian's chromium and chromium-driver: installed through apt here when missing and this process is root."""
    binary, driver = _browser_paths()
    if binary and driver:
        return binary, driver
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("headless Chromium is missing (Debian packages chromium and chromium-driver) and this process cannot install them (not root, or no apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium", "chromium-driver"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200, check=False)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed ({done.returncode}): {(done.stdout + done.stderr)[-2000:]}")
    binary, driver = _browser_paths()
    assert binary and driver, "apt installed chromium and chromium-driver, yet they are not on PATH"
    return binary, driver


@pytest.fixture(scope="module")
def browser(chromium: tuple[str, str]) -> Iterator[WebDriver]:
    binary, driver_path = chromium
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", f"--window-size={DESKTOP[0]},{DESKTOP[1]}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager stays out of it and nothing is downloaded.
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path), options=options)
    yield driver
    driver.quit()


def _wait_job(http: httpx.Client, job_id: str) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        job = http.get(f"/v1/jobs/{job_id}").json()
        return job if job["state"] not in {"queued", "running"} else None

    job = _poll(finished, timeout=300)
    assert job["state"] == "succeeded", job
    return job


def _poll(check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return found


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, static_model: str) -> Iterator[ServerProcess]:
    """A server with a write key and a read-only key, and a collection with a relevance calibrator, a fitted
    compression and a fitted upgrade (static 256-d model -> MiniLM), plus an empty MiniLM collection to build into."""
    root = tmp_path_factory.mktemp("console")
    server = launch_server(root / "server.log", root / "data", root, TROVE_API_KEYS=WRITE_KEY, TROVE_READ_ONLY_API_KEYS=READ_KEY, TROVE_MODELS_DIR=str(models_dir))
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {WRITE_KEY}"}, timeout=120) as http:
            docs, queries, relevant = stdlib_labelled()
            assert http.post("/v1/collections", json={"name": "py", "model": static_model}).status_code == 201
            points = [{"id": i, "text": t, "payload": {"module": i % 7}} for i, t in enumerate(docs)]
            assert http.put("/v1/collections/py/points", json={"points": points}).status_code == 200
            examples = [{"query": q, "relevant": r} for q, r in zip(queries, relevant, strict=True)]
            _wait_job(http, http.post("/v1/collections/py/relevance", json={"examples": examples}).json()["job_id"])
            _wait_job(http, http.put("/v1/collections/py/compression", json={"quantizer": {"kind": "int8"}}).json()["job_id"])
            _wait_job(http, http.post("/v1/collections/py/upgrades", json={"model": "minilm-l6", "sample": 300}).json()["job_id"])
            assert http.post("/v1/collections", json={"name": "notes"}).status_code == 201
        rows = [json.dumps({"id": i, "text": t, "payload": {"row": i}}) for i, t in enumerate(stdlib_sentences(BUILD_ROWS))]
        (root / "notes.jsonl").write_text("\n".join(rows) + "\n")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api(console: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=console.url, headers={"Authorization": f"Bearer {WRITE_KEY}"}, timeout=60) as http:
        yield http


def _until(browser: WebDriver, check: Callable[[WebDriver], Any], timeout: float = 30) -> Any:
    try:
        # A page that re-renders (polling, navigation) replaces elements under a check: look again.
        waiting = WebDriverWait(browser, timeout, poll_frequency=0.1, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
        return waiting.until(check)
    except TimeoutException:
        notice = browser.find_element(By.ID, "notice").text
        raise AssertionError(f"timed out on {browser.current_url}; notice: {notice!r}") from None


def _open(browser: WebDriver, server: ServerProcess, page: str) -> None:
    """Go to a console page (a hash route) and wait until it has rendered."""
    if not browser.current_url.startswith(f"{server.url}/ui"):
        browser.get(f"{server.url}/ui")
        _until(browser, lambda b: b.execute_script("return document.body.dataset.ready === 'true'"))
    browser.execute_script("location.hash = arguments[0]", page)
    route = page.split("?")[0].lstrip("#")
    _until(browser, lambda b: b.execute_script("return document.getElementById('main').dataset.page") == route)


def _use_key(browser: WebDriver, server: ServerProcess, key: str, rights: str) -> None:
    _open(browser, server, "#/collections")
    field = browser.find_element(By.ID, "api-key")
    field.clear()
    field.send_keys(key, Keys.ENTER)
    _until(browser, lambda b: b.execute_script("return document.body.dataset.rights") == rights)
    _until(browser, lambda b: b.execute_script("return document.getElementById('main').dataset.page") is not None)


def _notice(browser: WebDriver) -> str:
    notice = browser.find_element(By.ID, "notice")
    return "" if notice.get_attribute("hidden") is not None else notice.text


def _shot(browser: WebDriver, name: str) -> None:
    """The whole page as a PNG, beyond the window's height (Chrome DevTools' capture)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    width, height = browser.execute_script("return [window.innerWidth, document.documentElement.scrollHeight]")
    clip = {"x": 0, "y": 0, "width": width, "height": min(height, 6000), "scale": 1}
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip})
    (ARTIFACTS / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))


def _cells(row: WebElement) -> list[str]:
    return [c.text for c in row.find_elements(By.TAG_NAME, "td")]


def _no_script_errors(browser: WebDriver) -> None:
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE" and e["source"] != "network"]
    assert not errors, errors


PAGES = {
    "collections": "#/collections",
    "overview": "#/collections/py",
    "search": "#/collections/py/search",
    "points": "#/collections/py/points",
    "compression": "#/collections/py/compression",
    "upgrades": "#/collections/py/upgrades",
    "relevance": "#/collections/py/relevance",
    "jobs": "#/jobs",
}


def test_every_page_shows_what_the_api_reports(browser: WebDriver, console: ServerProcess, api: httpx.Client) -> None:
    _use_key(browser, console, WRITE_KEY, "write")
    assert browser.execute_script("return sessionStorage.getItem('trove.apiKey')") == WRITE_KEY
    info = api.get("/v1/collections/py").json()

    _open(browser, console, PAGES["collections"])
    rows = {cells[0]: cells for cells in map(_cells, browser.find_elements(By.CSS_SELECTOR, "main tbody tr"))}
    assert set(rows) == {"py", "notes"} and rows["py"][1] == f"{info['points']:,}" and rows["py"][2] == info["model"]
    _shot(browser, "collections")

    _open(browser, console, PAGES["overview"])
    segment_ids = [r.find_element(By.TAG_NAME, "code").text for r in browser.find_elements(By.XPATH, "//h2[.='Segments']/following-sibling::div[1]//tbody/tr")]
    assert segment_ids == [s["id"] for s in info["segments"]]
    stages = [_cells(r)[0] for r in browser.find_elements(By.XPATH, "//h2[.='Memory by stage']/following-sibling::div[1]//tbody/tr")]
    assert stages == [s["name"] for s in info["stages"]] and len(stages) >= 2
    _shot(browser, "overview")

    _open(browser, console, PAGES["points"])
    first = _cells(browser.find_element(By.CSS_SELECTOR, "main tbody tr"))
    assert first[0] == "0" and first[3] == "v1"
    browser.find_element(By.LINK_TEXT, "Next page →").click()
    _until(browser, lambda b: _cells(b.find_element(By.CSS_SELECTOR, "main tbody tr"))[0] == "20")
    _shot(browser, "points")

    _open(browser, console, PAGES["compression"])
    compression = api.get("/v1/collections/py/compression").json()
    charts = browser.find_elements(By.CSS_SELECTOR, "figure.chart")
    recall_bars = [r.text.split("\n") for r in charts[1].find_elements(By.CSS_SELECTOR, ".bar-row")]
    assert any("recall_at_10" in s for s in compression["stages"]), compression
    expected = [[s["name"], f"{s['recall_at_10'] * 100:.1f}%" if "recall_at_10" in s else "—"] for s in compression["stages"]]
    assert recall_bars == expected, (recall_bars, compression["stages"])
    byte_bars = [r.text.split("\n") for r in charts[0].find_elements(By.CSS_SELECTOR, ".bar-row")]
    assert byte_bars == [[s["name"], f"{s['bytes_per_vector']:,} B"] for s in compression["stages"]]
    _shot(browser, "compression")

    _open(browser, console, PAGES["relevance"])
    report = api.get("/v1/collections/py/relevance").json()["relevance"]
    methods = [_cells(r)[0] for r in browser.find_elements(By.XPATH, "//h2[.='Baselines']/following-sibling::div[1]//tbody/tr")]
    assert methods == [report["calibrator"], *report["baselines"]]
    groups = browser.find_elements(By.CSS_SELECTOR, "figure.chart .group")
    assert len(groups) == 5 and groups[0].get_attribute("aria-label") == "PR-AUC"
    pr_auc = [r.text.split("\n") for r in groups[0].find_elements(By.CSS_SELECTOR, ".bar-row")]
    reported = [(report["calibrator"], report["pr_auc"]), *((name, b.get("pr_auc")) for name, b in report["baselines"].items())]
    assert pr_auc == [[name, "—" if value is None else f"{value:.3f}"] for name, value in reported], pr_auc
    _shot(browser, "relevance")

    _open(browser, console, PAGES["upgrades"])
    upgrade = api.get("/v1/collections/py/upgrades").json()["upgrades"][0]
    card = browser.find_element(By.CSS_SELECTOR, f"[data-upgrade='{upgrade['id']}']")
    scores = [_cells(r)[1] for r in card.find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert scores == [f"{upgrade['report'][k]:.3f}" for k in ("m_old_old", "m_new_old", "m_new_new")]
    assert ("holds" if upgrade["report"]["criterion_holds"] else "fails") in card.text
    serving = browser.find_element(By.ID, "serving").text
    assert "v1" in serving and info["model"] in serving
    _shot(browser, "upgrades")

    _open(browser, console, PAGES["jobs"])
    kinds = [j.find_element(By.TAG_NAME, "strong").text for j in browser.find_elements(By.CSS_SELECTOR, "[data-job]")]
    assert {"relevance", "compression", "upgrade"} <= set(kinds)
    _shot(browser, "jobs")
    assert _notice(browser) == ""
    _no_script_errors(browser)


def test_search_by_keyboard_shows_the_api_hits(browser: WebDriver, console: ServerProcess, api: httpx.Client) -> None:
    _open(browser, console, PAGES["search"])
    query = "read a file line by line"
    box = browser.find_element(By.NAME, "q")
    box.send_keys(query, Keys.ENTER)  # Enter searches
    rows = _until(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#results tbody tr"))
    expected = api.post("/v1/collections/py/query", json={"text": query, "k": 10, "with_relevance": True}).json()["results"]
    shown = [_cells(r) for r in rows]
    assert [c[1] for c in shown] == [str(h["id"]) for h in expected]
    assert [c[2] for c in shown] == [f"{h['score']:.4f}" for h in expected]
    assert [c[3] for c in shown] == [f"{h['relevance']:.3f}" for h in expected]  # the calibrator is fitted
    assert json.loads(shown[0][4]) == expected[0]["payload"]

    # From the query box, Tab reaches every control of the form in order, then the Search button.
    box.click()
    reached = []
    for _ in range(8):
        browser.switch_to.active_element.send_keys(Keys.TAB)
        reached.append(browser.execute_script("const e = document.activeElement; return e.name || e.textContent"))
    assert reached == ["kind", "k", "min_score", "min_relevance", "oversample", "exact", "filter", "Search"], reached
    _shot(browser, "search")


def test_a_build_started_in_the_console_shows_its_progress_to_100(browser: WebDriver, console: ServerProcess, api: httpx.Client) -> None:
    _open(browser, console, "#/collections/notes")
    browser.find_element(By.NAME, "path").send_keys("notes.jsonl")
    browser.find_element(By.XPATH, "//button[.='Start build']").click()
    seen: list[float] = []

    def finished(b: WebDriver) -> bool:
        bars = b.find_elements(By.CSS_SELECTOR, "[data-job] progress")
        if bars:
            seen.append(float(bars[0].get_attribute("value")))
        job = b.find_elements(By.CSS_SELECTOR, "[data-job]")
        return bool(job) and job[0].get_attribute("data-state") == "succeeded"

    _until(browser, finished, timeout=180)
    bar = browser.find_element(By.CSS_SELECTOR, "[data-job] progress")
    assert float(bar.get_attribute("value")) == 1.0 and "100%" in browser.find_element(By.CSS_SELECTOR, "[data-job]").text
    assert seen == sorted(seen), seen  # the bar only moves forward
    assert api.get("/v1/collections/notes").json()["points"] == BUILD_ROWS
    _shot(browser, "build")

    _open(browser, console, "#/jobs?collection=notes")
    build = browser.find_element(By.CSS_SELECTOR, "[data-job]")
    assert build.get_attribute("data-state") == "succeeded" and float(build.find_element(By.TAG_NAME, "progress").get_attribute("value")) == 1.0


def test_the_jobs_page_cancels_a_running_build_and_shows_why_one_failed(browser: WebDriver, console: ServerProcess, api: httpx.Client, sentences: list[str]) -> None:
    root = console.log.parent
    (root / "long.jsonl").write_text("".join(json.dumps({"id": f"long-{i}", "text": t}) + "\n" for i, t in enumerate(sentences)))
    # The first rows pass the request's check; the bad one fails the job when it gets there.
    (root / "bad.jsonl").write_text("".join(json.dumps({"id": f"bad-{i}", "text": t}) + "\n" for i, t in enumerate(sentences[:150])) + "not json\n")
    before = api.get("/v1/collections/notes").json()["points"]
    long_job = api.post("/v1/collections/notes/builds", json={"source": {"path": "long.jsonl", "format": "jsonl"}}).json()["job_id"]
    _open(browser, console, "#/jobs?collection=notes")
    job = f"[data-job='{long_job}']"
    cancel = _until(browser, lambda b: b.find_element(By.CSS_SELECTOR, f"{job} button"))
    assert cancel.text == "Cancel job" and cancel.is_enabled()
    cancel.click()
    browser.find_element(By.ID, "confirm-ok").click()
    _until(browser, lambda b: b.find_element(By.CSS_SELECTOR, job).get_attribute("data-state") == "cancelled", timeout=120)
    assert api.get(f"/v1/jobs/{long_job}").json()["state"] == "cancelled"
    assert api.get("/v1/collections/notes").json()["points"] == before

    bad_job = api.post("/v1/collections/notes/builds", json={"source": {"path": "bad.jsonl", "format": "jsonl"}}).json()["job_id"]
    job = f"[data-job='{bad_job}']"
    _until(browser, lambda b: b.find_element(By.CSS_SELECTOR, job).get_attribute("data-state") == "failed", timeout=120)
    error = api.get(f"/v1/jobs/{bad_job}").json()["error"]
    assert browser.find_element(By.CSS_SELECTOR, f"{job} .bad").text == f"{error['code']}: {error['message']}"
    assert not browser.find_elements(By.CSS_SELECTOR, f"{job} button")  # a finished job has nothing to cancel
    _shot(browser, "jobs-cancelled-and-failed")


def _card(browser: WebDriver, upgrade_id: str) -> WebElement:
    return browser.find_element(By.CSS_SELECTOR, f"[data-upgrade='{upgrade_id}']")


def _press(browser: WebDriver, upgrade_id: str, label: str) -> None:
    """Press an upgrade's button from the keyboard; the confirmation dialog opens."""
    button = _card(browser, upgrade_id).find_element(By.XPATH, f".//button[.='{label}']")
    assert button.is_enabled(), label
    browser.execute_script("arguments[0].focus()", button)
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    _until(browser, lambda b: b.find_element(By.ID, "confirm").get_attribute("open") is not None)


def test_promote_and_roll_back_an_upgrade_after_confirming(browser: WebDriver, console: ServerProcess, api: httpx.Client, static_model: str) -> None:
    upgrade_id = api.get("/v1/collections/py/upgrades").json()["upgrades"][0]["id"]
    _open(browser, console, PAGES["upgrades"])
    assert [b.is_enabled() for b in _card(browser, upgrade_id).find_elements(By.TAG_NAME, "button")] == [True, False, False, False]

    _press(browser, upgrade_id, "Promote")
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)  # backing out changes nothing
    _until(browser, lambda b: b.find_element(By.ID, "confirm").get_attribute("open") is None)
    assert api.get("/v1/collections/py").json()["model"] == static_model

    _press(browser, upgrade_id, "Promote")
    browser.find_element(By.ID, "confirm-ok").click()
    _until(browser, lambda b: _card(b, upgrade_id).get_attribute("data-state") == "promoted")
    assert "Promoted minilm-l6" in _notice(browser)
    info = api.get("/v1/collections/py").json()
    assert info["model"] == "minilm-l6" and [m["serving"] for m in info["models"]] == [False, True]
    assert "v2" in browser.find_element(By.ID, "serving").text
    assert [b.is_enabled() for b in _card(browser, upgrade_id).find_elements(By.TAG_NAME, "button")] == [False, True, True, True]  # promote, roll back, backfill, rebuild natively

    _press(browser, upgrade_id, "Roll back")
    browser.find_element(By.ID, "confirm-ok").click()
    _until(browser, lambda b: _card(b, upgrade_id).get_attribute("data-state") == "rolled_back")
    assert api.get("/v1/collections/py").json()["model"] == static_model
    assert api.get(f"/v1/collections/py/upgrades/{upgrade_id}").json()["state"] == "rolled_back"
    _no_script_errors(browser)


def test_a_read_only_key_gets_no_write_buttons_and_the_api_403(browser: WebDriver, console: ServerProcess, api: httpx.Client) -> None:
    _use_key(browser, console, READ_KEY, "read")
    assert "read-only" in browser.find_element(By.ID, "rights").text
    for name, page in PAGES.items():
        _open(browser, console, page)
        buttons = browser.find_elements(By.CSS_SELECTOR, "button")
        enabled = {b.text for b in buttons if b.is_enabled() and b.is_displayed()}
        assert enabled <= READ_BUTTONS, (name, enabled - READ_BUTTONS)
        if name not in {"search", "jobs"}:  # (the jobs page offers a write, cancel, only while a job runs)
            assert any(not b.is_enabled() for b in buttons), name  # the page does offer writes, switched off
    _shot(browser, "read-only-upgrades")

    # The switched-off button is a courtesy; the API decides. Forced on, its write gets the API's 403.
    _open(browser, console, "#/collections/notes")
    before = api.get("/v1/collections/notes").json()["points"]
    button = browser.find_element(By.XPATH, "//button[.='Delete collection']")
    assert not button.is_enabled()
    browser.execute_script("arguments[0].disabled = false", button)
    button.click()
    browser.find_element(By.ID, "confirm-ok").click()
    _until(browser, lambda b: "403" in _notice(b))
    assert _notice(browser) == "403 read_only_key: this API key is read-only"
    assert api.get("/v1/collections/notes").json()["points"] == before
    _shot(browser, "read-only-403")
    _use_key(browser, console, WRITE_KEY, "write")


def test_pages_fit_a_phone_screen(browser: WebDriver, console: ServerProcess) -> None:
    browser.set_window_size(*PHONE)
    try:
        for name, page in PAGES.items():
            _open(browser, console, page)
            overflow = browser.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 0, (name, overflow)
            _shot(browser, f"phone-{name}")
    finally:
        browser.set_window_size(*DESKTOP)


def test_forms_create_a_collection_filter_a_search_and_refit_compression(browser: WebDriver, console: ServerProcess, api: httpx.Client) -> None:
    _open(browser, console, PAGES["collections"])
    browser.find_element(By.NAME, "name").send_keys("made-here")
    browser.find_element(By.XPATH, "//button[.='Create']").click()
    _until(browser, lambda b: b.execute_script("return document.getElementById('main').dataset.page") == "/collections/made-here")
    assert api.get("/v1/collections/made-here").json()["model"] == "minilm-l6"

    _open(browser, console, PAGES["search"])
    browser.find_element(By.NAME, "filter").send_keys('{"must": [{"key": "module", "match": 3}]}')
    browser.find_element(By.NAME, "q").send_keys("compute a hash digest", Keys.ENTER)
    rows = _until(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#results tbody tr"))
    assert len(rows) == 10 and all(json.loads(_cells(r)[4]) == {"module": 3} for r in rows)
    browser.find_element(By.NAME, "filter").send_keys(" trailing")
    browser.find_element(By.XPATH, "//button[.='Search']").click()
    _until(browser, lambda b: "The filter is not valid JSON" in _notice(b))

    _open(browser, console, PAGES["compression"])
    editor = browser.find_element(By.NAME, "config")
    editor.clear()
    editor.send_keys('{"matryoshka": {"dim": 128}, "quantizer": {"kind": "int8"}}')
    browser.find_element(By.XPATH, "//button[.='Fit compression']").click()
    _until(browser, lambda b: "Compression fitted." in _notice(b), timeout=120)
    compression = api.get("/v1/collections/py/compression").json()
    assert compression["compression"]["matryoshka"]["dim"] == 128 and compression["compression"]["state"] == "fitted"
    _until(browser, lambda b: b.execute_script("return document.getElementById('main').dataset.page") is not None)
    names = [r.text.split("\n")[0] for r in browser.find_elements(By.CSS_SELECTOR, "figure.chart:first-of-type .bar-row")]
    assert names == [s["name"] for s in compression["stages"]]
    _no_script_errors(browser)
