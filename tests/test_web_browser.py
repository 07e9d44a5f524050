"""The web chat in a real browser: headless Chromium (Debian's) driven by Playwright, against the real
Rasa server and action server started by scripts/serve.sh on free ports.

Needs `make install-browser` (Chromium, Playwright, axe-core) and a trained model; `make test-web` runs
these alone, `make test-e2e` with the REST end-to-end tests. The last test stops and restarts the servers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import pytest
import yaml

from assistant import config, links

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

TURN_TIMEOUT_MS = 90_000  # one turn is ~0.1-0.3 s idle; generous for a loaded 2-core CI machine
FIRST_LINE = "first line endocrine therapy for a postmenopausal woman with ER+ MBC"
CLARIFY = "which endocrine therapy for ER positive advanced breast cancer?"
OPTIONS = ["Postmenopausal woman", "Premenopausal or perimenopausal woman", "Man"]
XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"> and bone mets imaging?'
SECRET = "browser-tests-" + os.urandom(12).hex()


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def stack():
    """Both servers; a fixed signing key so sessions survive the restart in the last test. Their logs and
    feedback file live in a directory of their own (pytest's rotating temp dirs can vanish under a long run
    when other pytest sessions run on the machine)."""
    from servers import Stack

    tmp = Path(tempfile.mkdtemp(prefix="cg81-web-tests-"))
    stack = Stack(tmp, env={"CG81_WEB_SECRET": SECRET, "CG81_FEEDBACK_PATH": str(tmp / "feedback.jsonl")})
    try:
        stack.start()
        smoke = stack.smoke_test()
        if smoke:
            pytest.fail(f"the servers started but do not answer: {smoke}\n{stack.logs()}")
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield stack
    stack.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    from servers import INSTALL_HINT, launch_chromium

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"Playwright is not installed: {INSTALL_HINT}")
    with sync_playwright() as p:
        try:
            chromium = launch_chromium(p)
        except Exception as exc:  # noqa: BLE001 - say what to do, whatever went wrong
            pytest.fail(f"Chromium did not start ({exc}): {INSTALL_HINT}")
        yield chromium
        chromium.close()


def open_page(browser, stack, width=1280, height=900):
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(TURN_TIMEOUT_MS)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.goto(stack.web)
    page.wait_for_selector("body[data-ready='true']", state="attached")
    return page


@pytest.fixture
def page(browser, stack):
    page = open_page(browser, stack)
    yield page
    errors = list(page.errors)
    page.context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def expect():
    from playwright.sync_api import expect as _expect

    _expect.set_options(timeout=TURN_TIMEOUT_MS)
    return _expect


def bot_turns(page):
    return page.locator("#log > .turn--bot")


def ask(page, text: str):
    """Type a question, press Enter, and return the bot turn that answers it once it is visible."""
    n = bot_turns(page).count()
    box = page.get_by_label("Ask a question")
    box.fill(text)
    box.press("Enter")
    turn = bot_turns(page).nth(n)
    expect()(turn).to_be_visible()
    return turn


def card(scope, rec_id: str):
    return scope.locator(f"article[data-rec-id='{rec_id}']")


def assert_card(scope, record: dict) -> None:
    """The card shows the recommendation as the corpus has it: ID, year, strength, place, exact text, link."""
    c = card(scope, record["id"]).first
    expect()(c).to_be_visible()
    text_el = c.locator("[data-rec-text]")
    assert text_el.text_content() == record["text"]
    expect()(text_el).to_be_visible()
    assert f"{record['id']} [{record['year']}]" in c.locator("h3").inner_text()
    badge = {"offer": "Offer", "consider": "Consider", "do not": "Do not", "other": "Other wording"}[record["strength"]]
    assert c.locator(".badge").inner_text() == badge
    place = f"{record['section']} {record['section_title']}"
    if record.get("subsection"):
        place += f" › {record['subsection']}"
    assert c.locator(".card__where").inner_text() == place
    assert c.get_by_role("link", name=re.compile("View on NICE website")).get_attribute("href") == \
        links.nice_url(record)


# ---------------------------------------------------------------------- scenarios
def test_question_gives_a_card_with_the_exact_corpus_text(page, corpus_by_id):
    expect()(page.get_by_role("button", name=re.compile("Show recommendation 1.5.16"))).to_be_visible()  # examples
    turn = ask(page, FIRST_LINE)
    assert turn.locator("article[data-rec-id]").first.get_attribute("data-rec-id") == "1.3.4"
    assert_card(turn, corpus_by_id["1.3.4"])
    # The bullets are laid out as a list, and the text is the corpus text character for character.
    assert turn.locator("article[data-rec-id='1.3.4'] [data-rec-text] li").count() == 2
    expect()(page.locator("#empty")).to_be_hidden()
    expect()(page.locator("#typing")).to_be_hidden()


def test_copy_citation_copies_the_exact_text(browser, stack, corpus_by_id):
    page = open_page(browser, stack)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.base)
    turn = ask(page, FIRST_LINE)
    card(turn, "1.3.4").get_by_role("button", name="Copy citation").click()
    expect()(card(turn, "1.3.4").get_by_role("button", name="Copied")).to_be_visible()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == f"NICE CG81 recommendation 1.3.4 [2009]: {corpus_by_id['1.3.4']['text']}"
    page.context.close()


def test_clarification_clicked_through_to_the_answer(page, corpus_by_id):
    turn = ask(page, CLARIFY)
    expect()(turn.locator(".clarify__question")).to_have_text(re.compile(r"\?"))
    assert turn.locator(".option").all_inner_texts() == OPTIONS
    assert {"1.3.4", "1.3.5", "1.3.7"} <= set(turn.locator("article[data-rec-id]").evaluate_all(
        "cards => cards.map(c => c.dataset.recId)"))
    n = bot_turns(page).count()
    turn.get_by_role("button", name="Man", exact=True).click()
    answer = bot_turns(page).nth(n)
    expect()(answer).to_be_visible()
    assert answer.locator("article[data-rec-id]").first.get_attribute("data-rec-id") == "1.3.7"
    assert_card(answer, corpus_by_id["1.3.7"])
    # The option became the user's message, and the old options can no longer be clicked.
    assert page.locator("#log > .turn--user .bubble").last.inner_text() == "Man"
    expect()(turn.get_by_role("button", name="Man", exact=True)).to_be_disabled()


def test_follow_up_keeps_the_context(page, corpus_by_id):
    ask(page, FIRST_LINE)
    follow = ask(page, "and for men?")
    assert follow.locator("article[data-rec-id]").first.get_attribute("data-rec-id") == "1.3.7"
    assert_card(follow, corpus_by_id["1.3.7"])


def reload(page):
    page.reload()
    page.wait_for_selector("body[data-ready='true']", state="attached")


def test_reload_keeps_the_history_and_the_context(page, corpus_by_id):
    ask(page, FIRST_LINE)
    token = page.evaluate("JSON.parse(localStorage.getItem('cg81.web.session')).token")
    reload(page)
    expect()(bot_turns(page)).to_have_count(1)
    assert_card(bot_turns(page).nth(0), corpus_by_id["1.3.4"])
    # The server kept the context: a follow-up after the reload resolves against the first question.
    follow = ask(page, "and for men?")
    assert follow.locator("article[data-rec-id]").first.get_attribute("data-rec-id") == "1.3.7"
    abstain = ask(page, "what dose of letrozole?")
    expect()(abstain.locator("[data-abstained='true']")).to_contain_text("no recommendation")
    before = page.locator("#log").inner_text()
    reload(page)
    expect()(bot_turns(page)).to_have_count(3)
    assert page.locator("#log > .turn--user .bubble").all_inner_texts() == [
        FIRST_LINE, "and for men?", "what dose of letrozole?"]
    assert_card(bot_turns(page).nth(0), corpus_by_id["1.3.4"])
    assert_card(bot_turns(page).nth(1), corpus_by_id["1.3.7"])
    expect()(bot_turns(page).nth(2).locator("[data-abstained='true']")).to_be_visible()
    assert page.locator("#log").inner_text() == before  # the same cards as before the reload
    assert page.evaluate("JSON.parse(localStorage.getItem('cg81.web.session')).token") == token


def test_new_conversation_clears_the_page_and_the_context(page):
    ask(page, FIRST_LINE)
    old = page.evaluate("localStorage.getItem('cg81.web.session')")
    page.get_by_role("button", name="New conversation").click()
    expect()(page.locator("#log > .turn")).to_have_count(0)
    expect()(page.locator("#empty")).to_be_visible()
    expect()(page.get_by_label("Ask a question")).to_be_focused()
    new = page.evaluate("localStorage.getItem('cg81.web.session')")
    assert new and new != old
    assert json.loads(new)["conversation_id"] != json.loads(old)["conversation_id"]
    reload(page)
    expect()(page.locator("#empty")).to_be_visible()
    assert page.locator("#log > .turn").count() == 0


def test_a_new_session_is_shown_as_a_break(page):
    """After the idle timeout the server marks the turn `new_session` (context cleared): the page says so.
    The server's real reply, with the flag set as the server sets it after a timeout (tests/test_webchat.py)."""
    ask(page, FIRST_LINE)

    def flagged(route):
        reply = route.fetch().json()
        reply["turn"]["new_session"] = True
        route.fulfill(status=200, content_type="application/json", body=json.dumps(reply))

    page.route("**/webhooks/web/message", flagged)
    ask(page, "and for men?")
    page.unroute("**/webhooks/web/message")
    divider = page.locator("#log > .session-break")
    expect()(divider).to_contain_text("no longer holds the earlier patient details")
    # It stands between the first answer and the second question.
    assert page.evaluate("document.querySelector('#log > .session-break').nextElementSibling.innerText"
                         ).endswith("and for men?")


