"""The demo app (`make app`): every tab on a tiny checkpoint trained to name colours, and end to end in a real
headless Chromium (upload an image, type a text, read the answer from the page), the app running in a process that
cannot import vtfusion, as a Space would. The browser tests need Debian's `chromium` and `chromium-driver` (no
browser download); CI installs them."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import gradio as gr
import pytest
from colour_checkpoint import colour_processor, save_trained_colour_checkpoint
from pipeline_runs import CAPTIONS, QUESTION, colour_image


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
requires_browser = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs a headless Chromium: apt-get install chromium chromium-driver (CI installs them)",
)
REPO = Path(__file__).resolve().parents[1]
# the app as a Space runs it: vtfusion is not importable, only the checkpoint's own code
RUN_APP = (
    "import sys, runpy; sys.modules['modeling_vtfusion'] = None; sys.modules['training'] = None; "
    f"runpy.run_path({str(REPO / 'app' / 'app.py')!r}, run_name='__main__')"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_served(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()[-3000:]
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("colour-model")
    save_trained_colour_checkpoint(folder, colour_processor())
    return folder


@pytest.fixture(scope="module")
def demo(colour_model):
    sys.path.insert(0, str(REPO / "app"))
    from app import Demo

    return Demo(str(colour_model))


@pytest.fixture(scope="module")
def app_url(colour_model):
    folder = colour_model
    port = free_port()
    env = os.environ | {"MODEL": str(folder), "PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen(
        [sys.executable, "-c", RUN_APP],
        env=env,
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_served(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1600"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def open_tab(browser, url: str, name: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    tab = WebDriverWait(browser, 60).until(
        expected_conditions.element_to_be_clickable((By.XPATH, f"//button[@role='tab'][contains(., '{name}')]"))
    )
    tab.click()


def wait_for(browser, condition, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(condition)


@requires_browser
def test_a_question_about_an_uploaded_image_is_answered_in_the_page(app_url, browser, tmp_path):
    from pipeline_runs import QUESTION, colour_image
    from selenium.webdriver.common.by import By

    image_path = tmp_path / "red.png"
    colour_image("red").save(image_path)
    open_tab(browser, app_url, "Caption / answer")
    browser.find_element(By.CSS_SELECTOR, "#qa-image input[type=file]").send_keys(str(image_path))
    browser.find_element(By.CSS_SELECTOR, "#qa-question textarea").send_keys(QUESTION)
    wait_for(browser, lambda b: b.find_element(By.CSS_SELECTOR, "#qa-image img"))  # the upload is shown
    browser.find_element(By.CSS_SELECTOR, "#qa-run").click()

    answer = wait_for(browser, lambda b: b.find_element(By.CSS_SELECTOR, "#qa-output textarea").get_attribute("value"))
    browser.save_screenshot(str(tmp_path / "caption-tab.png"))

    assert answer == "red"
    assert (tmp_path / "caption-tab.png").stat().st_size > 10_000


@requires_browser
def test_a_statement_without_an_image_gets_a_message_in_the_page(app_url, browser, tmp_path):
    from selenium.webdriver.common.by import By

    open_tab(browser, app_url, "Entailment")
    browser.find_element(By.CSS_SELECTOR, "#ve-statement textarea").send_keys("a red circle")
    browser.find_element(By.CSS_SELECTOR, "#ve-run").click()

    wait_for(browser, lambda b: "Upload an image first." in b.page_source)
    browser.save_screenshot(str(tmp_path / "entailment-error.png"))


# -- every tab, called as the page calls it ------------------------------------------------------------------------


def test_zero_shot_ranks_the_caption_of_the_image_first(demo):
    scores = demo.zero_shot(colour_image("blue"), ", ".join(CAPTIONS.values()))
    assert max(scores, key=scores.get) == CAPTIONS["blue"]


def test_an_empty_question_asks_for_a_caption(demo):
    assert demo.caption_or_answer(colour_image("green"), "") == CAPTIONS["green"]
    assert demo.caption_or_answer(colour_image("green"), QUESTION) == "green"


def test_entailment_scores_the_images_own_caption_true(demo):
    scores = demo.entailment(colour_image("red"), CAPTIONS["red"])
    assert max(scores, key=scores.get) == "true"


def test_search_finds_the_image_of_the_query_in_a_folder(demo, tmp_path):
    for colour in CAPTIONS:
        colour_image(colour).save(tmp_path / f"{colour}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    results = demo.search(str(tmp_path), CAPTIONS["blue"], top_k=2)
    assert len(results) == 2 and results[0][1].startswith("blue.png")


def test_the_heat_map_of_a_word_is_the_image_with_red_drawn_over_it(demo):
    image = colour_image("blue", size=48)
    drawn = demo.heat_map(image, CAPTIONS["blue"], "square")
    assert drawn.size == image.size and drawn.getpixel((24, 24))[0] > image.getpixel((24, 24))[0]


def test_a_words_heat_map_reads_all_its_pieces_and_no_other_word(demo):
    sys.path.insert(0, str(REPO / "app"))
    from app import word_tokens

    encoding = demo.processor.tokenizer("a blue square")
    assert word_tokens(encoding, "a blue square", "square") == [3]  # [CLS] a blue square [SEP]: not "a" too
    assert word_tokens(encoding, "a blue square", "squ") == []


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda demo: demo.entailment(None, "a red circle"), "Upload an image first."),
        (lambda demo: demo.entailment(colour_image("red"), "  "), "Type a text first."),
        (lambda demo: demo.zero_shot(colour_image("red"), "a red circle"), "at least two labels"),
        (lambda demo: demo.search("/no/such/folder", "a red circle", 3), "is not a folder"),
        (lambda demo: demo.heat_map(colour_image("red"), "a red circle", "star"), "not a word of the text"),
    ],
    ids=["no image", "empty text", "one label", "no folder", "word not in text"],
)
def test_bad_input_gets_a_message_for_the_page(demo, call, message):
    with pytest.raises(gr.Error, match=message):
        call(demo)


def test_a_huge_upload_is_shrunk_before_the_model_sees_it(demo):
    answer = demo.caption_or_answer(colour_image("red", size=4000), QUESTION)
    assert answer == "red"
