"""The status page in a real browser: Debian's chromium, headless, driven by Selenium, against
the real agent, the real simulator (smoulder scenario) and a real mosquitto.

Selenium is pointed at /usr/bin/chromium and /usr/bin/chromedriver (scripts/setup-system.sh
installs them) and runs offline: Selenium Manager never downloads anything. Screenshots of
every page land in build/web-screenshots/ (a test artefact; docs/img/ holds copies).
"""

from __future__ import annotations

import os
import re
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from firmware_sim.harness import Broker, dump_toml
from tests.conftest import REPO
from tests.e2e import BIN, Collector, Proc, agent_config, simulator, start_agent, wait_for
from tests.integration.test_alarm_scenarios import raised, scenario_config

pytestmark = pytest.mark.integration

SHOTS = REPO / "build" / "web-screenshots"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
EVIL = "<script>window.pwned=1</script>2号"
TOKEN = "s3cret-token-for-the-lan-page"


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("chromium / chromedriver missing: run scripts/setup-system.sh (as root)")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not fetch browsers or drivers
    opts = Options()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        opts.add_argument(arg)
    opts.add_argument("--disable-dev-shm-usage")
    opts.add_experimental_option("prefs", {"intl.accept_languages": "en-US,en"})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: webdriver.Chrome, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def web_config(cfg: Path, **web: object) -> None:
    data = tomllib.loads(cfg.read_text())
    data["web"] = {"enabled": True, "port": 0, "history_step": 2.0, **web}
    for dev in data["devices"]:
        if dev["name"] == "DC-2":
            dev["name_zh"] = EVIL
    cfg.write_text(dump_toml(data))


def page_values(driver: webdriver.Chrome) -> dict[str, str]:
    return {
        el.get_attribute("data-point") or "": el.find_element(By.CSS_SELECTOR, "b.v").text
        for el in driver.find_elements(By.CSS_SELECTOR, "span.pv")
    }


def matches_broker(c: Collector, shown: dict[str, str]) -> bool:
    """Every value on the page was received by the broker for that point (2 decimals)."""
    if len(shown) < 16 or "—" in shown.values():
        return False
    seen: dict[str, set[str]] = {}
    for r in c.readings():
        if r.get("value") is not None:
            seen.setdefault(f"{r['device']}.{r['key']}", set()).add(f"{r['value']:.2f}")
    return all(v in seen.get(k, set()) for k, v in shown.items())


def wait_page(
    driver: webdriver.Chrome, cond: Callable[[Any], object], timeout: float, what: str
) -> None:
    WebDriverWait(driver, timeout, 0.1, ignored_exceptions=(StaleElementReferenceException,)).until(
        cond, what
    )


def test_status_page_follows_the_smoulder(
    broker: Broker, tmp_path: Path, browser: webdriver.Chrome
) -> None:
    c = Collector(broker.port)
    c.start()
    with simulator(tmp_path, "--scenario", "smoulder", "--speed", "2", "--units", "1,2") as (
        _,
        port,
    ):
        cfg = scenario_config(tmp_path, port, broker.port)
        web_config(cfg, allow_ack=True)
        agent = start_agent(cfg, tmp_path / "agent.log")
        try:
            url = agent.wait_log(r"status page on (http://\S+)").group(1)
            _walk_pages(browser, url, c)
            rebound = urllib.request.Request(url, headers={"Host": "attacker.example:80"})
            with pytest.raises(urllib.error.HTTPError) as refused:  # DNS rebinding
                urllib.request.urlopen(rebound, timeout=5)
            assert refused.value.code == 403
            refused.value.close()
        finally:
            assert agent.stop() == 0, agent.text()[-3000:]
            c.stop()


