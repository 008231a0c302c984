"""The README's viewer screenshots, taken from headless Chromium (Debian's chromium + chromedriver via Selenium, as
tests/test_viewer_browser.py drives it): the shipped avatar from the start view, then turned, orbited and making a
driver frame's expression with the jaw opened further.

    python docs/make_viewer_screenshots.py --avatar checkpoints/demo/avatar.cgha \\
        --driver checkpoints/demo/driver_id1 --out docs/images
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cgha.apps.viewer.app import build_viewer  # noqa: E402
from cgha.apps.viewer.server import ViewerOptions  # noqa: E402

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,720")


def settle(viewer, sent: int, seconds: float = 120.0) -> None:
    """Wait for a full-resolution frame after `sent`, then for the browser to paint it."""
    end = time.monotonic() + seconds
    while viewer.frames_sent() <= sent and time.monotonic() < end:
        time.sleep(0.1)
    time.sleep(2.0)


def save_jpeg(browser, path: Path) -> None:
    """The browser's screenshot as a JPEG (quality 85: a third of the PNG's bytes)."""
    import cv2

    image = cv2.imdecode(np.frombuffer(browser.get_screenshot_as_png(), np.uint8), cv2.IMREAD_COLOR)
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 85])


def main() -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--avatar", type=Path, required=True)
    parser.add_argument("--driver", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    args = parser.parse_args()
    os.environ["SE_OFFLINE"] = "true"
    viewer = build_viewer(args.avatar, torch.device("cpu"), ViewerOptions(port=0, resolution=args.resolution),
                          driver=args.driver)
    viewer.start()
    profile = tempfile.mkdtemp()
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in FLAGS + (f"--user-data-dir={profile}",):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        browser.get(viewer.url)
        settle(viewer, 0)
        for button in browser.find_elements(By.CSS_SELECTOR, "button.mantine-Notification-closeButton"):
            button.click()  # the "software WebGL" notice of a GPU-less browser
        viewer.show_frame(12)
        settle(viewer, viewer.frames_sent())
        paths = [args.out / f"viewer_front_{args.date}.jpg"]
        save_jpeg(browser, paths[0])
        client = next(iter(viewer.server.get_clients().values()))
        position = np.asarray(client.camera.position)
        look_at = np.asarray(client.camera.look_at)
        offset = position - look_at
        yaw = np.radians(35.0)
        client.camera.position = tuple(look_at + np.array([offset[0] * np.cos(yaw) + offset[2] * np.sin(yaw),
                                                           offset[1] + 0.25 * np.linalg.norm(offset),
                                                           -offset[0] * np.sin(yaw) + offset[2] * np.cos(yaw)]))
        client.camera.look_at = tuple(look_at)  # re-aims the camera from its new position
        viewer.set_turn(-15.0, 5.0, 0.0)
        viewer.set_expression("jaw_open", 0.9)
        viewer.set_expression("smile", 0.8)
        time.sleep(1.0)  # the camera update reaches the browser and comes back before the full frame
        settle(viewer, viewer.frames_sent())
        paths.append(args.out / f"viewer_orbit_{args.date}.jpg")
        save_jpeg(browser, paths[1])
    finally:
        browser.quit()
        viewer.stop()
        shutil.rmtree(profile, ignore_errors=True)
    print("\n".join(str(path) for path in paths))


if __name__ == "__main__":
    main()
