"""Headless Debian Chromium through Playwright, with a fake camera and microphone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, async_playwright

# The same browser and flags as the benchmarks' (bench/network.py).
from bench.network import CHROMIUM, CHROMIUM_FLAGS

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            await browser.close()


async def new_context(browser: Browser, base_url: str,
                      viewport: tuple[int, int] | None = None) -> BrowserContext:
    size = {"viewport": {"width": viewport[0], "height": viewport[1]}} if viewport else {}
    context = await browser.new_context(base_url=base_url, **size)
    await context.grant_permissions(["camera", "microphone"], origin=base_url)
    return context


async def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
