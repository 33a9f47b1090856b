"""The demo page at ``/`` in a real headless Chromium (Debian's ``chromium`` and ``chromedriver``, driven by
Selenium) against a real ``nextclick serve`` process with four models and a shop's item table.

Nothing is downloaded: Selenium gets the driver's and the browser's paths, so Selenium Manager never runs.
Without the browser the module is skipped, unless ``CI`` is set (``.ci/run`` installs it), where it fails.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nextclick.data.preprocess import PrepareOptions, prepare
from nextclick.data.synthetic import ShopConfig, generate_shop
from nextclick.models import create_model
from tests.serve.servers import start_service, stop

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # the dev extra installs it
    webdriver = None

MISSING = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()] + (["selenium"] if webdriver is None else [])
if MISSING and not os.environ.get("CI"):
    pytest.skip(f"the browser test needs {', '.join(MISSING)} (apt-get install chromium chromium-driver; pip install selenium)",
                allow_module_level=True)

# served in this order: the first is the service's default model
MODELS = {
    "sasrec": {"n_epochs": 1, "hidden": 32, "max_len": 20},
    "vsknn": {},
    "gru4rec": {"n_epochs": 1, "layers": (32,), "batch_size": 32, "n_sample": 128},
    "pop": {},
}
K = 10  # the page's list length
WAIT = 20.0  # seconds for the page to react


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Tiny artifacts of the four models on a synthetic shop, served together with the shop's item table."""
    root = tmp_path_factory.mktemp("demo")
    shop = generate_shop(ShopConfig(n_items=300, n_sessions=3000, n_categories=8, seed=5))
    train, _ = prepare(shop.clicks.drop("UserId"), root / "data", PrepareOptions()).sessions("train")
    dirs = [str(create_model(name, **params).fit(train).save(root / name)) for name, params in MODELS.items()]
    shop.items.write_parquet(root / "items.parquet")
    proc, url = start_service(Path(dirs[0]), *dirs[1:], "--items", str(root / "items.parquet"), timeout=60.0)
    try:
        t0 = time.monotonic()
        while httpx.get(f"{url}/readyz").status_code != 200:
            assert time.monotonic() - t0 < 60, "the service never became ready"
            time.sleep(0.1)
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def driver() -> Iterator[webdriver.Chrome]:
    if MISSING:
        pytest.fail(f"CI is set but {', '.join(MISSING)} is missing; .ci/run installs chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1600,1200"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield drv
    finally:
        drv.quit()


def wait(drv: webdriver.Chrome, condition, what: str):
    return WebDriverWait(drv, WAIT).until(lambda d: condition(d), message=f"waited {WAIT} s for {what}")


def severe(drv: webdriver.Chrome) -> list[dict]:
    return [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]


def open_page(drv: webdriver.Chrome, url: str) -> None:
    drv.get(url + "/")
    wait(drv, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") != "loading", "the page to start")
    assert drv.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready", error_text(drv)


def error_text(drv: webdriver.Chrome) -> str:
    box = drv.find_element(By.CSS_SELECTOR, "[data-testid=error]")
    return box.get_attribute("textContent") if box.is_displayed() else ""


def columns(drv: webdriver.Chrome) -> dict[str, dict]:
    """Every model column as the page shows it: the number of clicks it reflects and its (item, score) rows."""
    cols = drv.execute_script("""
        return [...document.querySelectorAll('[data-testid=model-col]')].map((col) => [col.dataset.model, {
            clicks: col.dataset.clicks,
            rows: [...col.querySelectorAll('[data-testid=rec-item]')].map((b) => [b.dataset.item, b.dataset.score])}]);""")
    return dict(cols)  # in the page's order


def click_from_search(drv: webdriver.Chrome, item: str) -> None:
    """Search the catalogue for an item id and click its card."""
    box = drv.find_element(By.CSS_SELECTOR, "[data-testid=search]")
    box.clear()
    box.send_keys(item)
    grid = drv.find_element(By.CSS_SELECTOR, "[data-testid=catalogue]")
    wait(drv, lambda d: grid.get_attribute("data-query") == f"{item}|", f"the search for {item}")
    grid.find_element(By.CSS_SELECTOR, f"[data-testid=catalogue-item][data-item='{item}']").click()


def save_screenshot(drv: webdriver.Chrome, folder: Path) -> Path:
    path = folder / "demo.png"
    assert drv.save_screenshot(str(path)), "the browser wrote no screenshot"
    if os.environ.get("NEXTCLICK_SCREENSHOT_DIR"):
        target = Path(os.environ["NEXTCLICK_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / path.name)
    return path


def test_page_loads_with_every_model_and_the_catalogue(driver: webdriver.Chrome, demo_url: str) -> None:
    open_page(driver, demo_url)
    assert not severe(driver)
    served = httpx.get(f"{demo_url}/v1/models").json()
    cols = columns(driver)
    assert list(cols) == [m["name"] for m in served["models"]] and list(cols)[0] == served["default"] == "sasrec"
    assert all(c["clicks"] == "0" and len(c["rows"]) == K for c in cols.values())  # an empty session's lists
    cards = driver.find_elements(By.CSS_SELECTOR, "[data-testid=catalogue-item]")
    assert cards and all(c.find_elements(By.CSS_SELECTOR, "[data-testid=category-chip]") for c in cards)
    driver.find_element(By.CSS_SELECTOR, "[data-testid=more]").click()  # the next page, appended
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "[data-testid=catalogue-item]")) == 2 * len(cards), "the next page")
    ids = [c.get_attribute("data-item") for c in driver.find_elements(By.CSS_SELECTOR, "[data-testid=catalogue-item]")]
    assert len(set(ids)) == len(ids)
    # the category filter narrows the catalogue to that category
    category = httpx.get(f"{demo_url}/v1/categories").json()["categories"][0]
    Select(driver.find_element(By.CSS_SELECTOR, "[data-testid=category]")).select_by_value(category["name"])
    grid = driver.find_element(By.CSS_SELECTOR, "[data-testid=catalogue]")
    wait(driver, lambda d: grid.get_attribute("data-query") == f"|{category['name']}", "the category filter")
    chips = {c.text for c in grid.find_elements(By.CSS_SELECTOR, "[data-testid=category-chip]")}
    assert chips == {category["name"]}
    assert driver.find_element(By.CSS_SELECTOR, "[data-testid=catalogue-count]").text == f"({category['n_items']})"
    assert not severe(driver)


def test_clicks_update_every_model_and_explanations_render(driver: webdriver.Chrome, demo_url: str, tmp_path: Path) -> None:
    open_page(driver, demo_url)
    sid = driver.find_element(By.CSS_SELECTOR, "[data-testid=session-id]").text
    before = columns(driver)
    for n in (1, 2, 3):
        # an item from pop's list, so that even the session-blind model's list changes (the page leaves clicked items out)
        click_from_search(driver, before["pop"]["rows"][0][0])
        wait(driver, lambda d, n=n: all(c["clicks"] == str(n) for c in columns(d).values()), f"every column after click {n}")
        after = columns(driver)
        for name, col in after.items():
            assert len(col["rows"]) == K, (name, col)
            assert col["rows"] != before[name]["rows"], f"{name}'s list did not change after click {n}"
        assert len(driver.find_elements(By.CSS_SELECTOR, "[data-testid=click-chip]")) == n
        before = after
    assert httpx.get(f"{demo_url}/v1/sessions/{sid}").json()["n_clicks"] == 3, "the page's session is not the service's"

    panel = driver.find_element(By.CSS_SELECTOR, "[data-testid=explanation]")
    for name in [*list(before)[1:], list(before)[0]]:  # the default model (sasrec) last, for the screenshot
        col = driver.find_element(By.CSS_SELECTOR, f"[data-testid=model-col][data-model='{name}']")
        rec = col.find_elements(By.CSS_SELECTOR, "[data-testid=rec-item]")[0]
        item = rec.get_attribute("data-item")
        rec.click()
        wait(driver, lambda d, name=name, item=item: panel.get_attribute("data-state") in ("ready", "error")
             and (panel.get_attribute("data-model"), panel.get_attribute("data-item")) == (name, item), f"{name}'s explanation")
        assert panel.get_attribute("data-state") == "ready", panel.text
        assert not {"null", "undefined", "NaN"} & set(panel.text.split()), panel.text
        assert len(panel.find_elements(By.CSS_SELECTOR, "[data-testid=influence-bar]")) == 3, name  # one per click
        cells = panel.find_elements(By.CSS_SELECTOR, "[data-testid=attention-cell]")
        neighbours = panel.find_elements(By.CSS_SELECTOR, "[data-testid=neighbour]")
        assert bool(cells) == (name == "sasrec") and bool(neighbours) == (name == "vsknn"), (name, len(cells), len(neighbours))
        if cells:  # a row per transformer block, a column per click
            rows = panel.find_elements(By.CSS_SELECTOR, "[data-testid=attention] tbody tr")
            assert len(cells) == 3 * len(rows) > 0
    driver.find_element(By.CSS_SELECTOR, "[data-testid=search]").clear()  # the whole catalogue again, for the picture
    driver.find_element(By.CSS_SELECTOR, "[data-testid=search]").send_keys(" ")
    grid = driver.find_element(By.CSS_SELECTOR, "[data-testid=catalogue]")
    wait(driver, lambda d: grid.get_attribute("data-query") == "|", "the unfiltered catalogue")
    shot = save_screenshot(driver, tmp_path)
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the explanation's button adds the explained item to the session (and closes the explanation, now out of date)
    explained = int(panel.get_attribute("data-item"))
    panel.find_element(By.CSS_SELECTOR, "[data-testid=explain-click]").click()
    wait(driver, lambda d: all(c["clicks"] == "4" for c in columns(d).values()), "every column after the explained item's click")
    assert httpx.get(f"{demo_url}/v1/sessions/{sid}").json()["items"][-1] == explained and not panel.is_displayed()
    assert not error_text(driver)

    # a new visitor: a new session id, empty lists again, and the old session forgotten by the service
    driver.find_element(By.CSS_SELECTOR, "[data-testid=new-visitor]").click()
    wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "[data-testid=session-id]").text != sid, "a new session id")
    wait(driver, lambda d: all(c["clicks"] == "0" for c in columns(d).values()), "every column of the new visitor")
    assert not driver.find_elements(By.CSS_SELECTOR, "[data-testid=click-chip]") and not panel.is_displayed()
    wait(driver, lambda d: httpx.get(f"{demo_url}/v1/sessions/{sid}").status_code == 404, "the old session's deletion")
    assert not severe(driver)