def _walk_pages(d: webdriver.Chrome, url: str, c: Collector) -> None:
    d.get(url)
    wait_page(d, lambda d: matches_broker(c, page_values(d)), 20, "overview values = broker's")
    rows = [
        r.get_attribute("data-device") for r in d.find_elements(By.CSS_SELECTOR, "tr[data-device]")
    ]
    assert rows == ["DC-1", "DC-2"]
    shot(d, "overview")
    d.get(url + "device/DC-1")
    wait_page(d, lambda d: "good" in d.find_element(By.ID, "main").text, 10, "device page")
    shot(d, "device")

    d.get(url + "alarms")
    wait_for(lambda: raised(c, "DC-1", "hopper_temp", "threshold", "alarm"), 90, "MQTT alarm")
    mqtt_at = time.monotonic()
    wait_page(
        d,
        lambda d: any(
            "hopper" in r.text.lower()
            for r in d.find_elements(By.CSS_SELECTOR, 'tr.lv-alarm[data-kind="threshold"]')
        ),
        3,
        "the hopper alarm on the alarms page within 3 s of the MQTT message",
    )
    assert time.monotonic() - mqtt_at < 3.0
    row = d.find_element(By.CSS_SELECTOR, 'tr.lv-alarm[data-kind="threshold"]')
    assert "70.00" in row.text  # the rule's threshold, from the event
    shot(d, "alarms")
    row.find_element(By.NAME, "by").send_keys("Li Wei")
    row.find_element(By.CSS_SELECTOR, 'button[value="ack"]').click()  # the CLI's operator path
    wait_for(
        lambda: any(
            r["transition"] == "ack" and r.get("by") == "Li Wei" and r["kind"] == "threshold"
            for r in c.alarm_records()
        ),
        10,
        "the acknowledgement at the broker",
    )
    ack_cell = 'tr.lv-alarm[data-kind="threshold"] td:nth-child(8)'
    wait_page(d, lambda d: d.find_element(By.CSS_SELECTOR, ack_cell).text == "yes", 5, "acked")

    d.get(url + "trend/DC-1/hopper_temp?h=1")
    line = d.find_element(By.CSS_SELECTOR, "svg.trend polyline.last")
    first, last = (
        float(line.get_attribute("data-first") or 0),
        float(line.get_attribute("data-last") or 0),
    )
    assert last > first + 20, (first, last)  # the smoulder: from ~38 °C past 70 °C
    shot(d, "trend")

    d.get(url + "journal?kind=threshold&device=DC-1")
    main = d.find_element(By.ID, "main").text
    assert "Hash chain verified" in main and "70" in main
    kinds = {
        r.find_elements(By.TAG_NAME, "td")[2].text
        for r in d.find_elements(By.CSS_SELECTOR, "main tr[class]")
    }
    assert kinds == {"threshold"}
    shot(d, "journal")

    d.get(url + "uplinks")
    assert "Connected" in d.find_element(By.CSS_SELECTOR, 'tr[data-uplink="MQTT"]').text
    shot(d, "uplinks")

    d.get(url)
    d.find_element(By.ID, "lang").click()
    wait_page(
        d, lambda d: "总览" in d.find_element(By.TAG_NAME, "header").text, 5, "Chinese labels"
    )
    text = d.find_element(By.TAG_NAME, "body").text
    assert "1号除尘器 (DC-1)" in text and "灰斗温度" in text and "设备" in text
    assert EVIL + " (DC-2)" in text  # the <script> in a device name is text ...
    assert d.execute_script("return window.pwned === undefined")  # ... and never ran
    shot(d, "overview-zh")


def test_accept_language_picks_chinese_and_a_lan_bind_needs_the_token(tmp_path: Path) -> None:
    cfg = agent_config(tmp_path, 1, 1)  # no simulator, no broker: the page still serves
    web_config(cfg, bind="0.0.0.0")
    check = Proc([str(BIN / "dust-agent"), "check", "-c", str(cfg)], tmp_path / "check.log")
    assert check.proc.wait(30) == 78
    assert re.search(r"web\.bind.*token_file", check.text()), check.text()

    token = tmp_path / "web-token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o644)
    web_config(cfg, bind="0.0.0.0", token_file=str(token))
    check = Proc([str(BIN / "dust-agent"), "check", "-c", str(cfg)], tmp_path / "check2.log")
    assert check.proc.wait(30) == 78 and "chmod 600" in check.text()

    token.chmod(0o600)
    agent = start_agent(cfg, tmp_path / "agent.log")
    try:
        port = agent.wait_log(r"status page on http://0\.0\.0\.0:(\d+)/").group(1)
        base = f"http://127.0.0.1:{port}/"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base, timeout=5)
        assert refused.value.code == 401
        refused.value.close()
        req = urllib.request.Request(
            base, headers={"Authorization": f"Bearer {TOKEN}", "Accept-Language": "zh-CN,en;q=0.5"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            body = resp.read().decode()
            assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        assert "总览" in body and "<script>window" not in body
        assert "&lt;script&gt;window.pwned=1&lt;/script&gt;2号" in body
        post = urllib.request.Request(
            base + "alarms/action", data=b"action=ack", headers=req.headers, method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as no_write:  # allow_ack is off
            urllib.request.urlopen(post, timeout=5)
        assert no_write.value.code in (404, 405)
        no_write.value.close()
    finally:
        assert agent.stop() == 0, agent.text()[-3000:]
    assert (tmp_path / "state" / "history" / "history.json").exists()
