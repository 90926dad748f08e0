"""Shakespeare's characters as a knowledge graph: entity linking, GCN embeddings, faiss search.

Every play lists its persons ("PERSONS REPRESENTED." / "Dramatis Personae") and names each
speaker in an abbreviated tag ("Ber.", "FIRST LORD."). The script links every tag to a
person (the rule is `llmlab.knowledge_graph.link_speaker`), reports the unlinked rate per
play and the accuracy on hand-labelled tags of four plays, and builds the graph: one node per
speaking character, an edge for speaking in the same scene (weight = number of such scenes).
A GCN trained as a graph auto-encoder (no labels: it learns to predict who shares a scene)
embeds the characters from their roles and their place in the play; a faiss inner-product
index answers "characters most like X", within all plays or one. Then one more play is added
INCREMENTALLY: its characters are embedded by the frozen encoder and appended to the index,
nothing is rebuilt, and the answers change.

Run: python -m sprints.17_gnn.results.shakespeare_graph --query hamlet:Hamlet --add macbeth
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np
import torch

from llmlab import gnn
from llmlab.cli import positive_float, positive_int, run
from llmlab.data.shakespeare import play_files
from llmlab.device import get_device, seed_everything
from llmlab.embedding import project_2d
from llmlab.errors import LLMLabError
from llmlab.knowledge_graph import (
    CharacterGraph,
    CharacterIndex,
    Play,
    most_like,
    parse_play,
    play_key,
    role_class,
)
from llmlab.plotting import plot_curves, plot_scatter
from llmlab.runs import make_writer, run_dir

from ._common import SPRINT, add_common_args, plot_graph, with_threads

# Hand-labelled speaker tags: tag -> the persons-list entries it names ("Name|role" when two
# entries share a name), None when the list has nobody for it. Decided by reading the scenes.
GOLD_LINKS: dict[str, dict[str, list[str] | None]] = {
    "hamlet": {
        "All": None, "Ber": ["Bernardo"], "Both": None, "Capt": ["A Captain"],
        "Cor. and Volt": ["Cornelius", "Voltimand"], "Danes": None, "For": ["Fortinbras"],
        "Fort": ["Fortinbras"], "Fran": ["Francisco"], "Gent": ["A Gentleman"],
        "Ghost": ["Ghost of Hamlet's Father"], "Guil": ["Guildenstern"], "Ham": ["Hamlet"],
        "Hor": ["Horatio"], "Hor. and Mar": ["Horatio", "Marcellus"], "I Play": ["Players"],
        "I Player": ["Players"], "I Sailor": ["Sailors"], "King": ["Claudius"],
        "Laer": ["Laertes"], "Lord": ["Lords"], "Luc": ["Players"], "Mar": ["Marcellus"],
        "Mar. and Ber": ["Marcellus", "Bernardo"], "Mess": ["Messengers"], "Oph": ["Ophelia"],
        "Osr": ["Osric"], "Osric and Lords": ["Osric", "Lords"], "P. King": ["Players"],
        "P. Queen": ["Players"], "Pol": ["Polonius"], "Pro": ["Players"], "Queen": ["Gertrude"],
        "Rey": ["Reynaldo"], "Ros": ["Rosencrantz"], "Ros and Guil": ["Rosencrantz", "Guildenstern"],
        "Ros. and Guil": ["Rosencrantz", "Guildenstern"],
        "Ros. and Guild": ["Rosencrantz", "Guildenstern"], "Sailor": ["Sailors"],
        "Servant": ["Attendants"], "Volt": ["Voltimand"],
    },
    "lear": {
        "Alb": ["Duke of Albany"], "Alb. and Corn": ["Duke of Albany", "Duke of Cornwall"],
        "Bur": ["Duke of Burgundy"], "Capt": ["An Officer employed by Edmund"],
        "Cor": ["Cordelia"], "Corn": ["Duke of Cornwall"], "Cur": ["Curan"],
        "Doct": ["Physician"], "Edg": ["Edgar"], "Edm": ["Edmund"],
        "First Serv": ["Servants to Cornwall"], "Second Serv": ["Servants to Cornwall"],
        "Third Serv": ["Servants to Cornwall"], "Fool": ["Fool"], "France": ["King of France"],
        "Gent": ["Gentleman"], "Glou": ["Earl of Gloster"], "Gon": ["Goneril"],
        "Her": ["A Herald"], "Kent": ["Earl of Kent"], "Knight": ["Knights attending on the King"],
        "Lear": ["Lear"], "Mess": ["Messengers"], "Off": ["An Officer employed by Edmund"],
        "Officer": ["An Officer employed by Edmund"], "Old Man": ["Old Man"], "Osw": ["Oswald"],
        "Phys": ["Physician"], "Reg": ["Regan"],
    },
    "henry_iv_part_1": {
        "ARCH": ["Scroop"], "BARD": ["Bardolph"], "BLUNT": ["Sir Walter Blunt"],
        "CAR": ["Carriers"], "CHAM": ["Chamberlain"], "DOUG": ["Archibald"],
        "FAL": ["Sir John Falstaff"], "FIRST TRAVELLER": ["Travellers"],
        "SECOND TRAVELLER": ["Travellers"], "FRAN": ["Drawers"], "GADS": ["Gadshill"],
        "GLEND": ["Owen Glendower"], "HOST": ["Mrs. Quickly"], "HOT": ["Henry Percy|his son"],
        "KING": ["King Henry the Fourth"], "LADY": ["Lady Percy"], "LADY P": ["Lady Percy"],
        "LAN": ["Prince John of Lancaster"], "MESS": None, "MORT": ["Edmund Mortimer"],
        "NORTH": ["Henry Percy|Earl of Northumberland"], "OST": None, "PETO": ["Peto"],
        "POINTZ": ["Pointz"], "PRINCE": ["Henry"], "SERV": ["Attendants"], "SHER": ["Sheriff"],
        "SIR M": ["Sir Michael"], "VER": ["Sir Richard Vernon"], "VINT": ["Vintner"],
        "WEST": ["Earl of Westmoreland"], "WOR": ["Thomas Percy"],
    },
    "macbeth": {
        "ALL": None, "ANGUS": ["ANGUS"],
        "APPARITION": ["The Ghost of Banquo and several other Apparitions"],
        "ATTENDANT": ["Attendants"], "BANQUO": ["BANQUO"], "BOTH MURDERERS": ["Murderers"],
        "CAITHNESS": ["CAITHNESS"], "DOCTOR": ["A Scotch Doctor"], "DONALBAIN": ["DONALBAIN"],
        "DUNCAN": ["DUNCAN"], "FIRST MURDERER": ["Murderers"], "FIRST WITCH": ["three Witches"],
        "FLEANCE": ["FLEANCE"], "GENTLEWOMAN": ["Gentlewoman attending on Lady Macbeth"],
        "HECATE": ["HECATE"], "LADY MACBETH": ["LADY MACBETH"], "LADY MACDUFF": ["LADY MACDUFF"],
        "LENNOX": ["LENNOX"], "LORD": ["Lords"], "LORDS": ["Lords"], "MACBETH": ["MACBETH"],
        "MACDUFF": ["MACDUFF"], "MALCOLM": ["MALCOLM"], "MENTEITH": ["MENTEITH"],
        "MESSENGER": ["Messengers"], "MURDERER": ["Murderers"], "OLD MAN": ["An Old Man"],
        "PORTER": ["A Porter"], "ROSS": ["ROSS"], "SECOND MURDERER": ["Murderers"],
        "SECOND WITCH": ["three Witches"], "SERVANT": ["Attendants"], "SEYTON": ["SEYTON"],
        "SIWARD": ["SIWARD"], "SOLDIER": ["A Soldier"], "SOLDIERS": ["Soldiers"], "SON": ["BOY"],
        "Song": None, "THIRD MURDERER": ["Murderers"], "THIRD WITCH": ["three Witches"],
        "YOUNG SIWARD": ["YOUNG SIWARD"],
    },
}  # fmt: skip
DEFAULT_QUERIES = ("hamlet:Hamlet", "othello:Iago", "lear:Fool")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--plays",
        default="all",
        help="'all' (the 37 plays) or comma-separated play keys, e.g. hamlet,othello,lear",
    )
    parser.add_argument(
        "--add", default="macbeth", help="the play added incrementally at the end ('' = none)"
    )
    parser.add_argument(
        "--query",
        action="append",
        help=f"a character, Name or play:Name (repeatable; default {', '.join(DEFAULT_QUERIES)})",
    )
    parser.add_argument("--k", type=positive_int, default=5, help="answers per query")
    parser.add_argument("--steps", type=positive_int, default=300, help="auto-encoder steps")
    parser.add_argument("--hidden", type=positive_int, default=64, help="GCN hidden width")
    parser.add_argument("--dim", type=positive_int, default=32, help="embedding width")
    parser.add_argument("--lr", type=positive_float, default=0.01, help="Adam learning rate")
    parser.add_argument("--picture-play", default="hamlet", help="the play whose graph is drawn")
    parser.add_argument(
        "--projection",
        choices=["umap", "tsne", "pca"],
        default="umap",
        help="2-D map of the embeddings (UMAP's first call compiles for ~20-45 s)",
    )
    add_common_args(parser, "seed of the encoder, its negatives and the 2-D map")
    return parser


def gold_accuracy(play: Play, gold: dict[str, list[str] | None]) -> dict[str, float | list]:
    """Share of speeches (and of distinct tags) linked exactly as the hand labels say."""

    def name(i: int) -> str:
        return play.persons[i].name

    def matches(i: int, label: str) -> bool:
        label_name, _, label_role = label.partition("|")
        person = play.persons[i]
        return person.name == label_name and (not label_role or person.role == label_role)

    right_speeches = right_tags = 0
    errors = []
    for tag, n in play.tag_counts.items():
        got = list(play.links[tag].persons)
        want = gold.get(tag, "missing")
        if want == "missing":
            continue
        ok = (not got and want is None) or (
            want is not None
            and len(got) == len(want)
            and all(matches(i, w) for i, w in zip(got, want, strict=True))
        )
        right_speeches += n * ok
        right_tags += ok
        if not ok:
            errors.append((tag, n, [name(i) for i in got] or None, want))
    n_speeches = sum(n for t, n in play.tag_counts.items() if t in gold)
    return {
        "speech_accuracy": right_speeches / max(n_speeches, 1),
        "tag_accuracy": right_tags / max(len(gold), 1),
        "errors": sorted(errors, key=lambda e: -e[1]),
    }


def embed(encoder: torch.nn.Module, x, ei, w, device) -> torch.Tensor:
    with torch.no_grad():
        return encoder(x.to(device), ei.to(device), w.to(device)).cpu()


def answer(graph, index, queries, k, play=None) -> dict[str, list[tuple[str, float]]]:
    return {q: most_like(graph, index, q, k, play) for q in queries}


def main(argv: list[str] | None = None) -> dict:
    return with_threads(build_parser().parse_args(argv), _main)


def _main(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    seed_everything(args.seed)
    device = get_device(args.device)
    files = {play_key(p): p for p in play_files()}
    keys = list(files) if args.plays == "all" else [k.strip() for k in args.plays.split(",")]
    unknown = [k for k in keys + ([args.add] if args.add else []) if k not in files]
    if unknown:
        raise LLMLabError(f"unknown play(s) {', '.join(unknown)}: choose from {', '.join(files)}")
    keys = [k for k in keys if k != args.add]
    if not keys:
        raise LLMLabError("no play left to build the graph from: list more plays in --plays")
    queries = args.query or list(DEFAULT_QUERIES)
    folder = run_dir(SPRINT, "shakespeare_graph")
    writer = make_writer(folder)

    # 1. Parse and link every play.
    plays = {k: parse_play(files[k]) for k in keys + ([args.add] if args.add else [])}
    print(
        f"{'play':30s} {'listed':>6s} {'speak':>5s} {'scenes':>6s} {'speeches':>8s} {'unlinked':>8s}  most frequent unlinked tags"
    )
    unlinked_rates = {}
    for key, play in plays.items():
        unlinked_rates[key] = play.unlinked_rate
        top = ", ".join(f"{t} ({n}, {how})" for t, n, how in play.unlinked_tags()[:3])
        print(
            f"{key:30s} {len(play.persons):6d} {len(play.speeches):5d} {len(play.scenes):6d} "
            f"{play.n_speeches:8d} {play.unlinked_rate:8.1%}  {top}"
        )
    total = sum(p.n_speeches for p in plays.values())
    unlinked_total = sum(p.unlinked_speeches for p in plays.values()) / max(total, 1)
    print(f"{'all':30s} {'':6s} {'':5s} {'':6s} {total:8d} {unlinked_total:8.1%}")

    gold_results = {k: gold_accuracy(plays[k], GOLD_LINKS[k]) for k in GOLD_LINKS if k in plays}
    if gold_results:
        print("\nentity linking against hand labels (share of speeches / of distinct tags right):")
        for key, res in gold_results.items():
            wrong = "; ".join(f"{t} ({n}) -> {g} not {w}" for t, n, g, w in res["errors"][:4])
            print(
                f"  {key:16s} {res['speech_accuracy']:.1%} / {res['tag_accuracy']:.1%}   errors: {wrong}"
            )

    # 2. The graph of every play but the one added later.
    graph = CharacterGraph()
    for key in keys:
        graph.add_play(plays[key])
    x = graph.x()
    ei, w = graph.edge_index()
    print(
        f"\ngraph: {len(graph.plays)} plays, {graph.num_nodes} speaking characters, "
        f"{len(graph.edges)} co-scene edges; {x.shape[1]} features per character "
        "(6 from its place in the play, the rest role words)"
    )

    # 3. Embeddings: a GCN auto-encoder that predicts who shares a scene (negatives drawn
    # within the same play, so play identity is not what it learns).
    torch.manual_seed(args.seed)
    encoder = gnn.GCN(x.shape[1], args.hidden, args.dim, dropout=0.0).to(device)
    losses = gnn.train_link_predictor(
        encoder,
        x.to(device),
        ei.to(device),
        args.steps,
        args.lr,
        w.to(device),
        groups=graph.play_ids(),
        generator=torch.Generator().manual_seed(args.seed),
    )
    for step, loss in enumerate(losses):
        writer.add_scalar("auto_encoder_loss", loss, step)
    z = embed(encoder, x, ei, w, device)
    centre = z.mean(0)  # fixed with the encoder: the index stores z - centre
    index = CharacterIndex(args.dim)
    index.add(list(range(graph.num_nodes)), z - centre)
    print(
        f"auto-encoder loss {losses[0]:.3f} -> {losses[-1]:.3f}; faiss index: {index.size} vectors"
    )

    neighbours = [index.search(index.vector(i), args.k + 1)[1:] for i in range(graph.num_nodes)]
    same_play = np.mean(
        [
            graph.characters[j].play == graph.characters[i].play
            for i, nb in enumerate(neighbours)
            for j, _ in nb
        ]
    )
    print(
        f"share of each character's {args.k} nearest neighbours from its own play: {same_play:.1%}"
    )

    before = answer(graph, index, queries, args.k)
    print("\ncharacters most like ... (cosine of centred embeddings)")
    for q, hits in before.items():
        print(f"  {q}: " + ", ".join(f"{n} {s:.2f}" for n, s in hits))

    # 4. Add a play incrementally: embed its own piece of the graph with the frozen encoder.
    figures: dict = {}
    if args.add:
        play = plays[args.add]
        t0 = time.perf_counter()
        new_ids = graph.add_play(play)
        sub_x, sub_ei, sub_w = graph.subgraph(new_ids)
        index.add(new_ids, embed(encoder, sub_x, sub_ei, sub_w, device) - centre)
        add_seconds = time.perf_counter() - t0
        # Check against a full recomputation over the grown graph.
        full = embed(encoder, graph.x(), *graph.edge_index(), device) - centre
        stored = np.stack([index.vector(i) for i in range(graph.num_nodes)])
        full_unit = torch.nn.functional.normalize(full, dim=1).numpy()
        drift = float(np.abs(stored - full_unit).max())
        print(
            f"\nadded {args.add}: {len(new_ids)} characters, {sum(1 for (u, v) in graph.edges if u in set(new_ids))} "
            f"edges, index {index.size} vectors, in {add_seconds * 1000:.0f} ms; largest gap to a "
            f"full recomputation over the grown graph: {drift:.1e}"
        )
        after = answer(graph, index, queries, args.k)
        changed = sum(before[q] != after[q] for q in queries)
        old = len(neighbours)
        now = [index.search(index.vector(i), args.k + 1)[1:] for i in range(old)]
        changed_all = sum(
            [j for j, _ in a] != [j for j, _ in b] for a, b in zip(neighbours, now, strict=True)
        )
        print(
            f"the {args.k} nearest neighbours changed for {changed_all} of the {old} characters "
            f"already indexed ({changed_all / old:.1%}): {args.add}'s characters moved in"
        )
        print(f"answers after the addition ({changed}/{len(queries)} changed):")
        for q, hits in after.items():
            new = [n for n, _ in hits if n.startswith(args.add + ":")]
            mark = f"   <- new: {', '.join(new)}" if new else ""
            print(f"  {q}: " + ", ".join(f"{n} {s:.2f}" for n, s in hits) + mark)
        cross = answer(graph, index, queries, 3, play=args.add)
        print(f"most like them in {args.add} (a query the index could not answer before):")
        for q, hits in cross.items():
            print(f"  {q}: " + ", ".join(f"{n} {s:.2f}" for n, s in hits))
        figures |= {
            "added_characters": len(new_ids),
            "incremental_max_gap": drift,
            "answers_changed": changed,
            "neighbour_lists_changed": changed_all,
            "answers_after": after,
            "cross_play_answers": cross,
        }

    # 5. Pictures: one play's graph, the embedding map.
    if args.picture_play in graph.plays:
        ids = [i for i, c in enumerate(graph.characters) if c.play == args.picture_play]
        import networkx as nx

        g = nx.Graph()
        g.add_nodes_from(ids)
        g.add_weighted_edges_from((u, v, wt) for (u, v), wt in graph.edges.items() if u in ids)
        chars = [graph.characters[i] for i in ids]
        figures["play_graph_png"] = str(
            plot_graph(
                g,
                folder / f"{args.picture_play}_graph.png",
                [role_class(c.person) for c in chars],
                title=f"{args.picture_play}: who speaks in the same scene (size: speeches)",
                sizes=[20 + 2 * c.speeches for c in chars],
                labels={i: graph.characters[i].name for i in ids},
                edge_widths=[0.3 + 0.6 * g.edges[e]["weight"] for e in g.edges],
                seed=args.seed,
            )
        )
    vectors = torch.as_tensor(np.stack([index.vector(i) for i in range(graph.num_nodes)]))
    points = project_2d(vectors, args.projection, seed=args.seed, neighbours=15)
    classes = [role_class(c.person) for c in graph.characters]
    top = set(np.argsort([-c.speeches for c in graph.characters])[:30].tolist())
    labels = [c.name if i in top else "" for i, c in enumerate(graph.characters)]
    figures["embedding_png"] = str(
        plot_scatter(
            points.numpy(),
            folder / f"embeddings_{args.projection}.png",
            labels=labels,
            groups=classes,
            title=f"{args.projection.upper()} of the character embeddings (colour: role class)",
        )
    )
    figures["loss_png"] = str(
        plot_curves(
            {"auto-encoder": losses},
            folder / "loss.png",
            title="graph auto-encoder",
            xlabel="step",
            ylabel="binary cross-entropy",
        )
    )
    writer.add_embedding(
        vectors,
        metadata=[
            f"{c.qualified} ({cls})" for c, cls in zip(graph.characters, classes, strict=True)
        ],
        tag="characters",
    )
    writer.close()
    figures |= {
        "plays": len(graph.plays),
        "characters": graph.num_nodes,
        "edges": len(graph.edges),
        "unlinked_rate": unlinked_total,
        "unlinked_rates": unlinked_rates,
        "gold_speech_accuracy": {k: r["speech_accuracy"] for k, r in gold_results.items()},
        "gold_tag_accuracy": {k: r["tag_accuracy"] for k, r in gold_results.items()},
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "same_play_neighbours": float(same_play),
        "answers_before": before,
        "role_classes": dict(Counter(classes)),
        "seconds": time.perf_counter() - start,
    }
    print(f"\npictures, TensorBoard logs and projector in {folder} ({figures['seconds']:.0f} s)")
    return figures


if __name__ == "__main__":
    raise SystemExit(run(main))
