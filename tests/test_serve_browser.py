"""The search page in a real browser: headless Chromium (Debian ``chromium`` and
``chromium-driver``, driven by Selenium) uploads a Luma photo, waits for the grid, finds the
right product among the hits, and a filter changes them.

The catalog is ingested through the real broker with the real model; the query is a view the
index never saw (a back or alternate view). The screenshot is kept under ``var/screenshots/``
(git-ignored) and in the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from lookalike.app import build_api, open_versions
from serve.server import BackgroundServer
from tests.conftest import REPO
from tests.pipeline_support import make_settings, run_until_caught_up, send

pytestmark = [pytest.mark.kafka, pytest.mark.model, pytest.mark.luma]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def luma_events(luma_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any], Path]:
    """30 products (main views) and two resale listings of the query product; the query is
    a back view of that product."""
    lines = [json.loads(line) for line in (luma_dir / "catalog.jsonl").read_text().splitlines()]
    query = next(r for r in lines if r["category"].startswith("Men/Tops")
                 and any(i["view"] == "back" for i in r["images"]))
    chosen = [query, *[r for r in lines if r is not query][::20][:29]]
    events = [{"type": "product.upserted", "product_id": r["product_id"], "version": 1,
               "title": r["title"], "category": r["category"], "price": r["price"],
               "currency": r["currency"], "seller_id": "luma",
               "images": [str(luma_dir / i["path"]) for i in r["images"] if i["view"] == "main"]}
              for r in chosen]
    # the same photo listed again by two resellers, cheaper: what price comparison finds
    events += [{**events[0], "product_id": f"{query['product_id']}-resale-{n}",
                "seller_id": f"reseller-{n}", "price": round(query["price"] * f, 2)}
               for n, f in (("a", 0.9), ("b", 0.8))]
    back = next(i for i in query["images"] if i["view"] == "back")
    return events, query, luma_dir / back["path"]


@pytest.fixture(scope="module")
def site(bootstrap: str, luma_dir: Path, embedder: Any,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("LOOKALIKE_REQUIRE_BROWSER"):
            pytest.fail("LOOKALIKE_REQUIRE_BROWSER is set but chromium/chromedriver are missing")
        pytest.skip("headless Chromium not found: install the Debian packages chromium and "
                    "chromium-driver (.ci/run does)")
    tmp = tmp_path_factory.mktemp("browser")
    settings = make_settings(bootstrap, "web" + tmp.name[-6:].replace("-", ""), tmp / "w.db",
                             [luma_dir], batch_events=32, batch_images=32)
    events, query, photo = luma_events(luma_dir)
    send(bootstrap, settings.kafka.topic, events)
    versions = open_versions(settings, create=True)
    run_until_caught_up(settings, embedder, versions.store.client)
    with ThreadPoolExecutor(2) as pool:
        app = build_api(settings, embedder, versions, CollectorRegistry(), pool)
        with BackgroundServer(app) as server:
            yield {"url": server.url, "query": query, "photo": photo, "events": events,
                   "tmp": tmp}


@pytest.fixture(scope="module")
def browser(site: dict[str, Any]) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP violations
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def cards(driver: Any) -> list[dict[str, str]]:
    from selenium.webdriver.common.by import By

    return [{"id": c.get_attribute("data-product-id") or "",
             "category": c.find_element(By.CLASS_NAME, "category").text,
             "price": c.find_element(By.CLASS_NAME, "price").text}
            for c in driver.find_elements(By.CSS_SELECTOR, "#results .card")]


def wait_for_results(driver: Any, previous: str | None = None) -> str:
    """Wait until the status line reports a finished search (another one than ``previous``)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def done(d: Any) -> str | bool:
        text = str(d.find_element(By.ID, "status").text)
        return text if (" products in " in text or "failed" in text) and text != previous \
            else False

    return str(WebDriverWait(driver, 60).until(done))


