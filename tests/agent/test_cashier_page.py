"""The cashier's Record/Skip page in a real browser (Debian's Chromium, headless).

The agent is real (loopback sockets, outbox on disk); the POS is `Agent.post` with its bearer
token; the cashier is Playwright pressing keys on the page. Nothing here waits a fixed time:
every step waits for a condition on the page or the agent, with a generous limit.

Screenshots of the prompt at 800x480 in the four languages land in
artifacts/screenshots/prompt-<lang>-800x480.png (git-ignored; kept by CI as artifacts).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.async_api import BrowserContext, Page, expect

from agent.api.app import GUARD, make_app, serve
from agent.api.checkout import Checkout
from agent.api.security import Guard
from agent.outbox import AsyncOutbox, SealingKeys
from drivers.cards import mask
from tests.agent.api_rig import POS_TOKEN, VALID_BASKET, Agent, free_port, running_agent
from tests.agent.browser import chromium_fixture, open_page, requires_chromium  # noqa: F401
from tests.factories import HqKeyPair, ean13

pytestmark = [requires_chromium, pytest.mark.asyncio(loop_scope="module")]

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "artifacts" / "screenshots"
CARD = "2099123456786"
MASKED = mask(CARD)  # 2099*******86
WAIT_S = 10.0  # generous: a condition that is not met by then will not be
WAIT_MS = WAIT_S * 1000

QUESTIONS = {
    "de": "Diesen Einkauf auf Cumulus erfassen?",
    "fr": "Enregistrer cet achat sur Cumulus ?",
    "it": "Registrare questo acquisto su Cumulus?",
    "en": "Record this purchase on Cumulus?",
}
LABELS = {  # (record, skip)
    "de": ("Erfassen", "Nicht erfassen"),
    "fr": ("Enregistrer", "Ne pas enregistrer"),
    "it": ("Registrare", "Non registrare"),
    "en": ("Record", "Skip"),
}
TIMEOUT_REASON = "no answer (timeout means skip)"
DECLINED = {"recorded": False, "reason": "customer declined"}


# --- helpers ----------------------------------------------------------------------------------


async def eventually(condition: Callable[[], bool], what: str, limit_s: float = WAIT_S) -> None:
    """Wait until `condition()` holds (polled), or fail naming `what`."""
    end = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"not within {limit_s} s: {what}")
        await asyncio.sleep(0.01)


async def connected(page: Page) -> None:
    await expect(page.locator("#conn")).to_have_attribute("data-ok", "1", timeout=WAIT_MS)


async def prompt_for(page: Page, masked: str = MASKED) -> None:
    """The prompt is on screen for this (masked) card, with both buttons usable."""
    await expect(page.locator("#prompt")).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("#card-number")).to_have_text(masked, timeout=WAIT_MS)
    await expect(page.locator("#record")).to_be_enabled(timeout=WAIT_MS)
    await expect(page.locator("#skip")).to_be_enabled(timeout=WAIT_MS)


async def back_to_idle(page: Page) -> None:
    await expect(page.locator("#prompt")).to_be_hidden(timeout=WAIT_MS)
    await expect(page.locator("#idle")).to_be_visible(timeout=WAIT_MS)


async def flashed(page: Page, outcome: str, text: str) -> None:
    await expect(page.locator(f"#flash.show.{outcome}")).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("#flash-text")).to_have_text(text, timeout=WAIT_MS)


async def basket_parked(agent: Agent) -> asyncio.Task[tuple[int, dict[str, object]]]:
    """The POS closes the sale now (its request waits for the answer); return its request."""
    pending = asyncio.create_task(agent.post("/v1/basket", VALID_BASKET))
    await eventually(lambda: bool(agent.checkout.view()["basket_waiting"]), "basket parked")
    return pending


async def answer(pending: asyncio.Task[tuple[int, dict[str, object]]]) -> dict[str, object]:
    status, body = await asyncio.wait_for(pending, WAIT_S)
    assert status == 200, body
    return body


@asynccontextmanager
async def agent_and_page(
    chromium: BrowserContext,
    tmp_path: Path,
    keys: SealingKeys,
    *,
    path: str = "/",
    timeout_s: float = 20.0,
) -> AsyncIterator[tuple[Agent, Page]]:
    """A running agent and one cashier page on it; the page is closed before the agent stops."""
    async with running_agent(tmp_path, keys, timeout_s=timeout_s) as agent:
        async with open_page(chromium, agent.url + path) as page:
            yield agent, page
        await close_streams_first(agent.checkout)


async def close_streams_first(checkout: Checkout) -> None:
    """Stop like the daemon does: `Checkout.drain()` ends the pages' event streams, then the
    server stops. (`running_agent` stops the server first, which then waits out its 2 s
    shutdown timeout for each stream handler; with this every test is 2 s faster.)"""
    await checkout.drain()


#: Is the element itself what a finger on its centre would touch (nothing drawn over it)?
TOPMOST_AT_CENTRE = """selector => {
    const el = document.querySelector(selector), r = el.getBoundingClientRect();
    const hit = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
    return hit !== null && el.contains(hit);
}"""


def sealing_keys_for(hq_keys: HqKeyPair) -> SealingKeys:
    return SealingKeys.build(
        "0042-07", Ed25519PrivateKey.generate(), hq_keys.kid, hq_keys.suite, hq_keys.public_raw
    )


# --- the flow of "Must show" -----------------------------------------------------------------


async def test_card_then_f1_records_the_basket(
    chromium: BrowserContext,
    tmp_path: Path,
    sealing_keys: SealingKeys,
) -> None:
    async with agent_and_page(chromium, tmp_path, sealing_keys) as (agent, page):
        await connected(page)
        status, _ = await agent.post("/v1/card", {"card": CARD})
        assert status == 200
        await prompt_for(page)
        pending = await basket_parked(agent)
        await page.keyboard.press("F1")
        assert await answer(pending) == {"recorded": True, "seq": 1}
        await flashed(page, "record", "Recorded")
        assert (await agent.outbox.status()).waiting == 1


async def test_no_key_until_the_timeout_means_skip(
    chromium: BrowserContext,
    tmp_path: Path,
    sealing_keys: SealingKeys,
) -> None:
    async with agent_and_page(chromium, tmp_path, sealing_keys, timeout_s=2.0) as (agent, page):
        await connected(page)
        await agent.post("/v1/card", {"card": CARD})
        await prompt_for(page)
        pending = await basket_parked(agent)
        # the countdown is on screen and runs down (no key is pressed); checked every frame
        await page.wait_for_function(
            "() => document.getElementById('seconds').textContent === '1 s'", timeout=WAIT_MS
        )
        assert await answer(pending) == {"recorded": False, "reason": TIMEOUT_REASON}
        await flashed(page, "timeout", "No answer – not recorded")
        await back_to_idle(page)
        assert (await agent.outbox.status()).waiting == 0
        assert agent.checkout.stats.decisions["timeout"] == 1


async def test_escape_skips_and_nothing_is_recorded(
    chromium: BrowserContext,
    tmp_path: Path,
    sealing_keys: SealingKeys,
) -> None:
    async with agent_and_page(chromium, tmp_path, sealing_keys) as (agent, page):
        await connected(page)
        await agent.post("/v1/card", {"card": CARD})
        await prompt_for(page)
        pending = await basket_parked(agent)
        await page.keyboard.press("Escape")
        assert await answer(pending) == DECLINED
        await flashed(page, "skip", "Not recorded")
        assert (await agent.outbox.status()).waiting == 0


async def test_every_shortcut_and_button_answers_as_labelled(
    chromium: BrowserContext,
    tmp_path: Path,
    sealing_keys: SealingKeys,
) -> None:
    """F1/Enter record, F2/Esc skip, the buttons (touch screens) too; one card after the
    other on the same page, so the page also recovers from each outcome for the next card."""
    cases = [
        ("F1", "record"),
        ("Enter", "record"),
        ("F2", "skip"),
        ("Escape", "skip"),
        ("Tab Enter", "skip"),  # Enter on a Skip button focused by keyboard means Skip
        ("click #record", "record"),
        ("click #skip", "skip"),
    ]
    async with agent_and_page(chromium, tmp_path, sealing_keys) as (agent, page):
        await connected(page)
        seq = 0
        for n, (action, outcome) in enumerate(cases):
            card = ean13(f"20990000{n:04d}")
            await agent.post("/v1/card", {"card": card})
            await prompt_for(page, mask(card))
            pending = await basket_parked(agent)
            if action.startswith("click "):
                await page.click(action.removeprefix("click "))
            else:
                for key in action.split():
                    await page.keyboard.press(key)
            if outcome == "record":
                seq += 1
                assert await answer(pending) == {"recorded": True, "seq": seq}, action
            else:
                assert await answer(pending) == DECLINED, action
            await back_to_idle(page)
        assert agent.checkout.stats.decisions == {"record": 3, "skip": 4, "timeout": 0}


# --- what the page shows and says --------------------------------------------------------------


async def test_outcome_flash_names_the_outcome_then_clears(
    chromium: BrowserContext,
    tmp_path: Path,
    sealing_keys: SealingKeys,
) -> None:
    """The decision need not come from the page: the POS's answer flashes too (over SSE)."""
    async with agent_and_page(chromium, tmp_path, sealing_keys, path="/?lang=de") as (agent, page):
        await connected(page)
        await agent.post("/v1/card", {"card": CARD})
        await prompt_for(page)
        await page.keyboard.press("F1")
        await flashed(page, "record", "Erfasst")
        await expect(page.locator("#flash-mark")).to_have_text("✓")
        await expect(page.locator("#flash")).to_be_hidden(timeout=WAIT_MS)

        await agent.post("/v1/card", {"card": CARD})
        await prompt_for(page)
        status, _ = await agent.post("/v1/decision", {"decision": "skip"})
        assert status == 200
        await flashed(page, "skip", "Nicht erfasst")


