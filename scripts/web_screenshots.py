"""Screenshots of the web chat for the docs, from the real servers in headless Chromium (`make screenshots`).

    .venv/bin/python scripts/web_screenshots.py [--out docs] [--url http://127.0.0.1:5005]

1280 px wide: a question answered with a card (bullets, chips), a follow-up and an abstention.
360 px wide: a clarification with its options. Without --url it starts scripts/serve.sh on free ports.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from servers import Stack, launch_chromium  # noqa: E402

WIDE = ["first line endocrine therapy for a postmenopausal woman with ER+ MBC", "and for men?",
        "what dose of letrozole?"]
NARROW = ["which endocrine therapy for ER positive advanced breast cancer?"]


def converse(page, questions: list) -> None:
    for n, question in enumerate(questions):
        page.get_by_label("Ask a question").fill(question)
        page.keyboard.press("Enter")
        page.locator("#log > .turn--bot").nth(n).wait_for()
    page.get_by_label("Ask a question").blur()  # no focus ring in the picture


def shoot(browser, url: str, out: Path) -> list:
    written = []
    page = browser.new_page(viewport={"width": 1280, "height": 900}, reduced_motion="reduce")
    page.goto(url)
    page.wait_for_selector("body[data-ready='true']", state="attached")
    page.get_by_role("button", name="New conversation").click()
    converse(page, WIDE)
    # The whole conversation in one picture, with the composer where it sits (at the bottom of the window).
    page.set_viewport_size({"width": 1280, "height": page.evaluate("document.documentElement.scrollHeight")})
    page.mouse.move(0, 0)
    page.evaluate("window.scrollTo(0, 0)")
    path = out / "webchat-1280.png"
    page.screenshot(path=str(path))
    written.append(path)
    page.close()

    page = browser.new_page(viewport={"width": 360, "height": 780}, reduced_motion="reduce")
    page.goto(url)
    page.wait_for_selector("body[data-ready='true']", state="attached")
    page.get_by_role("button", name="New conversation").click()
    converse(page, NARROW)
    page.mouse.move(0, 0)
    page.evaluate("window.scrollTo(0, 0)")
    path = out / "webchat-360.png"
    page.screenshot(path=str(path))
    written.append(path)
    page.close()
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--url", help="running Rasa server (default: start scripts/serve.sh on free ports)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="web-shots-") as tmp:
        stack = None
        url = args.url
        if not url:
            stack = Stack(Path(tmp), env={"CG81_FEEDBACK_PATH": str(Path(tmp) / "feedback.jsonl")})
            stack.start()
            url = stack.base
        try:
            with sync_playwright() as p:
                browser = launch_chromium(p)
                try:
                    for path in shoot(browser, url.rstrip("/") + "/webhooks/web/", args.out):
                        print(f"wrote {path}")
                finally:
                    browser.close()
        finally:
            if stack is not None:
                stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