def test_also_relevant_chip_looks_the_recommendation_up(page, corpus_by_id):
    turn = ask(page, "should I monitor with PET-CT?")
    chips = turn.locator("button.chip")
    expect()(chips.first).to_be_visible()
    rec_id = chips.first.get_attribute("data-lookup")
    assert rec_id in corpus_by_id and card(turn, rec_id).count() == 0
    n = bot_turns(page).count()
    chips.first.click()
    looked_up = bot_turns(page).nth(n)
    expect()(looked_up).to_be_visible()
    assert looked_up.locator("article[data-rec-id]").first.get_attribute("data-rec-id") == rec_id
    assert_card(looked_up, corpus_by_id[rec_id])


def test_xss_probe_shows_literally_and_runs_nothing(page, stack):
    ask(page, XSS)
    assert page.locator("#log > .turn--user .bubble").last.inner_text() == XSS
    assert page.locator("#log img, #log script").count() == 0
    # A recommendation text with markup (a crafted server reply): shown as text too.
    evil = {"id": "1.3.4", "text": "<script>window.__xss = 3</script>\n• <img src=x onerror=\"window.__xss = 4\">",
            "year": 2009, "section": "1.3", "section_title": "<b>bold</b>", "subsection": None,
            "strength": "offer", "kind": "recommendation", "score": 1.0}
    reply = {"conversation_id": "x", "links": {"1.3.4": "javascript:alert(1)"}, "turn": {
        "turn_id": "0" * 32, "user": "probe", "messages": [
            {"text": "NICE CG81 recommendation 1.3.4 [2009]\n" + evil["text"]},
            {"custom": {"type": "guideline_answer", "guideline": "CG81", "abstained": False, "answers": [evil],
                        "clarification": None, "notes": ["<i>note</i>"]}}]}}
    page.route("**/webhooks/web/message", lambda route: route.fulfill(status=200, content_type="application/json",
                                                                       body=json.dumps(reply)))
    turn = ask(page, "probe")
    page.unroute("**/webhooks/web/message")
    assert card(turn, "1.3.4").locator("[data-rec-text]").text_content() == evil["text"]
    assert "<b>bold</b>" in card(turn, "1.3.4").locator(".card__where").inner_text()
    assert page.locator("#log img, #log script, #log b, #log i").count() == 0
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert card(turn, "1.3.4").get_by_role("link").get_attribute("href").startswith("https://www.nice.org.uk/")
    # The CSP forbids inline script: one put into the page by other means does not run either.
    page.evaluate("""() => { const s = document.createElement('script');
                             s.textContent = 'window.__inline = 1'; document.body.appendChild(s); }""")
    assert page.evaluate("typeof window.__inline") == "undefined"
    csp = page.request.get(stack.web).headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp


def test_keyboard_only_flow(page, corpus_by_id):
    focused = "() => { const e = document.activeElement; return e.id || e.dataset.option || e.textContent.trim(); }"
    order = []
    for _ in range(12):  # Tab from the top of the page: skip link, header, examples, then the question box
        page.keyboard.press("Tab")
        order.append(page.evaluate(focused))
        if order[-1] == "question":
            break
    assert order[0] == "Skip to the question box" and order[1] == "new-conversation", order
    assert order[-1] == "question" and len(order) == 7, order  # 4 examples in between
    page.keyboard.press("Tab")
    assert page.evaluate(focused) == "send"
    page.keyboard.press("Shift+Tab")
    page.keyboard.type(CLARIFY)
    n = bot_turns(page).count()
    page.keyboard.press("Enter")
    expect()(bot_turns(page).nth(n).locator(".option").first).to_be_visible()
    # Back from the question box into the conversation until the "Man" option has the focus, then Enter.
    for _ in range(60):
        page.keyboard.press("Shift+Tab")
        if page.evaluate(focused) == "Man":
            break
    assert page.evaluate(focused) == "Man"
    page.keyboard.press("Enter")
    answer = bot_turns(page).nth(n + 1)
    expect()(answer).to_be_visible()
    assert answer.locator("article[data-rec-id]").first.get_attribute("data-rec-id") == "1.3.7"
    expect()(page.get_by_label("Ask a question")).to_be_focused()  # ready for the next question
    # Feedback by keyboard: back from the question box to the answer's thumbs up, then Space.
    for _ in range(10):
        page.keyboard.press("Shift+Tab")
        if page.evaluate("document.activeElement.dataset.feedback") == "up":
            break
    assert page.evaluate("document.activeElement.dataset.feedback") == "up"
    page.keyboard.press("Space")
    expect()(answer.locator("[data-feedback='up']").last).to_have_attribute("aria-pressed", "true")