async def test_a_new_card_is_not_hidden_behind_the_last_outcome(
    chromium: BrowserContext,
    tmp_path: Path,
    sealing_keys: SealingKeys,
) -> None:
    async with agent_and_page(chromium, tmp_path, sealing_keys) as (agent, page):
        await connected(page)
        await agent.post("/v1/card", {"card": CARD})
        await prompt_for(page)
        await page.keyboard.press("Escape")
        await flashed(page, "skip", "Not recorded")
        other = ean13("209955555555")
        await agent.post("/v1/card", {"card": other})  # the next customer, at once
        await prompt_for(page, mask(other))
        # at once, not when the flash would have faded (1.6 s): the same render hides it
        assert not await page.locator("#flash").is_visible()
        assert await page.evaluate(TOPMOST_AT_CENTRE, "#record"), "the Record button is covered"
        await expect(page.locator("#record")).to_be_focused()


async def test_live_region_announces_the_question_then_the_outcome(
    chromium: BrowserContext,
    tmp_path: Path,
    sealing_keys: SealingKeys,
) -> None:
    async with agent_and_page(chromium, tmp_path, sealing_keys) as (agent, page):
        live = page.locator("#live")
        await expect(live).to_have_attribute("aria-live", "assertive")
        # rendered (a display:none region is not in the accessibility tree, so is silent)
        style = await live.evaluate(
            "el => [getComputedStyle(el).display, getComputedStyle(el).visibility]"
        )
        assert style == ["block", "visible"]
        await connected(page)
        await agent.post("/v1/card", {"card": CARD})
        await prompt_for(page)
        await expect(live).to_have_text(
            f"Record this purchase on Cumulus? Card {MASKED}", timeout=WAIT_MS
        )
        await page.keyboard.press("Escape")
        await expect(live).to_have_text("Not recorded", timeout=WAIT_MS)
        # the flash is decoration for screen readers: the live region already said it
        await expect(page.locator("#flash")).to_have_attribute("aria-hidden", "true")


