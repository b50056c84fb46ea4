"""The running app in a real headless Chromium: every page draws, and a held-out prompt finds its models.

Starts ``streamlit run explorer/app.py`` on a free loopback port and drives Debian's
chromium through selenium (the driver path is given, so selenium never downloads a
browser). Screenshots of each page go to tests/artifacts/ (not committed).
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1600")
# url path -> the page's title (its h1)
PAGES = {"": "ProbeX Explorer", "trees": "Model Trees", "experts": "Experts",
         "atlas": "Atlas of the weight-language space", "search": "Search models with words",
         "inspect": "Inspect a model"}

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (requirements-test.txt)")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="session")
def chromium() -> None:
    """Debian's chromium and chromedriver: installed with apt when missing and we are root, else a skip."""
    if CHROMIUM.is_file() and CHROMEDRIVER.is_file():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"{CHROMIUM} or {CHROMEDRIVER} missing and not root (cannot apt-get install chromium chromium-driver)")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium", "chromium-driver"]):
        done = subprocess.run(command, capture_output=True, text=True, env=environment)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("apt-get install chromium chromium-driver did not provide /usr/bin/chromium and chromedriver")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_streamlit(port: int, log) -> subprocess.Popen:
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "explorer" / "app.py"),
               "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def wait_healthy(port: int, server: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"streamlit exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"streamlit did not answer on port {port} within {timeout} s")


@pytest.fixture(scope="module")
def app_url(chromium, tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    with open(log_path, "w") as log:
        server = start_streamlit(port, log)
        try:
            wait_healthy(port, server)
            yield f"http://127.0.0.1:{port}"
        finally:
            server.terminate()
            try:
                server.wait(timeout=3)
            except subprocess.TimeoutExpired:  # streamlit lingers over open sessions; the test is done with it
                server.kill()
                server.wait(timeout=10)


def new_browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


@pytest.fixture(scope="module")
def browser(app_url):
    driver = new_browser()
    try:
        yield driver
    finally:
        driver.quit()


# url path -> an element that only a finished page shows
DRAWN = {"": '[data-testid="stImage"]', "trees": ".js-plotly-plot", "experts": ".js-plotly-plot",
         "atlas": ".js-plotly-plot", "search": 'input[aria-label="Prompt"]',
         "inspect": '[data-testid="stFileUploader"]'}
BUSY = '[data-testid="stStatusWidget"], [data-testid="stSpinner"]'


def wait_until_drawn(driver, path: str, timeout: float = 90.0, quiet_polls: int = 5) -> None:
    """Wait for the page's title and its finished element, then for the script run to stay finished
    for ``quiet_polls`` polls in a row (Streamlit draws progressively and shows a status while running)."""
    wait = WebDriverWait(driver, timeout, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,))
    wait.until(lambda d: any(PAGES[path] == element.text for element in d.find_elements(By.CSS_SELECTOR, "h1")))
    quiet = [0]

    def settled(d) -> bool:
        busy = d.find_elements(By.CSS_SELECTOR, BUSY) or not d.find_elements(By.CSS_SELECTOR, DRAWN[path])
        quiet[0] = 0 if busy else quiet[0] + 1
        return quiet[0] >= quiet_polls

    wait.until(settled)


def result_captions(driver) -> list[str]:
    """The captions under the search results' images (rank, score, concept, model id), best first."""
    try:
        texts = [element.text for element in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stCaptionContainer"]')]
    except StaleElementReferenceException:  # redrawn while read: read again on the next poll
        return []
    return [text for text in texts if "mini-sd/model_idx" in text]


@functools.lru_cache(maxsize=1)
def held_out_concept() -> str:
    """A concept of the jungle's generative tree never seen in training (the first, alphabetically)."""
    from probex import jungle

    zoo = jungle.load().select(tree="mini-sd")
    seen = {record.labels[0] for record in zoo.select(split="train").records}
    return sorted({record.labels[0] for record in zoo.select(split="test_holdout").records} - seen)[0]


def test_every_page_draws_in_chromium_and_is_saved_as_a_screenshot(browser, app_url):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    seconds = {}
    for path in PAGES:
        started = time.monotonic()
        browser.get(f"{app_url}/{path}")
        wait_until_drawn(browser, path)
        seconds[path or "home"] = round(time.monotonic() - started, 1)
        assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'), f"/{path} raised"
        browser.save_screenshot(str(ARTIFACTS / f"page-{path or 'home'}.png"))
    print("seconds to draw each page (first visit):", seconds)


def test_a_held_out_prompt_typed_on_the_search_page_finds_that_concepts_models(browser, app_url):
    concept = held_out_concept()
    browser.get(f"{app_url}/search")
    wait_until_drawn(browser, "search")
    box = WebDriverWait(browser, 30).until(lambda d: d.find_element(By.CSS_SELECTOR, 'input[aria-label="Prompt"]'))
    box.send_keys(f"a {concept}", Keys.ENTER)
    WebDriverWait(browser, 30, poll_frequency=0.2).until(lambda d: len(result_captions(d)) >= 3)
    wait_until_drawn(browser, "search")
    top = result_captions(browser)[:3]
    assert all(concept in caption for caption in top), top
    assert f"prompt=a+{concept.replace(' ', '+')}" in browser.current_url
    browser.save_screenshot(str(ARTIFACTS / "search-results.png"))


def test_a_shared_search_address_opens_the_same_results(browser, app_url):
    concept = held_out_concept()
    browser.get(f"{app_url}/?page=search&prompt=a+{concept.replace(' ', '+')}")
    WebDriverWait(browser, 60, poll_frequency=0.2).until(lambda d: len(result_captions(d)) >= 3)
    top = result_captions(browser)[:3]
    assert all(concept in caption for caption in top), top
