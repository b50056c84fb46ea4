"""The running app in a real headless Chromium: every page draws, a held-out prompt finds its models, a lasso
on the Atlas lists exactly the models it holds, "purple" rings exactly the purple models, colour by lr draws a
colour scale, a click on the map opens a model's page, and shared addresses reopen their views.

Starts ``streamlit run explorer/app.py`` on a free loopback port and drives Debian's
chromium through selenium (the driver path is given, so selenium never downloads a
browser). Streamlit draws progressively, so every step waits for the element it needs.
Screenshots of each page go to tests/artifacts/ (not committed).
"""

from __future__ import annotations

import contextlib
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
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1600,1000")
# url path -> the page's title (its h1)
PAGES = {"": "ProbeX Explorer", "trees": "Model Trees", "experts": "Experts",
         "atlas": "Atlas of the weight-language space", "search": "Search models with words",
         "inspect": "Inspect a model", "model": "Model"}

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (requirements-test.txt)")
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
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


MAP_FRAME = 'iframe[title*="probex_map"]'
# url path -> an element that only a finished page shows
DRAWN = {"": '[data-testid="stImage"]', "trees": ".js-plotly-plot", "experts": ".js-plotly-plot",
         "atlas": MAP_FRAME, "search": 'input[aria-label="Prompt"]',
         "inspect": '[data-testid="stFileUploader"]', "model": '[data-testid="stSelectbox"]'}
# the Atlas's map is drawn in its own frame (explorer/map_frame.py): scripts find its graph through MAP
MAP = """
const mapFrame = document.querySelector('iframe[title*="probex_map"]');
const mapDoc = mapFrame ? mapFrame.contentDocument : document;
const gd = mapDoc && mapDoc.querySelector('.js-plotly-plot');
"""
MAP_DRAWN = MAP + "return Boolean(gd && gd._fullData && mapDoc.querySelector('.js-plotly-plot .nsewdrag'));"
BUSY = '[data-testid="stStatusWidget"], [data-testid="stSpinner"]'


def is_drawn(driver, path: str) -> bool:
    """Whether the page's finished element is there (for the Atlas: its map drawn in the map's frame)."""
    if DRAWN[path] == MAP_FRAME:
        return bool(driver.execute_script(MAP_DRAWN))
    return bool(driver.find_elements(By.CSS_SELECTOR, DRAWN[path]))


def wait_until_drawn(driver, path: str, timeout: float = 240.0, quiet_polls: int = 5) -> None:
    """Wait for the page's title and its finished element, then for the script run to stay finished
    for ``quiet_polls`` polls in a row (Streamlit draws progressively and shows a status while running)."""
    wait = WebDriverWait(driver, timeout, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,))
    wait.until(lambda d: any(PAGES[path] == element.text for element in d.find_elements(By.CSS_SELECTOR, "h1")))
    quiet = [0]

    def settled(d) -> bool:
        busy = d.find_elements(By.CSS_SELECTOR, BUSY) or not is_drawn(d, path)
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
def jungle_ids() -> list[str]:
    """The demo jungle's model ids, longest first (so a prefix match finds the whole id)."""
    from probex import jungle

    return sorted(jungle.load().ids, key=len, reverse=True)


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
    browser.get(f"{app_url}/search?tree=mini-sd")  # one aligned tree (the page's default is the whole zoo)
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
    browser.get(f"{app_url}/?page=search&tree=mini-sd&prompt=a+{concept.replace(' ', '+')}")
    WebDriverWait(browser, 60, poll_frequency=0.2).until(lambda d: len(result_captions(d)) >= 3)
    top = result_captions(browser)[:3]
    assert all(concept in caption for caption in top), top