def test_feedback_is_stored_with_the_turn_and_exported(page, stack):
    ask(page, FIRST_LINE)
    turn = ask(page, "and for men?")
    card(turn, "1.3.7").locator("[data-feedback='up']").click()
    expect()(card(turn, "1.3.7").locator("[data-feedback='up']")).to_have_attribute("aria-pressed", "true")
    abstain = ask(page, "what dose of letrozole?")
    abstain.locator("[data-feedback='down']").click()
    expect()(abstain.locator("[data-feedback='down']")).to_have_attribute("aria-pressed", "true")
    conversation = page.evaluate("JSON.parse(localStorage.getItem('cg81.web.session')).conversation_id")
    path = stack.workdir / "feedback.jsonl"
    mine = [json.loads(line) for line in path.read_text().splitlines() if conversation in line]
    assert [(r["value"], r["rec_ids"], r["turns"]) for r in mine] == [
        ("up", ["1.3.7"], [FIRST_LINE, "and for men?"]),
        ("down", [], [FIRST_LINE, "and for men?", "what dose of letrozole?"])]
    assert mine[0]["answer_ids"][0] == "1.3.7" and mine[1]["abstained"] is True
    out = subprocess.run([sys.executable, "scripts/export_feedback.py", "--feedback", str(path)], check=True,
                         capture_output=True, text=True, cwd=config.ROOT)
    doc = yaml.safe_load(out.stdout)
    schema = json.loads((config.ROOT / "tests" / "gold" / "gold.schema.json").read_text())
    jsonschema.validate(doc, schema)
    assert {"turns": [FIRST_LINE, "and for men?"], "expected": ["1.3.7"]} in [
        {k: i[k] for k in ("turns", "expected")} for i in doc["items"]]
    assert "thumbs down" in out.stdout


