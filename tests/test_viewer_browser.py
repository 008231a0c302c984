"""The viewer in a real browser: Debian's headless Chromium, driven by Selenium through Debian's chromedriver (no
browser or driver is downloaded; .ci/run installs both with apt-get). The page connects, the viewer sends the avatar
rendered server-side as the scene's background, one expression slider moves through the viewer's API, and the page
then shows a different, non-blank image. Skipped, with the reason, where Chromium, chromedriver or Selenium is
missing."""
from __future__ import annotations

import importlib.util
import shutil
import time

import numpy as np
import pytest
import torch

from viewer_avatar import build_tiny_avatar

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"),
    pytest.mark.skipif(importlib.util.find_spec("selenium") is None, reason="needs selenium (requirements-test.txt)"),
    pytest.mark.skipif(importlib.util.find_spec("viser") is None, reason="needs viser (the extra 'viewer')"),
]
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=800,600")
GUI_PANEL_X = 440  # viser's control panel covers the right of an 800 px window; the scene is compared left of it


def _wait(condition, seconds: float, what: str) -> None:
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.1)


def _scene(driver) -> np.ndarray:
    """The page's scene area as RGB uint8 [H, W, 3] (a browser screenshot, left of the control panel)."""
    import cv2

    png = np.frombuffer(driver.get_screenshot_as_png(), np.uint8)
    return cv2.cvtColor(cv2.imdecode(png, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)[:, :GUI_PANEL_X]


def test_headless_chromium_shows_the_rendered_avatar_and_its_expression(tmp_path, monkeypatch):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from cgha.apps.viewer.app import build_viewer
    from cgha.apps.viewer.server import ViewerOptions

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not look for a browser or driver to download
    avatar = build_tiny_avatar(tmp_path / "tiny.cgha")
    viewer = build_viewer(avatar, torch.device("cpu"), ViewerOptions(port=0, resolution=128), backend="torch")
    viewer.start()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + (f"--user-data-dir={tmp_path / 'profile'}",):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        browser.get(viewer.url)
        _wait(lambda: viewer.frames_sent() > 0, 60, "the first frame")
        time.sleep(1.5)  # the browser decodes and paints the frame
        before = _scene(browser)
        sent = viewer.frames_sent()
        viewer.set_expression("jaw_open", 1.5)
        _wait(lambda: viewer.frames_sent() > sent, 60, "the frame after the slider moved")
        time.sleep(1.5)
        after = _scene(browser)
        server_frame = next(iter(viewer.latest_frames().values())).image
    finally:
        browser.quit()
        viewer.stop()
    for image in (before, after):
        assert image.std() > 10.0 and (image.min(axis=2) < 200).mean() > 0.05  # the head is drawn, not a blank page
    assert np.abs(after.astype(int) - before).mean() > 1.0
    assert server_frame.shape[0] == 128  # the resolution chosen, at the window's aspect