def zoo_hit_captions(driver) -> list[str]:
    """The captions under the whole-zoo search's images ("#rank · p score · tree", why, model id), best first."""
    try:
        texts = [element.text for element in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stCaptionContainer"]')]
    except StaleElementReferenceException:
        return []
    return [text for text in texts if text.startswith("#") and " · p " in text]


def test_a_blue_heart_typed_on_the_search_page_finds_models_of_several_trees_each_with_images(browser, app_url):
    from probex import jungle

    trees = set(jungle.load().trees)
    browser.get(f"{app_url}/search")
    wait_until_drawn(browser, "search")
    box = WebDriverWait(browser, 30).until(lambda d: d.find_element(By.CSS_SELECTOR, 'input[aria-label="Prompt"]'))
    box.send_keys("a blue heart", Keys.ENTER)
    WebDriverWait(browser, 60, poll_frequency=0.2).until(lambda d: len(zoo_hit_captions(d)) >= 5)
    wait_until_drawn(browser, "search")
    captions = zoo_hit_captions(browser)
    hit_trees = {next(tree for tree in trees if tree in caption.split("\n")[0]) for caption in captions}
    assert len(hit_trees) >= 2, captions
    # the grid draws a hit only with its images: every caption sits under at least one image
    images = browser.find_elements(By.CSS_SELECTOR, '[data-testid="stImage"] img, [data-testid="stFullScreenFrame"] img')
    assert len(images) >= len(captions), (len(images), len(captions))
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stAlertContentWarning"]')  # not a weak match
    browser.save_screenshot(str(ARTIFACTS / "search-whole-zoo.png"))


# -- the Atlas: a lasso, a click, shared addresses ---------------------------------------------------------------

SELECTED_IDS = MAP + """
const ids = [];
for (const trace of gd._fullData) {
  if (!trace.selectedpoints || !trace.customdata || !trace.customdata.length || trace.customdata[0] < 0) continue;
  if (trace.name === 'matches' || trace.name === 'more like these') continue;
  for (const i of trace.selectedpoints) ids.push(String(trace.hovertext[i]).split('</b>')[0].replace('<b>', ''));
}
return ids;
"""

# the screen position of the model point farthest from any word (so that a click lands on a model, not a word)
LONELY_POINT = """
const gd = document.querySelector('.js-plotly-plot');  // run inside the map's frame (see in_map)
const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
const px = (x, y) => [xa._offset + xa.l2p(x), ya._offset + ya.l2p(y)];
const words = [];
for (const trace of gd._fullData) {
  const cd = trace.customdata;
  if (cd && cd.length && cd[0] < 0) for (let i = 0; i < trace.x.length; i++) words.push(px(trace.x[i], trace.y[i]));
}
for (const a of (gd._fullLayout.annotations || [])) { const p = px(a.x, a.y); words.push([p[0], p[1] - 10]); }
const points = [];
for (const trace of gd._fullData) {
  const cd = trace.customdata;
  if (!cd || !cd.length || cd[0] < 0 || trace.visible !== true || trace.name === 'matches') continue;
  for (let i = 0; i < trace.x.length; i++) {
    const p = px(trace.x[i], trace.y[i]);
    if (p[0] < xa._offset + 5 || p[0] > xa._offset + xa._length - 5 || p[1] < ya._offset + 5 || p[1] > ya._offset + ya._length - 5) continue;
    let gap = 1e9; for (const q of words) gap = Math.min(gap, Math.hypot(p[0] - q[0], p[1] - q[1]));
    points.push({x: p[0], y: p[1], id: String(trace.hovertext[i]).split('</b>')[0].replace('<b>', ''), gap: gap});
  }
}
points.sort((a, b) => b.gap - a.gap);
const r = gd.getBoundingClientRect();
return points.slice(0, 8).map(p => [p.x - r.width / 2, p.y - r.height / 2, p.id]);
"""


def wait(driver, condition, timeout: float = 120.0):
    return WebDriverWait(driver, timeout, poll_frequency=0.25,
                         ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def selection_count(driver) -> int | None:
    """The "N models selected" the Atlas's selection panel says, or None when it shows none."""
    for element in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMarkdownContainer"] strong'):
        if element.text.endswith("models selected"):
            return int(element.text.split()[0].replace(",", ""))
    return None


def selection_view(driver) -> tuple[int, list[str], int]:
    """(the panel's count, the model ids under the selection's images, the selection table's rows)."""
    count = selection_count(driver)
    grid = [link.text for link in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stCaptionContainer"] a')
            if "model=" in (link.get_attribute("href") or "")]
    tables = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stDataFrame"] [role="grid"][aria-rowcount]')
    rows = int(tables[0].get_attribute("aria-rowcount")) - 1 if tables else -1
    return count, grid, rows


@contextlib.contextmanager
def in_map(driver):
    """Selenium's commands inside the Atlas map's frame (its graph, modebar and hover labels live there)."""
    frame = driver.find_element(By.CSS_SELECTOR, MAP_FRAME)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", frame)  # the whole map on screen
    driver.switch_to.frame(frame)
    try:
        yield
    finally:
        driver.switch_to.default_content()


def lasso(driver, fraction: float = 0.32) -> None:
    """Pick the lasso in the chart's modebar and drag a closed path over the middle of the map."""
    with in_map(driver):
        button = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, '.modebar-btn[data-val="lasso"]'))
        driver.execute_script("arguments[0].click();", button)
        area = driver.find_element(By.CSS_SELECTOR, ".js-plotly-plot .nsewdrag")
        width, height = area.rect["width"], area.rect["height"]
        actions = ActionChains(driver).move_to_element_with_offset(area, -width * fraction / 2, -height * fraction / 2)
        actions.click_and_hold()
        for dx, dy in ((fraction, 0), (0, fraction), (-fraction, 0), (0, -fraction * 0.97)):
            for _ in range(6):
                actions.move_by_offset(width * dx / 6, height * dy / 6)
        actions.release().perform()