def test_error_answer_shows_the_error_state_and_retry_works(page, corpus_by_id):
    page.route("**/webhooks/web/message", lambda route: route.fulfill(status=500, body="Internal Server Error"))
    box = page.get_by_label("Ask a question")
    box.fill(FIRST_LINE)
    box.press("Enter")
    alert = page.get_by_role("alert")
    expect()(alert).to_contain_text("answered with an error")
    expect()(alert).to_contain_text("No recommendation has been given")
    assert page.locator("#log > .turn--user .bubble").all_inner_texts() == [FIRST_LINE]
    expect()(box).to_have_value(FIRST_LINE)  # nothing lost: the question can be edited and re-sent
    page.unroute("**/webhooks/web/message")
    box.fill("")
    alert.get_by_role("button", name="Try again").click()
    expect()(card(page, "1.3.4")).to_be_visible()
    assert_card(page, corpus_by_id["1.3.4"])
    assert page.locator("#log > .turn--user .bubble").all_inner_texts() == [FIRST_LINE]
    assert page.get_by_role("alert").count() == 0


def test_narrow_screen_360px(browser, stack, corpus_by_id):
    page = open_page(browser, stack, width=360, height=780)
    turn = ask(page, FIRST_LINE)
    assert_card(turn, corpus_by_id["1.3.4"])
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    box = card(turn, "1.3.4").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 360
    expect()(page.get_by_role("button", name="Send")).to_be_in_viewport()
    page.context.close()


def _axe(page) -> list:
    from servers import AXE_JS, INSTALL_HINT

    if not AXE_JS.exists():
        pytest.fail(f"axe-core is missing ({AXE_JS}): {INSTALL_HINT}")
    if not page.evaluate("typeof window.axe") == "object":
        page.evaluate(AXE_JS.read_text(encoding="utf-8"))  # through the DevTools protocol: the page's CSP stays on
    result = page.evaluate("""() => axe.run(document, {runOnly: {type: 'tag',
        values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})""")
    return result["violations"]


@pytest.mark.parametrize("width", [1280, 360])
def test_accessibility_axe_no_serious_or_critical(browser, stack, width):
    page = open_page(browser, stack, width=width, height=900)
    found = {"empty": _axe(page)}
    ask(page, CLARIFY)
    page.get_by_role("button", name="Man", exact=True).click()
    expect()(bot_turns(page)).to_have_count(2)
    ask(page, "should I monitor with PET-CT?")
    ask(page, "what dose of letrozole?")
    page.route("**/webhooks/web/message", lambda route: route.fulfill(status=502, body=""))
    page.get_by_label("Ask a question").fill("bone mets imaging?")
    page.get_by_label("Ask a question").press("Enter")
    expect()(page.get_by_role("alert")).to_be_visible()
    found["conversation"] = _axe(page)
    page.context.close()
    summary = {state: [(v["id"], v["impact"], len(v["nodes"])) for v in vs] for state, vs in found.items()}
    print(f"axe at {width}px: {summary}")
    bad = {state: [(v["id"], v["impact"], v["help"], [n["target"] for n in v["nodes"]][:3]) for v in vs
                   if v["impact"] in ("serious", "critical")] for state, vs in found.items()}
    assert not any(bad.values()), bad


def test_server_stopped_mid_conversation_then_back(page, stack, corpus_by_id):
    """Last on purpose: it stops the servers and starts them again (same ports, same signing key)."""
    ask(page, FIRST_LINE)
    stack.stop()
    box = page.get_by_label("Ask a question")
    box.fill("should I monitor with PET-CT?")
    box.press("Enter")
    alert = page.get_by_role("alert")
    expect()(alert).to_contain_text("cannot be reached")
    expect()(page.locator("#typing")).to_be_hidden()
    assert page.locator("#log > .turn--user .bubble").all_inner_texts() == [FIRST_LINE,
                                                                             "should I monitor with PET-CT?"]
    assert_card(page, corpus_by_id["1.3.4"])  # the earlier answer is still on the page
    stack.start()
    box.fill("")
    alert.get_by_role("button", name="Try again").click()
    expect()(card(page, "1.1.8")).to_be_visible()
    assert_card(page, corpus_by_id["1.1.8"])
    assert page.get_by_role("alert").count() == 0
