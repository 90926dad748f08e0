"""Sprint 10: the gradio demo, end to end: streaming, Stop, bad input, load, a real browser.

The app is launched on a free local port with two small local models (no SmolLM2, no
download): the session's tiny sprint-09 run, and a bigger random model with a long context
so that a generation lasts long enough to be stopped.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
import torch

from llmlab.gpt import GPT, GPTConfig
from llmlab.hf_export import to_hf_model, to_hf_tokenizer
from llmlab.paths import runs_dir
from llmlab.tokenizers import CharTokenizer
from tests.conftest import load_script

DEMO = "sprints.10_pretrained_generation_demo.results.demo"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory) -> Path:
    """A random char-level model, 4 x 256 wide, context 2048: milliseconds per token, so
    512 tokens last long enough to press Stop."""
    folder = tmp_path_factory.mktemp("slow_model")
    torch.manual_seed(0)
    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    gpt = GPT(GPTConfig(vocab_size=len(chars), block_size=2048, n_layer=4, n_head=4, n_embd=256))
    to_hf_model(gpt).save_pretrained(folder)
    to_hf_tokenizer(CharTokenizer(chars)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def demo(sprint09_run, slow_model):
    mod = load_script(DEMO)
    choices = mod.discover_models([str(slow_model), str(slow_model.parent / "not-a-model")])
    app = mod.build_app(choices, concurrency=2)
    _, url, _ = app.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    labels = {
        "tiny": next(c.label for c in choices if "sprint-09" in c.label),
        "slow": str(slow_model),
        "broken": str(slow_model.parent / "not-a-model"),
    }
    yield mod, app, url, labels
    app.close()


def _client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, analytics_enabled=False)


def _args(label: str, prompt: str, engine: str = "llmlab", max_new: int = 20, temp: float = 0.0):
    return (label, prompt, False, engine, temp, 50, 0.95, max_new, 1)


def test_models_are_discovered_locally(demo) -> None:
    mod, _, _, labels = demo
    choices = mod.discover_models()
    assert choices[0].source == "smollm2"  # the offline model is always offered
    assert any(c.label == labels["tiny"] for c in choices)


@pytest.mark.parametrize("engine", ["llmlab", "transformers"])
def test_pieces_stream_before_the_end(demo, engine: str) -> None:
    _, _, url, labels = demo
    job = _client(url).submit(*_args(labels["tiny"], "ROMEO:", engine, max_new=20),
                              api_name="/generate")  # fmt: skip
    text, status = job.result(timeout=120)
    updates = [out[0] for out in job.outputs()]
    assert status.startswith("done: ") and len(text) > 0
    # Several partial texts arrived, each extending the previous one, before the last.
    partial = [u for u in updates if u and u != text]
    assert len(partial) >= 3
    assert all(text.startswith(u) for u in partial)


@pytest.mark.parametrize("engine", ["transformers", "llmlab"])
def test_stop_ends_generation_within_a_second(demo, engine: str) -> None:
    _, app, url, labels = demo
    client = _client(url)
    job = client.submit(*_args(labels["slow"], "abc", engine, max_new=512, temp=1.0),
                        api_name="/generate")  # fmt: skip
    deadline = time.monotonic() + 120
    while not any(out[0] for out in job.outputs()):  # wait for streamed text
        assert time.monotonic() < deadline and not job.done(), "no text arrived"
        time.sleep(0.02)
    assert app.generations.running == 1
    client.predict(api_name="/stop")  # same client = same browser session
    stopped_at = time.monotonic()
    while app.generations.running:
        time.sleep(0.01)
        assert time.monotonic() - stopped_at < 1.0, "generation still running 1 s after Stop"
    text_then = job.outputs()[-1][0] if job.outputs() else ""
    assert len(text_then) < 512  # it really ended early


def test_bad_input_is_a_message_and_the_server_keeps_serving(demo) -> None:
    _, _, url, labels = demo
    client = _client(url)
    _, status = client.predict(*_args(labels["tiny"], "   "), api_name="/generate")
    assert "Type a prompt" in status
    _, status = client.predict(*_args(labels["broken"], "hello"), api_name="/generate")
    assert status.startswith("Could not load") and "Traceback" not in status
    _, status = client.predict(*_args(labels["tiny"], "x" * 100), api_name="/generate")
    assert "shorten it" in status  # 100 characters, context 32
    _, status = client.predict(*_args(labels["tiny"], "KING \u2603:"), api_name="/generate")
    assert "cannot encode" in status  # a snowman is not among the model's characters
    text, status = client.predict(*_args(labels["tiny"], "KING:"), api_name="/generate")
    assert status.startswith("done") and text


def test_eight_concurrent_clients_each_get_a_complete_answer(demo) -> None:
    _, _, url, labels = demo
    results: list[tuple[str, str]] = []

    def user(i: int) -> None:
        client = _client(url)
        results.append(
            client.predict(
                *_args(labels["tiny"], f"LORD {'ABCDEFGH'[i]}:", max_new=16), api_name="/generate"
            )  # fmt: skip
        )

    threads = [threading.Thread(target=user, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert len(results) == 8
    assert all(status.startswith("done: ") and text for text, status in results)


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium: install it with `apt-get install -y chromium` (Debian) to run the "
    "real-browser test; .ci/run does this",
)
def test_a_real_browser_streams_and_stops(demo) -> None:
    from playwright.sync_api import sync_playwright

    _, app, url, labels = demo
    shot = runs_dir() / "10_pretrained_generation_demo" / "demo_browser.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        try:
            page = browser.new_page()
            page.goto(url)
            page.get_by_role("combobox", name="model").click()
            page.get_by_role("option", name=labels["slow"]).click()
            page.locator("#prompt textarea").fill("Once upon a time")
            page.locator("#max-new input[type=number]").fill("512")
            page.locator("#max-new input[type=number]").press("Enter")
            page.locator("#generate").click()
            output = page.locator("#output textarea")
            page.wait_for_function(
                "el => el.value.length > 5", arg=output.element_handle(), timeout=60_000
            )
            seen = output.input_value()
            page.wait_for_timeout(300)
            assert len(output.input_value()) >= len(seen)  # still growing (or done)
            page.locator("#stop").click()
            stopped_at = time.monotonic()
            while app.generations.running:
                time.sleep(0.01)
                assert time.monotonic() - stopped_at < 1.0, "generation survived Stop"
            page.wait_for_function(
                "() => document.querySelector('#status').innerText.includes('stopped')"
            )
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000


def test_main_check_streams_one_answer(sprint09_run) -> None:
    mod = load_script(DEMO)
    label = next(c.label for c in mod.discover_models() if "sprint-09" in c.label)
    result = mod.main(["--check", "--port", "0", "--check-model", label])
    assert result["status"].startswith("done") and result["updates"] >= 3
    assert result["url"].startswith("http://127.0.0.1:")