def test_a_lasso_on_the_atlas_lists_exactly_the_models_it_holds_and_its_address_reopens_them(browser, app_url):
    browser.get(f"{app_url}/atlas")
    wait_until_drawn(browser, "atlas", timeout=240)
    lasso(browser)
    wait(browser, lambda d: (selection_count(d) or 0) >= 10)
    wait_until_drawn(browser, "atlas")
    count, grid, rows = wait(browser, lambda d: (view := selection_view(d))[1] and view)
    on_map = browser.execute_script(SELECTED_IDS)
    assert count >= 10 and rows == count == len(set(on_map)), (count, rows, len(on_map))
    assert len(grid) == min(count, 120)  # the grid shows at most 120; the table lists them all
    assert set(grid) == set(on_map) if count <= 120 else set(grid) <= set(on_map)
    browser.save_screenshot(str(ARTIFACTS / "atlas-lasso.png"))
    shared = browser.current_url
    assert "sel=" in shared

    other = new_browser()  # another person opening the shared address
    try:
        other.get(shared)
        wait(other, lambda d: selection_count(d) == count, timeout=180)
        wait_until_drawn(other, "atlas")
        again, grid_again, rows_again = wait(other, lambda d: (view := selection_view(d))[1] and view)
        assert (again, rows_again) == (count, count) and sorted(grid_again) == sorted(grid)
        assert sorted(set(other.execute_script(SELECTED_IDS))) == sorted(set(on_map))
    finally:
        other.quit()


def test_typing_purple_on_the_atlas_highlights_the_purple_models(browser, app_url):
    browser.get(f"{app_url}/atlas")
    wait_until_drawn(browser, "atlas", timeout=240)
    box = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, 'input[aria-label="Highlight"]'))
    box.send_keys("purple", Keys.ENTER)
    caption = wait(browser, lambda d: next((e.text for e in d.find_elements(
        By.CSS_SELECTOR, '[data-testid="stCaptionContainer"]') if "whose fields contain" in e.text), None))
    ringed, purple = wait(browser, lambda d: d.execute_script(RINGED_AND_PURPLE))
    assert ringed == purple and len(ringed) == int(caption.split()[0].replace(",", "")) > 0
    browser.save_screenshot(str(ARTIFACTS / "atlas-highlight.png"))


# (rows ringed as matches, rows whose hover text names purple), both sorted; null until the rings are drawn
RINGED_AND_PURPLE = MAP + """
const rings = gd._fullData.find(t => t.name === 'matches');
if (!rings) return null;
const purple = [];
for (const trace of gd._fullData) {
  const cd = trace.customdata;
  if (!cd || !cd.length || cd[0] < 0 || trace.name === 'matches') continue;
  for (let i = 0; i < cd.length; i++) if (String(trace.hovertext[i]).includes('purple')) purple.push(Number(cd[i]));
}
return [Array.from(rings.customdata, Number).sort((a, b) => a - b), purple.sort((a, b) => a - b)];
"""

