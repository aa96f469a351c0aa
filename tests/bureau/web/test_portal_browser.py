"""The portal in a real headless Chromium (Selenium, Debian's chromium-driver), served by
`tieragent bureau web` as a real process on a free loopback port, over the annual tests'
bureau of real signed reports copied into the session's PostgreSQL (the URL in
TIERAGENT_BUREAU_DATABASE_URL, as an operator gives it; the other portal tests run on SQLite
and PostgreSQL).

An evaluator logs in, opens the factory, sees the conditions table, an ECharts trend chart
and the per-device table, switches the language, downloads the PDF; an admin then finds the
download in the audit table. Anonymous requests get 401 or the login page; the evaluator's
POST to enrol a key gets 403.
"""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from portal_fixtures import ADMIN, EVALUATOR, FACTORY, PASSWORD, Portal
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait
from simdata import BENCHMARKS, POLICY

from bureau.database import DATABASE_URL_ENV
from tests.support.ports import free_port, serving
from tests.support.waiting import wait_until

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--window-size=1400,2000",
)
ROOT = Path(__file__).resolve().parents[3]


def _binary(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    pytest.fail(f"{names[0]} is not installed: apt-get install -y chromium chromium-driver "
                "(.ci/setup does)")


@pytest.fixture
def server(portal: Portal, tmp_path: Path) -> Iterator[str]:
    """`tieragent bureau web` on a free loopback port, stopped by its pid."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    where = ["--db", str(portal.db)]
    if isinstance(portal.db, str):
        env[DATABASE_URL_ENV], where = portal.db, []
    log = (tmp_path / "web.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "tieragent", "bureau", "web", *where,
         "--host", "127.0.0.1", "--port", str(port), "--key", str(portal.key),
         "--policy", str(POLICY), "--benchmarks", str(BENCHMARKS),
         "--declarations-dir", str(portal.settings.declarations_dir)],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
    )
    try:
        assert wait_until(lambda: serving(process, port), 60), (
            (tmp_path / "web.log").read_text(errors="replace")[-3000:])
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


@pytest.fixture
def downloads(tmp_path: Path) -> Path:
    """Where Chromium saves downloaded files."""
    folder = tmp_path / "downloads"
    folder.mkdir()
    return folder


@pytest.fixture
def browser(tmp_path: Path, downloads: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.add_experimental_option("prefs", {
        "download.default_directory": str(downloads), "download.prompt_for_download": False})
    options.binary_location = _binary("chromium", "chromium-browser")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    service = Service(executable_path=_binary("chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(120)
    driver.set_script_timeout(120)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior",  # headless: allow, into `downloads`
                           {"behavior": "allow", "downloadPath": str(downloads)})
    try:
        yield driver
    finally:
        driver.quit()


def _log_in(driver: WebDriver, base: str, username: str) -> None:
    driver.get(f"{base}/factories")
    assert "/login" in driver.current_url  # anonymous: sent to the login page
    driver.find_element(By.ID, "username-input").send_keys(username)
    driver.find_element(By.ID, "password-input").send_keys(PASSWORD)
    driver.find_element(By.ID, "login-button").click()
    WebDriverWait(driver, 30).until(expected_conditions.presence_of_element_located(
        (By.ID, "factories")))
    assert driver.find_element(By.ID, "username").text == username


def _fetch(driver: WebDriver, url: str, method: str = "GET", body: str | None = None) -> dict:
    """The browser's own fetch with its session cookie: status, type, first bytes."""
    script = """
const [url, method, body, done] = arguments;
const init = {method: method, credentials: "same-origin", redirect: "manual"};
if (body !== null) {
  init.body = body;
  init.headers = {"Content-Type": "application/x-www-form-urlencoded"};
}
fetch(url, init).then(async r => {
  const bytes = new Uint8Array(await r.arrayBuffer());
  done({status: r.status, type: r.headers.get("content-type") || "",
        head: Array.from(bytes.slice(0, 8)), size: bytes.length,
        text: new TextDecoder().decode(bytes.slice(0, 4000))});
}).catch(e => done({status: -1, type: "", head: [], size: 0, text: String(e)}));
"""
    result: dict = driver.execute_async_script(script, url, method, body)
    return result


def _anonymous(base: str, path: str, accept: str) -> tuple[int, str]:
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("GET", path, headers={"Accept": accept})
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("location") or ""
    finally:
        connection.close()


@pytest.mark.parametrize("bureau_database", ["postgresql"], indirect=True)
def test_evaluator_in_chromium(server: str, browser: WebDriver, portal: Portal,
                               downloads: Path) -> None:
    """If an evaluator works through the portal in Chromium, then every page shows what the
    bureau holds, the language switches, the PDF download is answered and audited, and the
    evaluator cannot enrol a key."""
    assert _anonymous(server, "/api/factories", "application/json")[0] == 401
    status, location = _anonymous(server, f"/factories/{FACTORY}", "text/html")
    assert status == 303 and location.startswith("/login")
    assert _anonymous(server, f"/factories/{FACTORY}/evidence.pdf", "*/*")[0] == 401

    _log_in(browser, server, EVALUATOR)
    browser.find_element(By.CSS_SELECTOR, f'tr[data-factory="{FACTORY}"] a').click()
    wait = WebDriverWait(browser, 60)
    wait.until(expected_conditions.presence_of_element_located((By.ID, "conditions")))
    # Through Jan 31 (February's coverage is below the bound, January's is not), the
    # measured conditions pass or fail.
    browser.get(f"{server}/factories/{FACTORY}?year=2025&through=2025-01-31")
    conditions = browser.find_elements(By.CSS_SELECTOR, "#conditions tr[data-condition]")
    assert len(conditions) > 10
    statuses = {row.get_attribute("data-status") for row in conditions}
    assert "pass" in statuses or "fail" in statuses
    oee = browser.find_element(By.CSS_SELECTOR,
                               '#conditions tr[data-condition$="oee_above_province_avg"] '
                               'td[data-field="measured"]')
    assert oee.text.endswith("%")
    # ECharts drew the trend charts (SVG renderer) from the portal's own copy of the library.
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-oee svg path"))
    assert browser.find_element(By.ID, "chart-oee").get_attribute("data-rendered") == "true"
    assert browser.execute_script("return typeof echarts") == "object"
    devices = browser.find_elements(By.CSS_SELECTOR, "#devices tr[data-device]")
    assert len(devices) >= 6
    cells = devices[0].find_elements(By.CSS_SELECTOR, 'td[data-field="oee"]')
    assert cells and (cells[0].text.endswith("%") or "数据不足" in cells[0].text)
    assert browser.find_element(By.CSS_SELECTOR, "h2").text == "评价条件"

    browser.find_element(By.ID, "lang-switch").click()
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "h2").text == "Tier conditions")
    assert "through=2025-01-31" in browser.current_url  # back on the same page
    assert browser.find_element(By.ID, "lang-switch").text == "中文"
    assert browser.find_elements(By.CSS_SELECTOR, "#chart-oee svg")

    # The evaluator clicks the PDF link: Chromium saves the file under its attachment name.
    browser.find_element(By.ID, "download-pdf").click()
    saved = downloads / f"evidence-{FACTORY}-2025.pdf"
    assert wait_until(saved.is_file, 120), sorted(p.name for p in downloads.iterdir())
    assert saved.read_bytes().startswith(b"%PDF-") and saved.stat().st_size > 10_000
    html = _fetch(browser, browser.find_element(By.ID, "download-html").get_attribute("href"))
    assert html["status"] == 200 and "text/html" in html["type"]

    csrf = browser.find_element(By.CSS_SELECTOR, 'input[name="csrf_token"]').get_attribute("value")
    enrol = _fetch(browser, f"{server}/admin/keys/enrol", "POST",
                   f"csrf_token={csrf}&factory_id=intruder&jwk=%7B%7D")
    assert enrol["status"] == 403, enrol
    assert _fetch(browser, f"{server}/audit")["status"] == 403

    browser.delete_all_cookies()
    _log_in(browser, server, ADMIN)
    browser.get(f"{server}/audit")
    rows = [
        [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        for row in browser.find_elements(By.CSS_SELECTOR, "#audit tr[data-action]")
    ]
    assert [EVALUATOR, "download.evidence.pdf", f"evidence-{FACTORY}-2025"] in [
        r[1:] for r in rows]
    assert [EVALUATOR, "download.evidence.html", f"evidence-{FACTORY}-2025"] in [
        r[1:] for r in rows]
    assert [EVALUATOR, "denied", "POST /admin/keys/enrol"] in [r[1:] for r in rows]
