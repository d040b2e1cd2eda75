"""End to end in a real browser: Debian's chromium, headless, driven by Selenium through Debian's
chromedriver (no browser download). A tester opens their link, answers with clicks and keys, undoes,
reloads and resumes; the answers are checked in SQLite.

Set STEDQ_STUDY_SCREENSHOT=docs/study-screenshot.png to also save the judging page there."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from stedq.study import store
from stedq.study.create import create_study
from tests.conftest import require_tool
from tests.study_helpers import labelled_folder, running_app

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,800"]


@pytest.fixture
def browser(tmp_path, monkeypatch):
    chromium, chromedriver = require_tool("chromium"), require_tool("chromedriver")
    monkeypatch.setenv("SE_OFFLINE", "true")   # Selenium Manager must never try to download
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for_text(driver, css: str, text: str, timeout: float = 10.0) -> None:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    # the page re-renders the element as it checks: ChromeDriver may then answer "Node with given id does
    # not belong to the document" for one poll (seen once in a fresh-clone run); a later poll finds the new
    # node, and a text that never comes still fails with a timeout
    WebDriverWait(driver, timeout, ignored_exceptions=(WebDriverException,)).until(
        expected_conditions.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))


def press(driver, key: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(key).perform()


def test_a_tester_answers_with_clicks_and_keys_undoes_and_resumes(tmp_path, browser):
    from selenium.webdriver.common.by import By

    folder, predictions = labelled_folder(tmp_path, n=3, size=96)
    study = tmp_path / "study"
    token = create_study(study, folder, str(predictions), testers=["alice"], cmap="magma")["alice"]
    with running_app(study) as url:
        browser.get(f"{url}/t/{token}")
        wait_for_text(browser, "#progress", "trial 1 of 6")
        image = browser.find_element(By.ID, "image")
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) == 96
        assert image.size["width"] >= 400                        # shown large
        screenshot = tmp_path / "judging.png"
        browser.save_screenshot(str(screenshot))
        assert screenshot.read_bytes()[:4] == b"\x89PNG"
        if os.environ.get("STEDQ_STUDY_SCREENSHOT"):
            shutil.copy(screenshot, Path(os.environ["STEDQ_STUDY_SCREENSHOT"]))

        browser.find_element(By.ID, "answer-A").click()             # trial 0: click A
        wait_for_text(browser, "#progress", "trial 2 of 6")
        press(browser, "b")                                          # trial 1: key B
        wait_for_text(browser, "#progress", "trial 3 of 6")
        press(browser, "e")                                          # trial 2: key E (equivalent)
        wait_for_text(browser, "#progress", "trial 4 of 6")
        browser.find_element(By.ID, "answer-discard").click()        # trial 3: click discard
        wait_for_text(browser, "#progress", "trial 5 of 6")
        press(browser, "u")                                          # undo trial 3
        wait_for_text(browser, "#progress", "trial 4 of 6")
        press(browser, "d")                                          # trial 3 again: key D
        wait_for_text(browser, "#progress", "trial 5 of 6")

        browser.refresh()                                            # reload: same place
        wait_for_text(browser, "#progress", "trial 5 of 6")
        browser.get("about:blank")                                   # leave and come back: resume
        browser.get(f"{url}/t/{token}")
        wait_for_text(browser, "#progress", "trial 5 of 6")
        press(browser, "a")
        wait_for_text(browser, "#progress", "trial 6 of 6")
        browser.find_element(By.ID, "answer-B").click()
        wait_for_text(browser, "#done", "All 6 trials answered")

        browser.get(f"{url}/t/someone-elses-token")
        assert "not valid" in browser.find_element(By.TAG_NAME, "body").text

    conn = store.connect(study)
    tester_id = store.tester_by_token(conn, token)["id"]
    log = store.answer_log(conn, tester_id)
    standing = {r["position"]: r for r in store.standing_answers(conn)}
    trials = {p: store.trial_at(conn, tester_id, p) for p in range(6)}
    conn.close()
    assert [(r["position"], r["answer"], r["undone_at"] is not None) for r in log] == [
        (0, "A", False), (1, "B", False), (2, "equal", False), (3, "discard", True), (3, "discard", False),
        (4, "A", False), (5, "B", False)]
    other = {"target": "prediction", "prediction": "target"}
    assert standing[0]["choice"] == trials[0]["a_is"]
    assert standing[1]["choice"] == other[trials[1]["a_is"]]
    assert standing[2]["choice"] == "equal" and standing[3]["choice"] == "discard"
    assert standing[4]["choice"] == trials[4]["a_is"] and standing[5]["choice"] == other[trials[5]["a_is"]]
