"""End to end in a real browser: headless Chromium drives WebAdmin.

Login, Create Domain (Create Shared Domain in a cluster), create an
account, set its password, edit a setting, post an alert; the results are
then checked through the JSON API.  Screenshots of the Domains and Cluster
pages are saved under the test's tmp_path and copied to
test-output/screenshots/.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from http_support import (
    PM_PASSWORD,
    LiveServer,
    RealCluster,
    api_call,
    make_context,
    save_screenshot,
)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--window-size=1280,900", "--force-device-scale-factor=1",
]

pytestmark = [pytest.mark.xdist_group("http-cluster"),  # shares the cluster addresses
               pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("chromium and chromedriver are not installed (Debian packages chromium, chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class Site:
    url: str
    user: str
    password: str
    clustered: bool
    ctx: Any = None  # the ServerContext when the server runs in this process


@pytest.fixture(params=["standalone", "cluster"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    if request.param == "standalone":
        server = LiveServer(make_context(tmp_path / "server"))
        try:
            yield Site(server.url, "postmaster", PM_PASSWORD, False, server.ctx)
        finally:
            server.close()
    else:  # a real two-backend cluster; the browser talks to b1
        cluster = RealCluster(tmp_path / "cluster")
        try:
            yield Site(cluster.url("b1"), cluster.user, cluster.password, True)
        finally:
            cluster.close()


def _fill(driver: Any, css: str, text: str) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.CSS_SELECTOR, css)
    field.clear()
    field.send_keys(text)


def _click(driver: Any, css: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, css).click()


def _flash(driver: Any) -> str:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, ".flash"))
    except StaleElementReferenceException:  # the page is being replaced
        return ""


def _wait(driver: Any, what: str, check: Any, timeout: float = 30.0) -> None:
    """Wait until ``check(driver)`` holds (a form post loads a new page; the
    browser may answer with an error while it swaps documents)."""
    from selenium.common.exceptions import WebDriverException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check(driver):
                return
        except WebDriverException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what}: now at {driver.current_url}: {_flash(driver)!r}")


def _flashed(driver: Any, text: str) -> None:
    _wait(driver, f"message {text!r}", lambda d: text in _flash(d))


def _at(driver: Any, path: str) -> None:
    _wait(driver, f"page {path}", lambda d: d.current_url.split("?")[0].endswith(path))


def test_webadmin_in_a_browser(browser: Any, site: Site, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    d = browser
    d.get(site.url + "/admin/domains")
    assert "/admin/login" in d.current_url
    if not site.clustered:
        save_screenshot(d, tmp_path, "login.png")
    _fill(d, "#user", site.user)
    _fill(d, "#password", "wrong password")
    _click(d, "#login")
    _flashed(d, "wrong user name or password")
    _fill(d, "#user", site.user)
    _fill(d, "#password", site.password)
    _click(d, "#login")
    _at(d, "/admin/domains")
    assert d.find_element(By.CSS_SELECTOR, "h1").text == "Domains"

    clustered = site.clustered
    _fill(d, "#new-domain", "shop.test")
    _click(d, "#create-shared-domain" if clustered else "#create-domain")
    _at(d, "/admin/domains/shop.test")
    if not site.clustered:
        save_screenshot(d, tmp_path, "domain.png")
    _flashed(d, "shop.test created")

    d.find_element(By.LINK_TEXT, "Accounts (0)").click()
    _at(d, "/admin/domains/shop.test/accounts")
    if not site.clustered:
        save_screenshot(d, tmp_path, "accounts.png")
    _fill(d, "#new-account", "buyer")
    _fill(d, "#new-real-name", "Bea Buyer")
    _click(d, "#create-account")
    _at(d, "/admin/domains/shop.test/accounts/buyer")
    _flashed(d, "Account buyer@shop.test created.")

    _fill(d, "#set-password", "correct horse")
    _fill(d, "#set-password-again", "correct horse")
    _click(d, "#save-password")
    _flashed(d, "Password changed.")

    settings = d.find_element(By.CSS_SELECTOR, "form.settings")
    settings.find_element(By.NAME, "key.new0").send_keys("MaxAccountSize")
    settings.find_element(By.NAME, "value.new0").send_keys("25M")
    settings.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _flashed(d, "Account settings saved.")

    alert_box = d.find_element(By.CSS_SELECTOR, "form[action$='/alerts'] input[name=text]")
    alert_box.send_keys("Your mailbox moves on Monday")
    d.find_element(By.CSS_SELECTOR, "form[action$='/alerts'] button").click()
    _flashed(d, "Alert posted.")
    assert "Your mailbox moves on Monday" in d.find_element(By.CSS_SELECTOR, "ul.alerts").text
    suffix = "-clustered" if clustered else ""
    save_screenshot(d, tmp_path, f"account{suffix}.png")

    # the results, through the JSON API
    api = site.url + "/api/v1"
    domains = api_call(api + "/domains", site.user, site.password)["domains"]
    assert {"name": "shop.test", "shared": clustered, "accounts": 1} in domains
    account = api_call(api + "/domains/shop.test/accounts/buyer", site.user, site.password)
    assert account["settings"] == {"RealName": "Bea Buyer", "MaxAccountSize": "25M"}
    verify = api_call(api + "/domains/shop.test/accounts/buyer/password/verify", site.user, site.password,
                      "POST", {"password": "correct horse"})
    assert verify == {"valid": True}
    alerts = api_call(api + "/domains/shop.test/accounts/buyer/alerts", site.user, site.password)["alerts"]
    assert [a["text"] for a in alerts] == ["Your mailbox moves on Monday"]
    assert api_call(api + "/session", "buyer@shop.test", "correct horse")["account"] == "buyer@shop.test"

    d.get(site.url + "/admin/domains")
    shot = save_screenshot(d, tmp_path, f"domains{suffix}.png")
    assert shot.stat().st_size > 10_000
    if clustered:  # the page shows the roles once the Controller has named a Backup
        _wait(d, "a Controller and a Backup", lambda _: (lambda s: s["controller"] and s["backup"])(
            api_call(api + "/cluster", site.user, site.password)))
    d.get(site.url + "/admin/monitors/cluster")
    assert "Monitors › Cluster" in d.find_element(By.CSS_SELECTOR, "h1").text
    rows = d.find_elements(By.CSS_SELECTOR, "#members tbody tr")
    assert len(rows) == (2 if clustered else 1)
    if clustered:
        assert "Controller" in rows[0].text and "Make Non-Ready" in rows[0].text
    shot = save_screenshot(d, tmp_path, f"cluster{suffix}.png")
    assert shot.stat().st_size > 10_000
    if not clustered:
        d.get(site.url + "/admin/monitors")
        assert d.find_element(By.CSS_SELECTOR, "[data-counter=queue_size]").text == "0"
        site.ctx.metrics.queue_size.set(7)  # the page polls the API and shows live values
        site.ctx.metrics.sessions.labels(protocol="imap").set(3)
        _wait(d, "live counters", lambda _: d.find_element(By.CSS_SELECTOR, "[data-counter=queue_size]").text == "7"
              and d.find_element(By.CSS_SELECTOR, "[data-counter='sessions.imap.open']").text == "3")
        save_screenshot(d, tmp_path, "monitors.png")
        d.get(site.url + "/admin/settings?scope=cluster")
        save_screenshot(d, tmp_path, "settings.png")
