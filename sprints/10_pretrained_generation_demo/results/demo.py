"""A gradio web demo: pick a model, type a prompt, watch the text stream in, stop it any time.

Models found locally are offered in a dropdown: SmolLM2-135M-Instruct (offline, bundled) and
every sprint-09 run of yours under `runs/` (exported once to Hugging Face format); `--model`
adds folders or hub names. Two engines produce the same kind of stream: `transformers`
(`model.generate` in a thread + `TextIteratorStreamer`) and `llmlab` (our from-scratch
decoding loop, `llmlab.generate.stream`). Stop really stops: it sets an event that a stopping
criterion (transformers) or `should_stop` (llmlab) reads before every token.

Run:  python -m sprints.10_pretrained_generation_demo.results.demo
      then open http://127.0.0.1:7860 in a browser (Ctrl-C to quit).
      --host 0.0.0.0 serves other machines too; --check starts it, streams one answer
      through gradio_client and exits (what the smoke test does).
"""

# No `from __future__ import annotations` here: gradio reads the `gr.Request` annotation of
# the handlers at run time to pass them the request (and the session it belongs to).

import argparse
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from llmlab.cli import positive_int, run
from llmlab.errors import LLMLabError
from llmlab.generate import beam_search, stream, stream_transformers
from llmlab.paths import runs_dir
from llmlab.pretrained import OFFLINE_NAME, SPRINT09_RUNS, checkpoint_folder, load_pretrained

log = logging.getLogger("llmlab.demo")
ENGINES = ("transformers", "llmlab")
SMOLLM2_LABEL = "SmolLM2-135M-Instruct (offline)"


@dataclass(frozen=True)
class ModelChoice:
    label: str  # what the dropdown shows
    source: str  # what `load_pretrained` receives


def discover_models(extra: list[str] | None = None) -> list[ModelChoice]:
    """SmolLM2, then each sprint-09 run with a checkpoint (newest first), then `extra`."""
    choices = [ModelChoice(SMOLLM2_LABEL, OFFLINE_NAME)]
    root = runs_dir().joinpath(*SPRINT09_RUNS)
    for run_folder in sorted(root.glob("*"), reverse=True) if root.is_dir() else []:
        try:
            ckpt = checkpoint_folder(run_folder)
        except LLMLabError:
            continue
        choices.append(ModelChoice(f"your sprint-09 model ({run_folder.name})", str(ckpt)))
    choices += [ModelChoice(name, name) for name in extra or []]
    return choices


