"""A real browser for page tests and the prompt bench: Debian's Chromium, driven by Playwright.

Playwright's own browser builds are never downloaded (no `playwright install`): we launch
`/usr/bin/chromium`, headless, with the flags the test rig prescribes, in a fresh user-data
directory, so nothing carries over from a previous run or from a person's profile. Without
that binary the browser tests are skipped, with the reason and the fix in the skip message.

Use `launch_chromium()` in scripts (bench/prompt_latency.py), the `chromium` fixture in tests
(import `chromium_fixture` into the test module), and `open_page()` for one page of the agent.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import BrowserContext, Page, ViewportSize, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
)
#: The small checkout screen the page must fit.
SMALL_SCREEN: ViewportSize = {"width": 800, "height": 480}
NO_CHROMIUM = (
    f"{CHROMIUM} is absent: install Debian's chromium "
    "(apt-get install --no-install-recommends chromium; `make test` does it). "
    "Never `playwright install`."
)


def chromium_present() -> bool:
    return CHROMIUM.exists()


requires_chromium = pytest.mark.skipif(not chromium_present(), reason=NO_CHROMIUM)


@asynccontextmanager
async def launch_chromium(
    user_data_dir: Path | None = None, *, viewport: ViewportSize | None = None
) -> AsyncIterator[BrowserContext]:
    """Chromium with a fresh profile (a temporary directory unless one is given, which must
    be empty); every page opened in the context gets `viewport` (800x480 by default)."""
    if not chromium_present():
        raise FileNotFoundError(NO_CHROMIUM)
    own_dir = user_data_dir is None
    profile = Path(tempfile.mkdtemp(prefix="cumulus-chromium-")) if own_dir else user_data_dir
    assert profile is not None
    try:
        async with async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                str(profile),
                executable_path=str(CHROMIUM),
                args=list(CHROMIUM_ARGS),
                viewport=viewport or SMALL_SCREEN,
                locale="en-GB",
                timezone_id="Europe/Zurich",
            )
            try:
                yield context
            finally:
                await context.close()
    finally:
        if own_dir:
            shutil.rmtree(profile, ignore_errors=True)


@pytest_asyncio.fixture(name="chromium", scope="module", loop_scope="module")
async def chromium_fixture(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[BrowserContext]:
    """Fixture `chromium`: one browser per test module (a launch costs ~0.7 s); each test
    opens its own pages. Import `chromium_fixture` into the test module, and run its tests in
    the module's event loop: ``pytestmark = pytest.mark.asyncio(loop_scope="module")``.
    """
    if not chromium_present():
        pytest.skip(NO_CHROMIUM)
    async with launch_chromium(tmp_path_factory.mktemp("chromium-profile")) as context:
        yield context


@asynccontextmanager
async def open_page(
    context: BrowserContext, url: str, *, viewport: ViewportSize | None = None
) -> AsyncIterator[Page]:
    """A page at `url`, closed on exit. An uncaught JavaScript error on the page fails the
    block (it would otherwise go unseen)."""
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        if viewport is not None:
            await page.set_viewport_size(viewport)
        await page.goto(url)
        yield page
    finally:
        await page.close()
    if errors:
        raise AssertionError(f"JavaScript errors on {url}: {errors}")