def test_upload_finds_the_product_and_a_filter_changes_the_hits(
        site: dict[str, Any], browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(site["url"] + "/")
    browser.find_element(By.ID, "k").clear()
    browser.find_element(By.ID, "k").send_keys("8")
    browser.find_element(By.ID, "file").send_keys(str(site["photo"]))
    status = wait_for_results(browser)
    assert "failed" not in status, status
    unfiltered = cards(browser)
    query = site["query"]
    assert len(unfiltered) == 8
    assert query["product_id"] in [c["id"] for c in unfiltered]
    # every card's image loads through /v1/images (natural width > 0)
    widths = browser.execute_script(
        "return Array.from(document.querySelectorAll('#results .card img'))"
        ".map(i => i.complete ? i.naturalWidth : -1)")
    assert widths and all(w != 0 for w in widths), widths

    other = next(e["category"] for e in site["events"]
                 if not e["category"].startswith(query["category"].split("/")[0]))
    browser.find_element(By.ID, "category").send_keys(other)
    browser.find_element(By.ID, "apply").click()
    filtered_status = wait_for_results(browser, previous=status)
    filtered = cards(browser)
    assert filtered and all(c["category"].startswith(other) for c in filtered), filtered
    assert query["product_id"] not in [c["id"] for c in filtered]
    assert [c["id"] for c in filtered] != [c["id"] for c in unfiltered]

    browser.find_element(By.ID, "category").clear()
    browser.find_element(By.ID, "apply").click()
    wait_for_results(browser, previous=filtered_status)
    shots = REPO / "var" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(shots / "search-page.png"))
    shutil.copy(shots / "search-page.png", site["tmp"] / "search-page.png")

    card = next(c for c in browser.find_elements(By.CSS_SELECTOR, "#results .card")
                if c.get_attribute("data-product-id") == query["product_id"])
    card.find_element(By.TAG_NAME, "button").click()
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 30).until(
        lambda d: d.find_element(By.ID, "compare-note").text not in ("", "Loading…"))
    assert browser.find_element(By.ID, "compare").is_displayed()
    assert "cheapest first" in browser.find_element(By.ID, "compare-note").text
    rows = browser.find_elements(By.CSS_SELECTOR, "#compare-list li")
    prices = [float(li.find_element(By.CLASS_NAME, "price").text.split()[0]) for li in rows]
    assert prices == sorted(prices)
    text = " ".join(li.text for li in rows)
    assert f"{query['product_id']}-resale-b" in text and f"{query['product_id']}-resale-a" in text
    assert all("similarity" in li.find_element(By.CLASS_NAME, "why").text for li in rows)
    browser.save_screenshot(str(shots / "search-page-compare.png"))


def test_the_page_works_under_its_policy_and_holds_hostile_titles(
        site: dict[str, Any], browser: Any) -> None:
    """The Content-Security-Policy blocks nothing the page needs (its script, style, images
    and API calls: the search above ran under it too); a 512-character title wraps inside
    its card (it overflowed) and a U+202E in a title or category stays inside it (it
    reversed the text after it)."""
    from selenium.webdriver.common.by import By

    browser.get(site["url"] + "/")
    browser.find_element(By.ID, "file").send_keys(str(site["photo"]))
    wait_for_results(browser)
    hostile = {"product_id": "p\u202e1", "title": "x" * 512, "category": "\u202eWomen/Tops",
               "price": 1.0, "currency": "USD", "score": 0.5, "image_ref": "/nowhere.png"}
    layout = browser.execute_script(
        "renderHits([arguments[0], Object.assign({}, arguments[0], {title: 'ab\u202ecd'})]);"
        "const cards = Array.from(document.querySelectorAll('#results .card'));"
        "return cards.map(c => { const t = c.querySelector('.title');"
        "  const cat = c.querySelector('.category');"
        "  return [c.scrollWidth <= c.clientWidth, t.getBoundingClientRect().width"
        "          <= c.getBoundingClientRect().width,"
        "          getComputedStyle(t).unicodeBidi, getComputedStyle(cat).unicodeBidi]; });",
        hostile)
    assert layout == [[True, True, "plaintext", "plaintext"]] * 2, layout
    violations = [e for e in browser.get_log("browser")
                  if "Content Security Policy" in e.get("message", "")]
    assert not violations, violations
