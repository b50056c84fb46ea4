"""The Explorer's responsiveness: cold start to the first interactive page, and warm prompt search.

- Cold start: ``streamlit run explorer/app.py`` is spawned (fresh probex cache folder) and a
  headless Chromium (Debian's, through selenium) opens it; the clock runs from the spawn until
  the Home page is drawn and its script run has finished (the page is interactive). Repeated
  ``--cold-runs`` times, each with a new server.
- Warm search: on the Search page of the same (warmed) server, each prompt is typed and
  submitted; the clock runs from the Enter key until the results for that prompt are drawn.
  Every held-out concept of the demo jungle's generative tree is one prompt.
- The library call alone: ``ModelIndex.search`` on the same index, in this process.

Targets (issue 8): cold start <= 15 s, warm search <= 1 s on the 2-core machines. Prints the
figures and writes ``bench_app.json`` beside this script.

    python benchmarks/bench_app.py [--cold-runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1600")
BUSY = '[data-testid="stStatusWidget"], [data-testid="stSpinner"]'
POLL = 0.05


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def spawn(port: int, cache: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "explorer" / "app.py"), "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none"]
    return subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PROBEX_CACHE": cache},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_healthy(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                return
        except OSError:
            time.sleep(POLL)
    raise TimeoutError(f"streamlit did not answer on port {port}")


def browser() -> webdriver.Chrome:
    options = Options()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def wait_drawn(driver, ready, timeout: float = 120.0, quiet_polls: int = 3) -> None:
    """Until ``ready(driver)`` holds and no script run or spinner shows, ``quiet_polls`` polls in a row."""
    quiet = [0]

    def settled(d) -> bool:
        ok = ready(d) and not d.find_elements(By.CSS_SELECTOR, BUSY)
        quiet[0] = quiet[0] + 1 if ok else 0
        return quiet[0] >= quiet_polls

    WebDriverWait(driver, timeout, poll_frequency=POLL, ignored_exceptions=(StaleElementReferenceException,)).until(settled)


def has_title(text: str):
    return lambda d: any(element.text == text for element in d.find_elements(By.CSS_SELECTOR, "h1"))


def home_ready(d) -> bool:
    return has_title("ProbeX Explorer")(d) and bool(d.find_elements(By.CSS_SELECTOR, '[data-testid="stImage"]'))


def cold_start(driver) -> float:
    """Seconds from spawning streamlit to the drawn, idle Home page (the browser is already up)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="probex-bench-cache-") as cache:
        started = time.monotonic()
        server = spawn(port, cache)
        try:
            wait_healthy(port)
            driver.get(f"http://127.0.0.1:{port}/")
            wait_drawn(driver, home_ready)
            return time.monotonic() - started
        finally:
            server.terminate()
            server.wait(timeout=15)


def held_out_concepts() -> list[str]:
    from probex import jungle

    zoo = jungle.load().select(tree="mini-sd")
    seen = {record.labels[0] for record in zoo.select(split="train").records}
    return sorted({record.labels[0] for record in zoo.select(split="test_holdout").records} - seen)


def search_in_browser(driver, prompt: str) -> float:
    """Seconds from submitting ``prompt`` to its results drawn (the results' heading names the prompt)."""
    box = driver.find_element(By.CSS_SELECTOR, 'input[aria-label="Prompt"]')
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(prompt)
    started = time.monotonic()
    box.send_keys(Keys.ENTER)
    heading = f"Models for “{prompt}”"
    wait_drawn(driver, lambda d: any(heading in element.text for element in d.find_elements(By.CSS_SELECTOR, "h3"))
               and len(d.find_elements(By.CSS_SELECTOR, '[data-testid="stImage"]')) >= 5, quiet_polls=1)
    return time.monotonic() - started


def library_search(prompts: list[str], repeats: int = 5) -> list[float]:
    from probex import jungle
    from probex.experts.base import load_expert
    from probex.language.search import ModelIndex

    expert = load_expert(jungle.expert_dirs()["mini-sd"])
    index = ModelIndex.build(expert, jungle.load().select(tree="mini-sd"))
    index.search(prompts[0])  # the text encoder's first call
    timings = []
    for _ in range(repeats):
        for prompt in prompts:
            started = time.perf_counter()
            index.search(f"a {prompt}", k=10)
            timings.append(time.perf_counter() - started)
    return timings


def summary(values: list[float]) -> dict:
    return {"median_s": round(statistics.median(values), 3), "max_s": round(max(values), 3),
            "min_s": round(min(values), 3), "runs": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cold-runs", type=int, default=3)
    args = parser.parse_args()
    prompts = held_out_concepts()
    driver = browser()
    try:
        driver.get("about:blank")
        cold = [cold_start(driver) for _ in range(args.cold_runs)]
        print(f"cold start to the interactive Home page: {summary(cold)}")
        port = free_port()
        with tempfile.TemporaryDirectory(prefix="probex-bench-cache-") as cache:
            server = spawn(port, cache)
            try:
                wait_healthy(port)
                driver.get(f"http://127.0.0.1:{port}/search")
                try:
                    wait_drawn(driver, lambda d: bool(d.find_elements(By.CSS_SELECTOR, 'input[aria-label="Prompt"]')))
                except Exception:
                    driver.save_screenshot(str(Path(tempfile.gettempdir()) / "bench_app_search_timeout.png"))
                    raise
                search_in_browser(driver, "a red star")  # the first search after the index is built
                browser_search = [search_in_browser(driver, f"a {prompt}") for prompt in prompts]
            finally:
                server.terminate()
                server.wait(timeout=15)
    finally:
        driver.quit()
    print(f"warm prompt search in the browser (submit -> results drawn): {summary(browser_search)}")
    library = library_search(prompts)
    print(f"warm ModelIndex.search alone: {summary(library)}")
    result = {
        "cold_start": {**summary(cold), "target_s": 15.0, "seconds": [round(v, 2) for v in cold]},
        "warm_search_browser": {**summary(browser_search), "target_s": 1.0, "prompts": prompts},
        "warm_search_library": {**summary(library), "models_indexed": 1600},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_1m": round(os.getloadavg()[0], 2)},
    }
    out = Path(__file__).with_suffix(".json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
