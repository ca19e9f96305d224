"""The page of `spectro serve` in a real browser: Debian's chromium, headless, driven by selenium through
chromium-driver, against a real uvicorn server on 127.0.0.1.

Skipped, with the reason, only where chromium, its driver or selenium is missing (`.ci/run` installs them).
Set SPECTRO_SCREENSHOT=docs/serve.png to keep the page's screenshot for the README.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile
from conftest import write_audio
from test_serve import speech_like

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                reason="chromium or chromedriver is not installed (apt-get install chromium "
                                       "chromium-driver; .ci/run does)")


@contextlib.contextmanager
def live_server(model, **settings):
    """uvicorn serving `model` on a free 127.0.0.1 port in a thread; yields the base URL once /readyz is 200."""
    import uvicorn

    from spectro.serve.app import ServeSettings, create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(model, ServeSettings(**settings)), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}/"
    headers = {"Authorization": f"Bearer {settings['token']}"} if settings.get("token") else {}
    try:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "readyz", headers=headers, timeout=1).status_code == 200:
                    break
            time.sleep(0.05)
        else:
            raise AssertionError("the server never became ready")
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def browser():
    """Headless chromium with a fresh profile, a fake microphone, and no background traffic."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra has it)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="spectro-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 "--window-size=960,1050", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for_answer(driver, *, timeout: float = 30) -> str:
    """Wait until the page has an answer or an error; the status element's state."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    status = driver.find_element(By.ID, "status")
    WebDriverWait(driver, timeout).until(lambda _: status.get_attribute("data-state") in ("done", "error"))
    return status.get_attribute("data-state")


def upload(driver, url: str, path: str) -> str:
    """Open the page, give `path` to its file input, and wait for the answer."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    driver.find_element(By.ID, "file").send_keys(path)
    return wait_for_answer(driver)


def shown(driver) -> dict:
    """What the page shows: the label, the bars' numbers, the timeline's windows, the picture's width."""
    from selenium.webdriver.common.by import By

    bars = {row.get_attribute("data-label"): float(row.get_attribute("data-score"))
            for row in driver.find_elements(By.CSS_SELECTOR, "#bars .bar-row")}
    windows = [(w.get_attribute("data-label"), float(w.get_attribute("data-score")))
               for w in driver.find_elements(By.CSS_SELECTOR, "#timeline .window")]
    return {"label": driver.find_element(By.ID, "label").get_attribute("textContent"), "bars": bars, "windows": windows,
            "picture_width": driver.execute_script("return document.getElementById('picture').naturalWidth"),
            "status": driver.find_element(By.ID, "status").text}


@pytest.fixture(scope="module")
def predictor(sharp):
    from spectro import Predictor

    return Predictor.load(sharp)


def test_the_page_shows_what_the_api_answers_for_an_uploaded_and_a_recorded_clip(predictor, tmp_path):
    from selenium.webdriver.common.by import By

    wav = write_audio(tmp_path / "upload.wav", speech_like(7.0, seed=8))
    with live_server(predictor) as url, browser() as driver:
        assert upload(driver, url, wav) == "done"
        page = shown(driver)
        api = httpx.post(url + "v1/predict", files={"file": ("upload.wav", open(wav, "rb").read())}).json()
        assert page["label"] == api["label"] and page["bars"] == api["probabilities"]
        assert page["windows"] == [(w["label"], w["probabilities"][w["label"]]) for w in api["windows"]]
        assert len(page["windows"]) == 4 and page["picture_width"] > 0
        assert "upload.wav" in page["status"] and api["label"] in page["status"]
        assert "tiny_efficientnet" in driver.find_element(By.ID, "model").text
        screenshot = Path(os.environ.get("SPECTRO_SCREENSHOT") or tmp_path / "serve.png")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000

        junk = tmp_path / "junk.wav"
        junk.write_bytes(b"not audio at all " * 50)
        assert upload(driver, url, str(junk)) == "error"
        assert "Format not recognised" in shown(driver)["status"] and "415" in shown(driver)["status"]

        driver.get(url)  # the microphone: chromium's fake device, recorded by MediaRecorder, sent as WAV
        record = driver.find_element(By.ID, "record")
        record.click()
        time.sleep(2.5)
        record.click()
        assert wait_for_answer(driver) == "done", shown(driver)["status"]
        assert "recording.wav" in shown(driver)["status"] and shown(driver)["label"] in predictor.classes


def test_the_page_asks_for_the_token_and_keeps_it_for_the_session(predictor, tmp_path):
    from selenium.webdriver.common.by import By

    y = speech_like(2.0, seed=9)
    wav = str(tmp_path / "clip.flac")
    soundfile.write(wav, np.stack([y, y], axis=1), 16000)
    with live_server(predictor, token="page-token") as url, browser() as driver:
        assert upload(driver, url, wav) == "error" and "token" in shown(driver)["status"]
        assert "needs a token" in driver.find_element(By.ID, "model").text
        driver.find_element(By.ID, "token").send_keys("page-token\t")  # tab away: the change event stores it
        driver.get(url)  # a reload keeps the token (sessionStorage)
        driver.find_element(By.ID, "file").send_keys(wav)
        assert wait_for_answer(driver) == "done"
        assert shown(driver)["label"] == predictor.predict(wav).label