# the colour scale of the models' trace: [its title, how many different colours its points get]; null without one
COLOUR_SCALE = MAP + """
if (!gd || !gd._fullData) return null;
const scaled = gd._fullData.find(t => t.marker && t.marker.showscale);
if (!scaled || !mapDoc.querySelector('.js-plotly-plot .colorbar')) return null;
return [scaled.marker.colorbar.title.text, new Set(Array.from(scaled.marker.color, c => c.toFixed(6))).size];
"""


def choose(driver, label: str, option: str) -> None:
    """Type ``option`` into the select box labelled ``label`` and press Enter, as a person would."""
    box = wait(driver, lambda d: d.find_element(
        By.XPATH, f'//div[@data-testid="stSelectbox"][.//label[contains(., "{label}")]]//input'))
    box.click()
    box.send_keys(option, Keys.ENTER)


def test_colour_by_lr_on_the_atlas_draws_a_continuous_scale(browser, app_url):
    browser.get(f"{app_url}/atlas")
    wait_until_drawn(browser, "atlas", timeout=240)
    assert browser.execute_script(COLOUR_SCALE) is None  # by concept: a legend, no scale
    choose(browser, "Colour by", "lr")
    title, colours = wait(browser, lambda d: d.execute_script(COLOUR_SCALE))
    wait_until_drawn(browser, "atlas")
    assert "lr" in title and colours > 12 and "colour=lr" in browser.current_url
    browser.execute_script(f"document.querySelector('{MAP_FRAME}').scrollIntoView({{block: 'end'}});")
    browser.save_screenshot(str(ARTIFACTS / "atlas-colour-lr.png"))


def test_a_click_on_a_model_of_the_atlas_opens_its_page(browser, app_url):
    browser.get(f"{app_url}/atlas")
    wait_until_drawn(browser, "atlas", timeout=240)
    labels, model_id = [], None
    with in_map(browser):
        chart = browser.find_element(By.CSS_SELECTOR, ".js-plotly-plot")
        for x, y, _ in browser.execute_script(LONELY_POINT):  # the models farthest from any word, loneliest first
            ActionChains(browser).move_to_element_with_offset(chart, x, y).pause(0.5).perform()
            try:
                hovered = WebDriverWait(browser, 10, poll_frequency=0.2).until(lambda d: d.execute_script(
                    "const t = document.querySelector('.hoverlayer .hovertext text'); return t && t.textContent"))
            except TimeoutException:  # nothing under the pointer answered (a redraw, a gap): the next point
                labels.append(None)
                continue
            labels.append(hovered)
            model_id = next((known for known in jungle_ids() if hovered.startswith(known)), None)  # the label seen
            if model_id is not None:  # else the nearest thing under the pointer was a word: try the next point
                break
        assert model_id is not None, f"no hover label named a model: {labels}"
        ActionChains(browser).click().perform()
    wait(browser, lambda d: "/model" in d.current_url)
    wait(browser, lambda d: any(e.text == model_id for e in d.find_elements(By.CSS_SELECTOR, "h3")))
    assert "model=" + model_id.replace("/", "%2F") in browser.current_url


def test_a_model_address_opens_its_metadata_and_training_images(browser, app_url):
    browser.get(f"{app_url}/?model=mini-sd/model_idx_0000")
    wait(browser, lambda d: any(e.text == "mini-sd/model_idx_0000" for e in d.find_elements(By.CSS_SELECTOR, "h3")))
    wait(browser, lambda d: any(e.text == "Its Model Tree" for e in d.find_elements(By.CSS_SELECTOR, "h3")))
    images = wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, '[data-testid="stImage"]')) >= 5)
    assert images and browser.find_elements(By.CSS_SELECTOR, '[data-testid="stDataFrame"]')
    assert "/model" in browser.current_url
    browser.save_screenshot(str(ARTIFACTS / "page-model-mini-sd.png"))