# --- languages and the small screen -----------------------------------------------------------


@dataclass
class OpenPrompt:
    agent: Agent
    context: BrowserContext


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def open_prompt(
    chromium: BrowserContext,
    tmp_path_factory: pytest.TempPathFactory,
    hq_keys: HqKeyPair,
) -> AsyncIterator[OpenPrompt]:
    """One agent shared by read-only page tests; each presents the card itself (a fresh 20 s
    prompt), so the screenshots show what a cashier sees."""
    keys = sealing_keys_for(hq_keys)
    async with running_agent(tmp_path_factory.mktemp("prompt"), keys) as agent:
        yield OpenPrompt(agent, chromium)
        await close_streams_first(agent.checkout)


VISIBLE_PARTS = ("#brand", "#conn", "#card", "#question", "#record", "#skip", "#timer", "#hint")


@pytest.mark.parametrize("lang", ["de", "fr", "it", "en"])
async def test_each_language_asks_its_question_and_fits_800x480(
    open_prompt: OpenPrompt, lang: str
) -> None:
    await open_prompt.agent.post("/v1/card", {"card": CARD})
    async with open_page(open_prompt.context, f"{open_prompt.agent.url}/?lang={lang}") as page:
        await connected(page)
        await prompt_for(page)
        assert await page.evaluate("document.documentElement.lang") == lang
        await expect(page.locator("#question")).to_have_text(QUESTIONS[lang])
        record, skip = LABELS[lang]
        await expect(page.locator("#record")).to_contain_text(record)
        await expect(page.locator("#record kbd")).to_have_text("F1 / Enter")
        await expect(page.locator("#skip")).to_contain_text(skip)
        await expect(page.locator("#skip kbd")).to_have_text("F2 / Esc")
        await expect(page.locator("#seconds")).to_have_text(re.compile(r"^\d+ s$"))
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / f"prompt-{lang}-800x480.png"))

        viewport = page.viewport_size
        assert viewport == {"width": 800, "height": 480}
        for selector in VISIBLE_PARTS:  # every part fully on screen, nothing cut off
            box = await page.locator(selector).bounding_box()
            assert box is not None, f"{selector} is not rendered"
            assert box["x"] >= 0 and box["y"] >= 0, (selector, box)
            assert box["x"] + box["width"] <= 800, (selector, box)
            assert box["y"] + box["height"] <= 480, (selector, box)
        for button in ("#record", "#skip"):  # large enough to hit blind, text not clipped
            box = await page.locator(button).bounding_box()
            assert box is not None
            assert box["width"] >= 300 and box["height"] >= 150, (button, box)
            for part in ("span", "kbd"):  # the label and the key stay inside the button
                inner = await page.locator(f"{button} {part}").bounding_box()
                assert inner is not None
                assert box["x"] <= inner["x"], (button, part)
                assert inner["x"] + inner["width"] <= box["x"] + box["width"], (button, part)
                assert box["y"] <= inner["y"], (button, part)
                assert inner["y"] + inner["height"] <= box["y"] + box["height"], (button, part)
        clipped = await page.evaluate(  # boxes that clip (overflow not visible) and hide content
            """() => [...document.querySelectorAll('main *:not(.sr-only)')]
                 .filter(el => el.clientWidth > 0)
                 .filter(el => getComputedStyle(el).overflowX !== 'visible'
                            || getComputedStyle(el).overflowY !== 'visible')
                 .filter(el => el.scrollWidth > el.clientWidth + 1
                            || el.scrollHeight > el.clientHeight + 1)
                 .map(el => el.id || el.tagName)"""
        )
        assert clipped == [], f"content cut off in: {clipped}"
        page_size = await page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
        )
        assert page_size == [800, 480], "the page scrolls: something does not fit"


