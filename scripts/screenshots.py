"""Screenshots of a running site's researcher pages and a participant's first pages, at desktop and phone
sizes, to look at the product as a new user would (issue 8): login, studies, dashboard, gallery, report,
trained models, and the participant's consent, instructions and A/V check pages.

    python scripts/screenshots.py --base-url http://127.0.0.1:8000 --study demo-talking-faces \
        --user researcher --password PASSWORD --out var/screenshots

Uses Debian's Chromium through Playwright (CHROMIUM_PATH, default /usr/bin/chromium). The participant pages
are opened as a preview session (the study's preview link), so nothing is counted as data.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

SIZES = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--study", required=True, help="the study's slug")
    parser.add_argument("--user", default="researcher")
    parser.add_argument("--password", required=True)
    parser.add_argument("--out", default="var/screenshots")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = args.base_url.rstrip("/")
    chromium = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
    taken = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--mute-audio"])
        for size, viewport in SIZES.items():
            context = browser.new_context(viewport=viewport, locale="en-US")
            page = context.new_page()

            def shot(name: str) -> None:
                page.wait_for_load_state("networkidle")
                width = page.evaluate("document.documentElement.scrollWidth")
                if width > viewport["width"]:
                    print(f"{size} {name}: the page is {width} px wide, wider than the {viewport['width']} px "
                          "screen", file=sys.stderr)
                path = out / f"{size}-{len(taken):02d}-{name}.png"
                page.screenshot(path=str(path), full_page=True)
                taken.append(path)

            page.goto(f"{base}/admin/login/?next=/r/")
            shot("login")
            page.fill("#id_username", args.user)
            page.fill("#id_password", args.password)
            page.click("input[type=submit]")
            shot("studies")
            page.goto(f"{base}/r/{args.study}/")
            shot("dashboard")
            report = page.locator("a[href*='/reports/'][href$='index.html']").first
            report_url = report.get_attribute("href") if report.count() else None
            page.goto(f"{base}/r/{args.study}/gallery/")
            shot("gallery")
            if report_url:
                page.goto(base + report_url if report_url.startswith("/") else report_url)
                shot("report")
            page.goto(f"{base}/models/")
            shot("models")
            page.goto(f"{base}/r/{args.study}/")
            page.locator("form[action$='/preview/'] button, form[action$='/preview/'] input[type=submit]").first.click()
            shot("participant-consent")
            agree = page.locator("input[name=agree]")
            if agree.count():
                agree.first.check()
                page.locator("button[type=submit], input[type=submit]").first.click()
                shot("participant-instructions")
                page.locator("button[type=submit], input[type=submit]").first.click()
                shot("participant-next")
            context.close()
        browser.close()
    for path in taken:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
