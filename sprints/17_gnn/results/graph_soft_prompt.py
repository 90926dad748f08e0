"""Graph embeddings into a language model: a soft prompt makes a FROZEN LM say a node's club.

Each karate-club member gets an embedding from a graph auto-encoder (a GCN trained to predict
friendships; it never sees a label). A linear map turns that vector into a few "virtual
tokens" in the LM's input-embedding space, placed inside the prompt
"Club member [virtual tokens] sided with" -> " Mr. Hi." or " the Officer.". Only the map is
trained, on half of the members; the LM (SmolLM2-135M-Instruct by default, or your sprint-09
GPT) is frozen. On the other half we decode greedily and check the generated label, and
compare with baselines: the same prompt without virtual tokens, a majority vote of labelled
friends, the majority class and, with `--text-baseline`, a text prompt that describes the
member's friends and their known clubs.

Run: python -m sprints.17_gnn.results.graph_soft_prompt
     python -m sprints.17_gnn.results.graph_soft_prompt --text-baseline   # the sprint README's table
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import torch

from llmlab import gnn
from llmlab.cli import positive_float, positive_int, run
from llmlab.device import get_device, seed_everything
from llmlab.errors import LLMLabError
from llmlab.plotting import plot_curves
from llmlab.pretrained import load_gpt_checkpoint, load_pretrained
from llmlab.runs import make_writer, run_dir
from llmlab.soft_prompt import (
    SoftPrompt,
    embedding_scale,
    encode,
    frozen,
    greedy_continuations,
    input_embedding,
    label_log_probs,
    soft_prompt_loss,
)

from ._common import SPRINT, add_common_args, fmt, spread, with_threads

LABELS = (" Mr. Hi.", " the Officer.")  # what the LM must say, club 0 and club 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--lm",
        default="smollm2",
        help="'smollm2' (offline, bundled), 'sprint09' (your newest sprint-09 GPT), a "
        "sprint-09 checkpoint or run folder, or a Hugging Face model folder / hub name",
    )
    parser.add_argument("--seeds", type=positive_int, default=3, help="train/test splits")
    parser.add_argument("--steps", type=positive_int, default=30, help="soft-prompt steps")
    parser.add_argument("--lr", type=positive_float, default=0.005, help="Adam learning rate")
    parser.add_argument("--virtual-tokens", type=positive_int, default=2, help="virtual tokens")
    parser.add_argument(
        "--embedding-dim", type=positive_int, default=2, help="node-embedding width (GAE output)"
    )
    parser.add_argument(
        "--gae-steps", type=positive_int, default=200, help="graph auto-encoder training steps"
    )
    parser.add_argument("--before", default=" Club member", help="text before the virtual tokens")
    parser.add_argument("--after", default=" sided with", help="text after the virtual tokens")
    parser.add_argument(
        "--new-tokens", type=positive_int, default=4, help="tokens generated per member"
    )
    parser.add_argument(
        "--text-baseline",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also score the text-description baseline (one long prompt per member: about a "
        "minute more with SmolLM2; skipped anyway when its prompts do not fit the context)",
    )
    add_common_args(parser, "first seed (split, embeddings and projection of seed, seed+1, ...)")
    return parser


def load_lm(name: str, device: torch.device):
    """(model, tokenizer, context length or None) for a transformers model or a sprint-09 GPT."""
    folder = Path(name)
    ours = (folder / "checkpoints").is_dir() or (folder / "tokenizer_meta.json").is_file()
    if name == "sprint09" or ours:
        model, tokenizer = load_gpt_checkpoint(name)
        return model.to(device).eval(), tokenizer, model.config.block_size
    model, tokenizer = load_pretrained(name, device=device)
    return model, tokenizer, None


def node_embeddings(karate: gnn.KarateClub, dim: int, steps: int, seed: int) -> torch.Tensor:
    """A graph auto-encoder's node vectors (friendships only, no labels), standardised."""
    torch.manual_seed(seed)
    encoder = gnn.GCN(karate.num_nodes, 32, dim, dropout=0.0)
    gnn.train_link_predictor(
        encoder, karate.x, karate.edge_index, steps, generator=torch.Generator().manual_seed(seed)
    )
    with torch.no_grad():
        z = encoder(karate.x, karate.edge_index)
    return (z - z.mean(0)) / z.std(0).clamp(min=1e-6)