async def test_unknown_language_falls_back_to_the_configured_one(open_prompt: OpenPrompt) -> None:
    """An unknown ?lang= falls back to the configured language (English in the rig)."""
    await open_prompt.agent.post("/v1/card", {"card": CARD})
    async with open_page(open_prompt.context, f"{open_prompt.agent.url}/?lang=xx") as page:
        await connected(page)
        await prompt_for(page)
        assert await page.evaluate("document.documentElement.lang") == "en"
        await expect(page.locator("#question")).to_have_text(QUESTIONS["en"])


# --- reconnecting ------------------------------------------------------------------------------


class RestartableAgent:
    """The agent's API on a fixed port, stopped and started again the way the daemon does it
    (agent/service.py): on stop `Checkout.drain()` answers waiting baskets and closes the
    pages' event streams, then the server stops; a start builds a new checkout and app on
    the same outbox file, so page tokens are forgotten, unless `keep_page_tokens` (as if they
    survived: only the browser's own reconnect is then at work, no reload)."""

    def __init__(self, tmp_path: Path, keys: SealingKeys) -> None:
        self.db = tmp_path / "agent.db"
        self.keys = keys
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._guard: Guard | None = None
        self._running: tuple[AsyncOutbox, Checkout, web.AppRunner] | None = None

    @property
    def checkout(self) -> Checkout:
        assert self._running is not None, "the agent is stopped"
        return self._running[1]

    async def start(self, *, keep_page_tokens: bool = False) -> None:
        outbox = await AsyncOutbox.open(self.db, self.keys)
        checkout = Checkout(outbox, terminal="0042-07", store="0042", timeout_s=20.0)
        app = make_app(checkout, port=self.port, pos_token=POS_TOKEN, lang="en")
        if keep_page_tokens and self._guard is not None:
            app[GUARD] = self._guard
        self._guard = app[GUARD]
        runner = await serve(app, "127.0.0.1", self.port)
        self._running = (outbox, checkout, runner)

    async def stop(self) -> None:
        if self._running is not None:
            outbox, checkout, runner = self._running
            self._running = None
            await checkout.drain()
            await runner.cleanup()
            await outbox.close()

    async def post(self, path: str, body: object) -> tuple[int, dict[str, object]]:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                self.url + path, json=body, headers={"Authorization": f"Bearer {POS_TOKEN}"}
            ) as r,
        ):
            return r.status, await r.json()


