"""The README's screenshot of the demo page, taken from real trained models.

Starts `nextclick serve` on the given artifact directories (a subprocess on a free loopback port, the item
table given with --items), waits for /readyz, and opens the demo page in headless Chromium (Debian's
/usr/bin/chromium and /usr/bin/chromedriver, driven by Selenium, which then downloads nothing). It plays a
visit whose intent shifts: the catalogue's category filter picks a category and three of its items are
clicked, then two items of a second category; then it opens the explanation of the default model's top
recommendation (SASRec's: the influence bars and the attention heat map), saves the page as a PNG 1600 px
wide (as tall as the page) and stops the service. The models are served in the order sasrec, gru4rec,
vsknn, pop (by directory name; other names after them), so SASRec is the default model and the first column.

    .venv/bin/python benchmarks/demo_screenshot.py --models /tmp/qs/models/{sasrec,gru4rec,vsknn,pop} \
        --items /tmp/qs/shop_items.parquet --out docs/img/demo.png [--categories lighting laptops] [--port 0]

where /tmp/qs is what `nextclick quickstart --out /tmp/qs` wrote.
"""

from __future__ import annotations

import argparse
import logging
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

log = logging.getLogger("demo_screenshot")
ORDER = ("sasrec", "gru4rec", "vsknn", "pop")  # served in this order: the first is the default model
WIDTH, MIN_HEIGHT = 1600, 1000


def start_service(models: list[Path], items: Path, port: int, logfile: Any) -> tuple[subprocess.Popen, str]:
    """`nextclick serve` on ``port`` (a free one if 0), once /readyz answers 200; its output goes to ``logfile``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "nextclick", "serve", *map(str, models), "--items", str(items), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT)
    url, t0 = f"http://127.0.0.1:{port}", time.monotonic()
    while time.monotonic() - t0 < 180:
        if proc.poll() is not None:
            raise SystemExit(f"nextclick serve exited with {proc.returncode}; its log: {logfile.name}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop(proc)
    raise SystemExit(f"nextclick serve was not ready after 180 s; its log: {logfile.name}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()  # the service did not shut down in time


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", f"--window-size={WIDTH},{MIN_HEIGHT}",
                "--hide-scrollbars"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(executable_path="/usr/bin/chromedriver"))


def wait(drv: webdriver.Chrome, condition: Callable[[webdriver.Chrome], Any], what: str, timeout: float = 30.0) -> Any:
    return WebDriverWait(drv, timeout).until(condition, message=f"waited {timeout} s for {what}")


def clicks_shown(drv: webdriver.Chrome) -> set[str]:
    """The number of clicks each model column reflects."""
    return set(drv.execute_script("return [...document.querySelectorAll('[data-testid=model-col]')].map((c) => c.dataset.clicks);"))


def click_category(drv: webdriver.Chrome, url: str, category: str, n: int, done: int) -> None:
    """Filter the catalogue to ``category`` and click ``n`` of the items it shows: the most popular ones by the
    service's `pop` model (or its default model), which leaves out items the models never saw in training."""
    Select(drv.find_element(By.CSS_SELECTOR, "[data-testid=category]")).select_by_value(category)
    grid = drv.find_element(By.CSS_SELECTOR, "[data-testid=catalogue]")
    wait(drv, lambda d: grid.get_attribute("data-query") == f"|{category}", f"the catalogue of {category}")
    cards = {c.get_attribute("data-item"): c for c in grid.find_elements(By.CSS_SELECTOR, "[data-testid=catalogue-item]")}
    served = [m["name"] for m in httpx.get(f"{url}/v1/models").json()["models"]]
    body = {"items": [], "k": n, "allow": [int(i) if i.isdigit() else i for i in cards]}
    resp = httpx.post(f"{url}/v1/recommendations", params={"model": "pop"} if "pop" in served else {}, json=body)
    resp.raise_for_status()
    for i, item in enumerate(resp.json()["items"], done + 1):
        cards[str(item)].click()
        wait(drv, lambda d, i=i: clicks_shown(d) == {str(i)}, f"every column after click {i}")
    error = drv.find_element(By.CSS_SELECTOR, "[data-testid=error]")
    if error.is_displayed():
        raise SystemExit(f"the page shows an error after the clicks on {category}: {error.text}")


def play(drv: webdriver.Chrome, url: str, categories: list[str] | None) -> None:
    """Three clicks in one category, two in another, then the default model's top recommendation explained."""
    drv.get(url + "/")
    wait(drv, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") != "loading", "the page to start")
    options = drv.find_elements(By.CSS_SELECTOR, "[data-testid=category] option[value]:not([value=''])")
    first, second = categories or [o.get_attribute("value") for o in options[:2]]
    click_category(drv, url, first, 3, 0)
    click_category(drv, url, second, 2, 3)
    col = drv.find_elements(By.CSS_SELECTOR, "[data-testid=model-col]")[0]
    top = col.find_element(By.CSS_SELECTOR, "[data-testid=rec-item]")
    top.click()
    panel = drv.find_element(By.CSS_SELECTOR, "[data-testid=explanation]")
    wait(drv, lambda d: panel.get_attribute("data-state") in ("ready", "error")
         and panel.get_attribute("data-item") == top.get_attribute("data-item"), "the explanation")
    if panel.get_attribute("data-state") != "ready":
        raise SystemExit(f"the explanation failed: {panel.text}")
    log.info("explained item %s of %s after clicks in %s then %s", top.get_attribute("data-item"), col.get_attribute("data-model"),
             first, second)


def screenshot(drv: webdriver.Chrome, out: Path) -> None:
    """The whole page, catalogue scrolled to its top: the window grows to the page's height if it is taller."""
    height = drv.execute_script("return document.documentElement.scrollHeight - window.innerHeight + window.outerHeight;")
    if height > MIN_HEIGHT:
        drv.set_window_size(WIDTH, height)
    drv.execute_script("window.scrollTo(0, 0); document.querySelector('[data-testid=catalogue]').scrollTop = 0;")
    out.parent.mkdir(parents=True, exist_ok=True)
    if not drv.save_screenshot(str(out)):
        raise SystemExit(f"the browser wrote no screenshot to {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, nargs="+", required=True, help="artifact directories, served by their names")
    parser.add_argument("--items", type=Path, required=True, help="the item table (id, title, category, price)")
    parser.add_argument("--out", type=Path, default=Path("docs/img/demo.png"))
    parser.add_argument("--categories", nargs=2, metavar=("FIRST", "SECOND"), help="default: the first two the service lists")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    rank = {name: i for i, name in enumerate(ORDER)}
    models = sorted(args.models, key=lambda d: rank.get(d.name, len(ORDER)))  # stable: other names keep their order
    log.info("serving %s", ", ".join(d.name for d in models))
    with tempfile.NamedTemporaryFile("w", prefix="nextclick-serve-", suffix=".log", delete=False) as logfile:
        proc, url = start_service(models, args.items, args.port, logfile)
        try:
            drv = browser()
            try:
                play(drv, url, args.categories)
                screenshot(drv, args.out)
            finally:
                drv.quit()
        finally:
            stop(proc)
    Path(logfile.name).unlink()  # kept when something failed
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