def stratified_halves(labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Half of each class for training (rounded down), the rest held out."""
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in torch.unique(labels):
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=g)]
        train.append(members[: len(members) // 2])
        test.append(members[len(members) // 2 :])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def read_label(text: str) -> int | None:
    """Which club a generated text names first: 0, 1, or None (neither, as a whole word)."""
    found = []
    for c, label in enumerate(LABELS):
        match = re.search(rf"\b{re.escape(label.strip(' .').lower())}\b", text.lower())
        if match:
            found.append((match.start(), c))
    return min(found)[1] if found else None


def describe(member: int, karate: gnn.KarateClub, known: dict[int, int]) -> str:
    """The text baseline's prompt: the member's friends and the clubs of those already known."""
    friends = sorted(karate.edge_index[1][karate.edge_index[0] == member].tolist())
    parts = [f"{f} ({LABELS[known[f]].strip(' .')})" if f in known else str(f) for f in friends]
    return f"Karate club. Member {member}'s friends: {', '.join(parts)}. Member {member} sided with"


def text_baseline_fits(
    tokenizer, karate: gnn.KarateClub, context: int | None, label_len: int
) -> bool:
    """Can the model read the text baseline's prompts? Says why not in one line."""
    everyone = {m: int(c) for m, c in enumerate(karate.club)}  # the longest descriptions
    try:
        longest = max(len(encode(tokenizer, describe(m, karate, everyone))) for m in range(34))
    except LLMLabError as exc:  # e.g. a character-level vocabulary without digits
        print(f"text baseline skipped: {exc}")
        return False
    if context is not None and longest + label_len > context:
        print(
            f"text baseline skipped: its prompts need up to {longest} tokens, the context is {context}"
        )
        return False
    return True


def main(argv: list[str] | None = None) -> dict[str, float | str]:
    return with_threads(build_parser().parse_args(argv), _main)


def _main(args: argparse.Namespace) -> dict[str, float | str]:
    start = time.perf_counter()
    device = get_device(args.device)
    karate = gnn.karate_club(communities=False)
    model, tokenizer, context = load_lm(args.lm, device)
    before, after = encode(tokenizer, args.before), encode(tokenizer, args.after)
    labels = [encode(tokenizer, text) for text in LABELS]
    words = [encode(tokenizer, text.rstrip("."))[-1] for text in LABELS]  # " Hi", " Officer"
    longest = len(before) + args.virtual_tokens + len(after) + max(map(len, labels))
    if context is not None and longest > context:
        raise LLMLabError(
            f"prompt + virtual tokens + label = {longest} tokens, more than the model's context "
            f"of {context}: shorten --before / --after or use fewer --virtual-tokens"
        )
    text_baseline = args.text_baseline and text_baseline_fits(
        tokenizer, karate, context, max(map(len, labels))
    )
    width = input_embedding(model).weight.shape[1]
    n_frozen = sum(p.numel() for p in model.parameters())
    folder = run_dir(SPRINT, "graph_soft_prompt")
    writer = make_writer(folder)
    print(
        f"LM: {args.lm}, {n_frozen:,} parameters, all frozen; soft prompt: "
        f"{args.embedding_dim}-D node embedding -> {args.virtual_tokens} x {width} virtual tokens "
        f"({(args.embedding_dim + 1) * args.virtual_tokens * width:,} trainable parameters)"
    )
    print(f"prompt: {args.before!r} + [virtual tokens] + {args.after!r} -> {LABELS}")

    results: dict[str, dict[str, list[float]]] = {}

    def record(method: str, generated: float, choice: float) -> None:
        entry = results.setdefault(method, {"generated": [], "choice": []})
        entry["generated"].append(generated)
        entry["choice"].append(choice)

    curves, examples, baseline_examples = {}, [], []
    with frozen(model):
        for seed in range(args.seed, args.seed + args.seeds):
            seed_everything(seed)
            z = node_embeddings(karate, args.embedding_dim, args.gae_steps, seed).to(device)
            train, test = stratified_halves(karate.club, seed)
            y_train, y_test = karate.club[train], karate.club[test]
            prompt = SoftPrompt(
                args.embedding_dim, width, args.virtual_tokens, embedding_scale(model)
            )
            # Class-label initialisation (Lester et al., 2021): virtual token i starts as the
            # embedding of label i's last word (" Hi", " Officer"), the same for every member;
            # the map from the graph starts small, so training decides which label to favour.
            table = input_embedding(model).weight.detach()
            start_vectors = [table[words[i % len(words)]] for i in range(args.virtual_tokens)]
            with torch.no_grad():
                prompt.proj.bias.copy_(torch.cat(start_vectors) / prompt.scale)
                prompt.proj.weight.mul_(0.1)
            prompt.to(device)
            optimizer = torch.optim.Adam(prompt.parameters(), lr=args.lr)
            targets = [labels[int(c)] for c in y_train]
            losses = []
            for step in range(args.steps):
                loss = soft_prompt_loss(model, prompt(z[train]), targets, before, after)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                writer.add_scalar(f"soft_prompt_loss/seed_{seed}", losses[-1], step)
            curves[f"seed {seed}"] = losses

            with torch.no_grad():
                vectors = prompt(z[test])
                choice = label_log_probs(model, vectors, labels, before, after).argmax(1).cpu()
                new = greedy_continuations(model, vectors, args.new_tokens, before, after)
            texts = [tokenizer.decode(ids) for ids in new]
            said = [read_label(t) for t in texts]
            record(
                "soft prompt from the graph",
                sum(s == int(c) for s, c in zip(said, y_test, strict=True)) / len(test),
                float((choice == y_test).float().mean()),
            )
            if not examples:
                examples = [
                    (int(m), karate.club_names[int(c)], t)
                    for m, c, t in zip(test, y_test, texts, strict=True)
                ]

            # Baselines on the same held-out members.
            with torch.no_grad():
                plain = greedy_continuations(model, None, args.new_tokens, before, after)[0]
                plain_choice = int(label_log_probs(model, None, labels, before, after).argmax())
            plain_said = read_label(tokenizer.decode(plain))
            if not baseline_examples:
                baseline_examples.append(f"{args.before}{args.after}" + tokenizer.decode(plain))
            record(
                "same prompt, no virtual tokens",
                float((y_test == plain_said).float().mean()) if plain_said is not None else 0.0,
                float((y_test == plain_choice).float().mean()),
            )
            majority = int(torch.mode(y_train).values)
            record("majority class (no LM)", *[float((y_test == majority).float().mean())] * 2)
            known = {int(m): int(c) for m, c in zip(train, y_train, strict=True)}
            votes = []
            for m in test.tolist():
                friends = karate.edge_index[1][karate.edge_index[0] == m].tolist()
                tally = [sum(known.get(f, -1) == c for f in friends) for c in (0, 1)]
                votes.append(majority if tally[0] == tally[1] else int(tally[1] > tally[0]))
            vote_acc = float((torch.tensor(votes) == y_test).float().mean())
            record("vote of labelled friends (no LM)", vote_acc, vote_acc)
            if text_baseline:
                gen_hits = choice_hits = 0
                for m, c in zip(test.tolist(), y_test.tolist(), strict=True):
                    ids = encode(tokenizer, describe(m, karate, known))
                    with torch.no_grad():
                        out = greedy_continuations(model, None, args.new_tokens, ids)[0]
                        picked = int(label_log_probs(model, None, labels, ids).argmax())
                    gen_hits += read_label(tokenizer.decode(out)) == c
                    if len(baseline_examples) < 3:
                        baseline_examples.append(describe(m, karate, known) + tokenizer.decode(out))
                    choice_hits += picked == c
                record("text: friends + known clubs", gen_hits / len(test), choice_hits / len(test))
            line = ", ".join(f"{k}: {v['generated'][-1]:.2f}" for k, v in results.items())
            print(
                f"seed {seed}: loss {losses[0]:.2f} -> {losses[-1]:.3f}; generated-label accuracy {line}"
            )

    print(
        f"\nheld-out members ({len(test)} per split), mean ± std [min, max] over {args.seeds} seeds"
    )
    print(f"{'method':36s} {'generated label':>26s} {'likelier label':>26s}")
    figures: dict[str, float | str] = {}
    keys = {
        "soft prompt from the graph": "soft_prompt",
        "same prompt, no virtual tokens": "prompt_only",
        "text: friends + known clubs": "text",
        "majority class (no LM)": "majority",
        "vote of labelled friends (no LM)": "friend_vote",
    }
    for method, entry in results.items():
        print(f"{method:36s} {fmt(entry['generated'], 2):>26s} {fmt(entry['choice'], 2):>26s}")
        figures[f"{keys[method]}_generated_mean"] = spread(entry["generated"])["mean"]
        figures[f"{keys[method]}_generated_std"] = spread(entry["generated"])["std"]
        figures[f"{keys[method]}_choice_mean"] = spread(entry["choice"])["mean"]
    print("\nfirst split, held-out members (true club: generated text):")
    for member, club, text in examples[:8]:
        print(f"  member {member:2d} ({club}): {text!r}")
    print("baselines (prompt -> greedy continuation):")
    for text in baseline_examples:
        print(f"  {text!r}")
    figures["final_loss_mean"] = spread([c[-1] for c in curves.values()])["mean"]
    figures["first_loss_mean"] = spread([c[0] for c in curves.values()])["mean"]
    figures["loss_png"] = str(
        plot_curves(
            curves,
            folder / "soft_prompt_loss.png",
            title="soft-prompt training loss",
            xlabel="step",
            ylabel="cross-entropy of the label tokens",
        )
    )
    writer.close()
    figures["seconds"] = time.perf_counter() - start
    print(f"\nloss curves and TensorBoard logs in {folder} ({figures['seconds']:.0f} s)")
    return figures


if __name__ == "__main__":
    raise SystemExit(run(main))