@asynccontextmanager
async def restartable_agent(tmp_path: Path, keys: SealingKeys) -> AsyncIterator[RestartableAgent]:
    agent = RestartableAgent(tmp_path, keys)
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()


async def test_stream_drop_shows_disconnected_then_reconnects_without_reload(
    chromium: BrowserContext,
    tmp_path: Path,
    sealing_keys: SealingKeys,
) -> None:
    """While the agent is away the page says so and takes no answer (what it shows may be
    stale); the browser reconnects by itself and the next card can be answered."""
    async with (
        restartable_agent(tmp_path, sealing_keys) as agent,
        open_page(chromium, agent.url + "/") as page,
    ):
        await connected(page)
        await page.evaluate("window.sameDocument = true")  # gone if the page reloads
        await agent.post("/v1/card", {"card": CARD})
        await prompt_for(page)
        await agent.stop()
        await expect(page.locator("#conn")).to_have_attribute("data-ok", "0", timeout=WAIT_MS)
        await expect(page.locator("#conn")).to_have_text("disconnected – retrying …")
        await expect(page.locator("#prompt")).to_be_visible()  # the last known, greyed out
        await expect(page.locator("#record")).to_be_disabled()
        await expect(page.locator("#skip")).to_be_disabled()
        await agent.start(keep_page_tokens=True)
        await connected(page)  # EventSource retried by itself
        await back_to_idle(page)  # the new agent's session: no card yet
        assert await page.evaluate("window.sameDocument === true")
        await agent.post("/v1/card", {"card": CARD})
        await prompt_for(page)
        await expect(page.locator("#record")).to_be_focused()
        await page.keyboard.press("F1")
        await flashed(page, "record", "Recorded")
        status, body = await agent.post("/v1/basket", VALID_BASKET)
        assert (status, body) == (200, {"recorded": True, "seq": 1})


async def test_agent_restart_reloads_the_page_with_a_new_token_and_records(
    chromium: BrowserContext,
    tmp_path: Path,
    sealing_keys: SealingKeys,
) -> None:
    """A restart forgets page tokens: the stream is refused (403), so the page reloads itself,
    gets a new token, and a decision from it is accepted."""
    async with (
        restartable_agent(tmp_path, sealing_keys) as agent,
        open_page(chromium, agent.url + "/") as page,
    ):
        await connected(page)
        old_token = await page.evaluate("TOKEN")
        await page.evaluate("window.sameDocument = true")
        await agent.stop()
        await expect(page.locator("#conn")).to_have_attribute("data-ok", "0", timeout=WAIT_MS)
        await agent.start()  # new app: the old page token is unknown
        await page.wait_for_function(
            "() => window.sameDocument === undefined && typeof TOKEN === 'string'",
            timeout=WAIT_MS,
        )
        await connected(page)
        assert await page.evaluate("TOKEN") != old_token
        await agent.post("/v1/card", {"card": CARD})
        await prompt_for(page)
        await page.keyboard.press("F1")
        await flashed(page, "record", "Recorded")
        assert agent.checkout.stats.decisions["record"] == 1


async def test_an_idle_page_renews_its_token_before_it_could_expire(
    chromium: BrowserContext,
    tmp_path: Path,
    sealing_keys: SealingKeys,
) -> None:
    """Page tokens live 24 h; a page open for 12 h reloads itself while idle (fake clock)."""
    async with running_agent(tmp_path, sealing_keys) as agent:
        page = await chromium.new_page()
        try:
            await page.clock.install()
            await page.goto(agent.url + "/")
            await connected(page)
            await page.evaluate("window.sameDocument = true")
            await page.clock.fast_forward("11:59:00")
            await page.clock.run_for(2 * 60 * 1000)  # the minute check after 12 h reloads
            await page.wait_for_function("() => window.sameDocument === undefined", timeout=WAIT_MS)
            await connected(page)
        finally:
            await page.close()
        await close_streams_first(agent.checkout)