class ModelCache:
    """Loaded (model, tokenizer) pairs, at most `size`, loaded once even if asked for twice."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self.loaded: dict[str, tuple[Any, Any]] = {}
        self.lock = threading.Lock()

    def get(self, source: str) -> tuple[Any, Any]:
        with self.lock:
            if source not in self.loaded:
                if len(self.loaded) >= self.size:
                    self.loaded.pop(next(iter(self.loaded)))  # the oldest goes
                self.loaded[source] = load_pretrained(source)
            return self.loaded[source]


class Generations:
    """The stop event of each browser session, and the generations still running."""

    def __init__(self) -> None:
        self.events: dict[str, threading.Event] = {}
        self.running = 0
        self.lock = threading.Lock()

    def start(self, session: str) -> threading.Event:
        event = threading.Event()
        with self.lock:
            self.events[session] = event
            self.running += 1
        return event

    def finish(self) -> None:
        with self.lock:
            self.running -= 1

    def stop(self, session: str) -> None:
        with self.lock:
            event = self.events.get(session)
        if event is not None:
            event.set()


def context_length(model: Any) -> int:
    return int(getattr(model.config, "max_position_embeddings", 2048))


def encode_prompt(tokenizer: Any, prompt: str, use_chat: bool) -> torch.Tensor:
    """Token ids (1, T): through the chat template for instruct models when asked."""
    if use_chat and getattr(tokenizer, "chat_template", None):
        out = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            return_dict=True,
            return_tensors="pt",
        )
        return out["input_ids"]
    return tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]


@dataclass
class Request:
    """One press of Generate, as the handler receives it."""

    source: str
    prompt: str
    use_chat: bool = True
    engine: str = "transformers"
    temperature: float = 0.7
    top_k: int = 50
    top_p: float = 0.95
    max_new_tokens: int = 128
    num_beams: int = 1


def generate_text(
    req: Request, cache: ModelCache, stop_event: threading.Event
) -> Iterator[tuple[str, str]]:
    """Yield (text so far, status line); every expected failure is a status line."""
    if not req.prompt.strip():
        yield "", "Type a prompt first."
        return
    try:
        model, tokenizer = cache.get(req.source)
    except Exception as exc:  # a folder that is not a model, a missing file, no network...
        log.exception("loading %s failed", req.source)
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        yield "", f"Could not load `{req.source}`: {first}"
        return
    try:
        ids = encode_prompt(tokenizer, req.prompt, req.use_chat)
    except Exception:  # a character-level model cannot encode characters it never saw
        yield (
            "",
            (
                "This model's tokenizer cannot encode the prompt (a character-level model knows "
                f"only the {len(tokenizer)} characters it was trained on): rephrase it."
            ),
        )
        return
    limit = context_length(model)
    if ids.shape[1] >= limit:
        yield (
            "",
            (
                f"The prompt has {ids.shape[1]} tokens but this model reads at most {limit}: "
                "shorten it."
            ),
        )
        return
    new = min(req.max_new_tokens, limit - ids.shape[1])
    note = f" (capped at {new}: the context is {limit})" if new < req.max_new_tokens else ""
    greedy = req.temperature <= 0
    eos = model.generation_config.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    start = time.perf_counter()
    text = ""
    if req.num_beams > 1:  # beams are compared at the end: nothing to stream before
        if req.engine == "llmlab":
            out, _ = beam_search(model, ids, req.num_beams, new, eos_token_id=eos)
        else:
            out = model.generate(
                ids, num_beams=req.num_beams, do_sample=False, max_new_tokens=new,
                pad_token_id=pad,
            )  # fmt: skip
        text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        pieces: Iterator[str] = iter([text])
        text = ""
    elif req.engine == "llmlab":
        pieces = stream(
            model, tokenizer, ids, new, greedy=greedy, temperature=max(req.temperature, 1e-6),
            top_k=req.top_k, top_p=req.top_p, eos_token_id=eos, should_stop=stop_event.is_set,
        )  # fmt: skip
    else:
        sampling = {} if greedy else {"temperature": req.temperature, "top_p": req.top_p}
        pieces = stream_transformers(
            model, tokenizer, ids, stop_event=stop_event, max_new_tokens=new,
            do_sample=not greedy, top_k=req.top_k, pad_token_id=pad, **sampling,
        )  # fmt: skip
    for piece in pieces:
        text += piece
        yield text, _status(tokenizer, text, start, "generating", note)
    done = "stopped" if stop_event.is_set() else "done"
    yield text, _status(tokenizer, text, start, done, note)


def _status(tokenizer: Any, text: str, start: float, what: str, note: str) -> str:
    n = len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0
    seconds = time.perf_counter() - start
    return f"{what}: {n} tokens in {seconds:.1f} s ({n / max(seconds, 1e-9):.1f} tokens/s){note}"


def build_app(choices: list[ModelChoice], concurrency: int = 2):
    """The gr.Blocks app; `app.generations` tracks running generations (for the tests)."""
    import gradio as gr

    cache, generations = ModelCache(), Generations()
    by_label = {c.label: c.source for c in choices}

    def on_generate(label, prompt, use_chat, engine, temperature, top_k, top_p, max_new, beams,
                    request: gr.Request):  # fmt: skip
        session = request.session_hash or "no-session"
        event = generations.start(session)
        req = Request(
            by_label.get(label, label), prompt or "", bool(use_chat), engine, float(temperature),
            int(top_k), float(top_p), int(max_new), int(beams),
        )  # fmt: skip
        try:
            yield from generate_text(req, cache, event)
        except Exception as exc:  # a bug: log it, show one line, keep serving
            log.exception("generation failed")
            yield "", f"Generation failed: {type(exc).__name__}: {str(exc)[:200]}"
        finally:  # also when the event is cancelled (Stop): closing the stream stops it
            event.set()
            generations.finish()

    def on_stop(request: gr.Request) -> str:
        generations.stop(request.session_hash or "no-session")
        return "stopped."

    with gr.Blocks(title="llmlab: generation demo") as app:
        gr.Markdown(
            "## llmlab — text generation\nPick a model and an engine, type a prompt, press "
            "**Generate**. Temperature 0 is greedy decoding; beams > 1 is beam search "
            "(returned whole at the end). **Stop** ends generation at the next token."
        )
        with gr.Row():
            model = gr.Dropdown([c.label for c in choices], value=choices[0].label, label="model",
                                elem_id="model")  # fmt: skip
            engine = gr.Radio(list(ENGINES), value="transformers", label="engine")
            use_chat = gr.Checkbox(value=True, label="chat template (instruct models)")
        prompt = gr.Textbox(label="prompt", lines=4, elem_id="prompt",
                            placeholder="Write a haiku about the sea.")  # fmt: skip
        with gr.Accordion("decoding", open=True):
            with gr.Row():
                temperature = gr.Slider(0.0, 2.0, value=0.7, step=0.05, label="temperature")
                top_k = gr.Slider(0, 200, value=50, step=1, label="top-k (0 = off)")
                top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.01, label="top-p")
            with gr.Row():
                max_new = gr.Slider(1, 512, value=128, step=1, label="max new tokens",
                                    elem_id="max-new")  # fmt: skip
                beams = gr.Slider(1, 8, value=1, step=1, label="beams")
        with gr.Row():
            go = gr.Button("Generate", variant="primary", elem_id="generate")
            stop = gr.Button("Stop", variant="stop", elem_id="stop")
        output = gr.Textbox(label="output", lines=12, elem_id="output")
        status = gr.Markdown(elem_id="status")
        inputs = [model, prompt, use_chat, engine, temperature, top_k, top_p, max_new, beams]
        event = go.click(on_generate, inputs, [output, status], api_name="generate")
        stop.click(on_stop, None, status, cancels=[event], api_name="stop")
    app.queue(default_concurrency_limit=concurrency)
    app.generations = generations
    return app


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="A gradio demo: streamed generation from SmolLM2 or your own model. Open "
        "the printed URL (http://127.0.0.1:7860 by default) in a browser; Ctrl-C quits.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; 0.0.0.0 lets other machines connect")  # fmt: skip
    p.add_argument("--port", type=int, default=7860, help="port (0: any free port)")
    p.add_argument("--model", action="append", default=[],
                   help="extra model: a Hugging Face folder, an llmlab checkpoint, or a hub "
                   "name such as gpt2 (needs internet); repeatable")  # fmt: skip
    p.add_argument("--concurrency", type=positive_int, default=2,
                   help="generations that run at once; the others wait in the queue")  # fmt: skip
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch CPU threads (1 is fastest on a busy 2-core machine)")  # fmt: skip
    p.add_argument("--check", action="store_true",
                   help="start, stream one answer through gradio_client, print it, exit")  # fmt: skip
    p.add_argument("--check-model", default=None,
                   help="the dropdown label --check uses (default: the first model)")  # fmt: skip
    return p


def check(url: str, label: str, prompt: str = "The sea is") -> dict[str, Any]:
    """Drive the running app like a user would: submit, read the stream, report."""
    from gradio_client import Client

    client = Client(url, verbose=False, analytics_enabled=False)
    start = time.perf_counter()
    job = client.submit(label, prompt, False, "llmlab", 0.0, 50, 0.95, 24, 1, api_name="/generate")
    first = None
    seen = 0
    while not job.done():
        if first is None and job.outputs() and job.outputs()[-1][0]:
            first = time.perf_counter() - start
        seen = len(job.outputs())
        time.sleep(0.01)
    text, status = job.result()
    return {"text": text, "status": status, "updates": max(seen, len(job.outputs())),
            "first_piece_s": first if first is not None else float("nan")}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    choices = discover_models(args.model)
    app = build_app(choices, args.concurrency)
    try:
        _, url, _ = app.launch(
            server_name=args.host,
            server_port=args.port or None,
            prevent_thread_lock=True,
            quiet=True,
            show_error=False,
        )
        print(f"demo running at {url} (Ctrl-C to quit); models: {[c.label for c in choices]}")
        if args.check:
            label = args.check_model or choices[0].label
            result = check(url, label)
            print(f"check: {result['updates']} streamed updates, first after "
                  f"{result['first_piece_s']:.2f} s; {result['status']}")  # fmt: skip
            return {"url": url, **result}
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            print("bye")
        return {"url": url}
    finally:
        app.close()
        torch.set_num_threads(before)


if __name__ == "__main__":
    raise SystemExit(run(main))
