"""Run a bundle in a real headless Chromium (Debian's, at its system path; no browser download),
driven by Playwright's library, and prove its outputs match the source model."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .._require import require
from ..errors import EngineNotInstalledError, ModelkitError
from .server import serving

CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class BrowserError(ModelkitError):
    """The page failed in the browser (a JavaScript error, or the model did not load)."""


def find_chromium() -> str | None:
    """MODELKIT_CHROMIUM, else Debian's chromium on the PATH; None when there is none."""
    return os.environ.get("MODELKIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def chromium_path() -> str:
    path = find_chromium()
    if not path:
        raise EngineNotInstalledError("no Chromium found; install Debian's: apt-get install chromium "
                                      "(or set MODELKIT_CHROMIUM to a Chromium binary)")
    return path


class BrowserSession:
    """A bundle open in headless Chromium: predict() runs modelkit.js in the page."""

    def __init__(self, bundle: str | Path, timeout_s: float = 60.0):
        self.bundle, self.timeout_ms = Path(bundle), timeout_s * 1e3
        self.errors: list[str] = []

    def __enter__(self) -> "BrowserSession":
        api = require("playwright.sync_api", "web", "playwright (it drives Chromium)")
        PlaywrightError, sync_playwright = api.Error, api.sync_playwright
        self._serving = serving(self.bundle)
        self.url = self._serving.__enter__()
        self._pw = sync_playwright().start()
        self._browser = self._pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS, headless=True)
        self.page = self._browser.new_page(viewport={"width": 820, "height": 560})
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.goto(f"{self.url}/index.html")
        try:
            self.page.wait_for_function("window.modelkitReady === true", timeout=self.timeout_ms)
        except PlaywrightError as exc:  # a timeout or a page crash: report what the page said instead
            self.__exit__(None, None, None)
            raise BrowserError(f"the bundle did not load in Chromium: {self.errors or exc}") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        if getattr(self, "_browser", None) is not None:
            self._browser.close()
            self._browser = None
        if getattr(self, "_pw", None) is not None:
            self._pw.stop()
            self._pw = None
        if getattr(self, "_serving", None) is not None:
            self._serving.__exit__(None, None, None)
            self._serving = None

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        payload = {k: {"data": np.asarray(v).ravel().tolist(), "shape": list(np.shape(v))} for k, v in inputs.items()}
        out = self.page.evaluate("""async (inputs) => {
            const out = await window.modelkit.predict(inputs);
            return Object.fromEntries(Object.entries(out).map(
                ([k, v]) => [k, {data: Array.from(v.data, Number), shape: v.shape}]));
        }""", payload)
        return {k: np.asarray(v["data"], np.float32).reshape(v["shape"]) for k, v in out.items()}

    def draw(self, strokes: list[list[tuple[float, float]]]) -> dict[str, Any]:
        """Draw strokes (canvas coordinates) with the mouse; return the page's prediction."""
        box = self.page.locator("#pad").bounding_box()
        for stroke in strokes:
            self.page.mouse.move(box["x"] + stroke[0][0], box["y"] + stroke[0][1])
            self.page.mouse.down()
            for x, y in stroke[1:]:
                self.page.mouse.move(box["x"] + x, box["y"] + y, steps=4)
            self.page.mouse.up()
        self.page.wait_for_function("window.lastPrediction !== undefined", timeout=self.timeout_ms)
        return {"label": self.page.evaluate("window.lastPrediction.label"),
                "shown": self.page.inner_text("#pred")}

    def screenshot(self, path: str | Path) -> Path:
        self.page.screenshot(path=str(path), full_page=True)
        return Path(path)
