r"""Open s2s-explore in headless Chromium and save a screenshot of the page (the README's picture).

    python scripts/explorer_screenshot.py RUN_DIR [RUN_DIR ...] --sentence "The cat sleeps." \
        --out docs/img/explorer.png

Needs Debian's ``chromium`` and ``chromium-driver`` (``make test`` installs them as root) and Selenium (the ``dev``
extra). `chrome` is also what the browser tests drive the page with.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
from pathlib import Path

CHROMIUM = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = ("/usr/bin/chromedriver", "chromedriver")


def find(names: tuple[str, ...]) -> str | None:
    for name in names:
        path = shutil.which(name) or (name if Path(name).is_file() else None)
        if path:
            return path
    return None


def missing() -> str | None:
    """Why the browser cannot be started here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "Selenium is not installed (pip install '.[dev]')"
    if find(CHROMIUM) is None or find(CHROMEDRIVER) is None:
        return "Chromium and its driver are not installed (apt-get install chromium chromium-driver)"
    return None


def chrome(width: int = 1500, height: int = 1000):
    """A headless Chromium driven by Selenium, on a profile of its own, that reaches nothing but this machine."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = find(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-extensions", f"--window-size={width},{height}",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='s2s-chromium-')}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=find(CHROMEDRIVER)), options=options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--sentence", required=True)
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--gold", nargs=3, metavar=("SRC", "TGT", "LINKS"))
    parser.add_argument("--gold-sentence", type=int, default=1, help="the gold sentence to show (from 1)")
    parser.add_argument("--out", default="docs/img/explorer.png")
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args()
    if reason := missing():
        raise SystemExit(reason)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from s2s_attn.explore.server import Explorer, make_server
    from s2s_attn.explore.views import ExplorerRun, GoldSet

    gold = GoldSet(*args.gold) if args.gold else None
    explorer = Explorer([ExplorerRun(path, index) for index, path in enumerate(args.runs)], gold)
    server = make_server(explorer, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    driver = chrome(height=args.height)
    try:
        driver.get(f"http://127.0.0.1:{server.server_address[1]}/")
        WebDriverWait(driver, 120).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        if args.beam > 1:
            Select(driver.find_element(By.ID, "decoding")).select_by_value("beam")
            width = driver.find_element(By.ID, "beam-width")
            width.clear()
            width.send_keys(str(args.beam))
        driver.find_element(By.ID, "sentence").send_keys(args.sentence + "\n")
        WebDriverWait(driver, 300).until(lambda d: all(c.get_attribute("data-ready") for c in
                                                       d.find_elements(By.CSS_SELECTOR, "#columns .run")))
        if gold is not None:  # the set's AER table and the chosen gold sentence's columns
            WebDriverWait(driver, 600).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#gold-summary tr.run-aer")
                                             and d.find_elements(By.CSS_SELECTOR, "#gold-columns .gold-run"))
            driver.execute_script("const box = document.getElementById('gold-index'); box.value = arguments[0];"
                                  "box.dispatchEvent(new Event('change'));", str(args.gold_sentence))
            WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "gold-columns").get_attribute(
                "data-index") == str(args.gold_sentence))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(args.out)
        print(f"wrote {args.out}")
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    main()
