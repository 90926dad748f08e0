"""A knowledge graph of Shakespeare's characters, with entity linking and vector search (sprint 17).

The plays of `llmlab.data.shakespeare.play_files()` open with a list of persons ("PERSONS
REPRESENTED." or "Dramatis Personae": full names and roles), mark their scenes ("Scene I.
Elsinore. ...") and name each speaker in a short, often abbreviated tag ("Ber.", "Hor.",
"FIRST LORD."). Turning that into a graph is an entity-linking task:

- `parse_persons(text)`: the list as `Person`s (names, role, group flag); the parsing rule is
  in `_entries`.
- `parse_scenes(text)`: the scenes, each the list of its speaker tags (one per speech).
- `link_speaker(tag, persons)`: which person a tag names, by the rule of `link_speaker`'s
  docstring (exact name, then name prefixes, then title prefixes; ties broken by a fixed order).
- `parse_play(path)`: a `Play`: persons, linked scenes and a linking report (unlinked rate).
- `CharacterGraph`: nodes = (play, person) pairs that speak; an edge joins two characters
  who speak in the same scene, weighted by the number of such scenes. `add_play` grows it
  one play at a time; `node_features` are computed from a character's own play only, so
  adding a play never changes an existing node's features.
- `CharacterIndex`: a faiss inner-product index over unit vectors (cosine similarity) with
  one id per node; `add` for new nodes only, `most_like(...)` answers "characters most like X"
  (optionally within one play).

The sprint-17 note `notes/07_knowledge_graph.md` documents the rules and measures them.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

from llmlab.errors import LLMLabError

# --- the persons list -----------------------------------------------------------------------------

_HEADER = re.compile(r"^\s*(persons\s+represented|dramatis\s+person(ae|æ))\b", re.IGNORECASE)
_SCENE = re.compile(r"^\s*scene\s+([ivxlc]+|\d+)\b", re.IGNORECASE)
_ACT = re.compile(r"^\s*act\s+([ivxlc]+|\d+|first|second|third|fourth|fifth)\b", re.IGNORECASE)
_LIST_END = re.compile(r"^\s*(the\s+)?scene\b|^\s*act\b", re.IGNORECASE)
_COUNT_WORDS = {"TWO", "THREE", "FOUR", "SEVERAL", "OTHER", "SOME", "DIVERS"}
_ARTICLES = {"A", "AN", "THE"}
_STOP = {"OF", "THE", "A", "AN", "AND", "TO", "DE", "LA", "LE", "DU", "IN", "HIS", "HER"}
_ORDINALS = {
    "FIRST", "SECOND", "THIRD", "FOURTH", "FIFTH", "SIXTH", "1", "2", "3", "4", "5",
    "I", "II", "III", "IV", "V",
}  # fmt: skip
_UNFINISHED = {"A", "AN", "THE", "OLD", "YOUNG", "OTHER"}  # "An Old" / "Man."
_COLLECTIVE = {"ALL", "BOTH", "OMNES", "SEVERAL", "SOME", "MANY", "OTHERS"}
_GROUP_NOUNS = {  # plural nouns that make a persons-list entry a group
    "LORD", "LADY", "GENTLEMAN", "OFFICER", "SOLDIER", "SAILOR", "MESSENGER", "ATTENDANT",
    "SERVANT", "CITIZEN", "SENATOR", "PLAYER", "KNIGHT", "MUSICIAN", "WATCHMAN", "MURDERER",
    "WITCH", "FAIRY", "SPIRIT", "CLOWN", "OUTLAW", "CARRIER", "TRAVELLER", "DRAWER", "PAGE",
    "CONSPIRATOR", "FORESTER", "HUNTSMAN", "GUARD", "HERALD", "TRIBUNE", "SHEPHERD", "PRIEST",
}  # fmt: skip


def tokens(text: str) -> list[str]:
    """Upper-case word tokens: apostrophes dropped ("Hamlet's" -> HAMLETS), other punctuation
    splits, and a crude singular ("Lords" -> LORD, "Gentlemen" -> GENTLEMAN) so that a tag
    in the singular finds a group listed in the plural."""
    words = re.sub(r"[^A-Z0-9]+", " ", text.upper().replace("'", "").replace("’", "")).split()
    out = []
    for w in words:
        if w.endswith("MEN") and len(w) > 4:
            w = w[:-3] + "MAN"
        elif w.endswith("S") and len(w) > 3 and not w.endswith(("SS", "US", "IS")):
            w = w[:-1]
        out.append(w)
    return out


@dataclass
class Person:
    """One entry of a play's persons list. `names` holds the name words that may be
    abbreviated (articles and count words removed); `role` is the description after the name."""

    name: str
    role: str = ""
    group: bool = False  # "Two Clowns", "Lords": a kind of person, not one individual

    @property
    def is_group(self) -> bool:
        """Listed as a kind of person: "Two Clowns", "Lords", "Servants to Cornwall"."""
        first = self.name.split()[0] if self.name.split() else ""
        plural = first.lower().endswith(("s", "men")) and tokens(first) != [first.upper()]
        counted = first.upper() in _COUNT_WORDS
        return self.group or counted or (plural and tokens(first)[0] in _GROUP_NOUNS)

    @property
    def name_tokens(self) -> list[str]:
        words = tokens(self.name)
        while words and (words[0] in _ARTICLES or words[0] in _COUNT_WORDS):
            words = words[1:]
        return words

    @property
    def role_tokens(self) -> list[str]:
        words = tokens(self.role)
        while words and (words[0] in _ARTICLES or words[0] in _COUNT_WORDS):
            words = words[1:]
        return words

    @property
    def title_tokens(self) -> list[str]:
        """The role's first three significant words before any "to": "Earl of Worcester" ->
        EARL WORCESTER, but "Wife to Hotspur" -> WIFE (a relation names someone else)."""
        words = self.role_tokens
        if "TO" in words:
            words = words[: words.index("TO")]
        return [w for w in words if w not in _STOP][:3]


def _persons_section(lines: list[str]) -> list[str]:
    """The raw lines between the persons header and the first SCENE/ACT line."""
    start = next((i for i, line in enumerate(lines[:200]) if _HEADER.match(line)), None)
    if start is None:
        return []
    section = []
    for line in lines[start + 1 :]:
        if _LIST_END.match(line):
            break
        section.append(line.rstrip())
    return section


def _entries(section: list[str]) -> list[str]:
    """Join continuation lines: a line that starts with a space or a lower-case letter, or
    follows a line ending in an article or an adjective ("An Old" / "Man."), continues the
    entry above it. Several sentences on one line ("A Porter. An Old Man.") are separate
    entries when the first has at least two words."""
    entries: list[str] = []
    for line in section:
        if not line.strip():
            continue
        unfinished = bool(entries) and entries[-1].split()[-1].upper() in _UNFINISHED
        if entries and (line[0].isspace() or line.strip()[0].islower() or unfinished):
            entries[-1] += " " + line.strip()
        else:
            entries.append(line.strip())
    out = []
    for entry in entries:
        parts = re.split(r"(?<=\w)\.\s+(?=[A-Z])", entry)
        merged = [parts[0]]
        for part in parts[1:]:
            if len(merged[-1].split()) >= 2:
                merged.append(part)
            else:  # "M. AEMIL. LEPIDUS": an initial, not a sentence
                merged[-1] += ". " + part
        out.extend(merged)
    return out


def _is_caps_name(chunk: str) -> bool:
    first = chunk.split()[0] if chunk.split() else ""
    return len(first) > 1 and first.isupper() and first.isalpha()


def parse_persons(text: str) -> list[Person]:
    """The persons list of a play. Rule per entry (after `_entries`):

    1. Split at commas (and semicolons). The first chunk is a name.
    2. The following chunks are more names while they start with an ALL-CAPS word
       ("MOULDY, SHADOW, WART, and BULLCALF, recruits"), or with "and" + a count word
       ("HECATE, and three Witches"), or, on a line of at least three
       chunks that are all one word ("Lords, Ladies, Officers, ... and other Attendants"),
       while they are one capitalised word; the remaining chunks are the role.
    3. "X and Y" inside a name chunk are two persons with the same role.
    4. Without a comma, a run of two or more spaces separates name and role
       ("SEXTUS POMPEIUS    Triumvir").
    A person is a group when the entry starts with a count word (Two, Several, ...) or came
    from a list of single words.
    """
    persons: list[Person] = []
    for entry in _entries(_persons_section(text.splitlines())):
        entry = entry.strip().rstrip(".:").strip()
        if not entry:
            continue
        word_list = False
        if "," not in entry and ";" not in entry and re.search(r"\S\s{2,}\S", entry):
            head, role = re.split(r"\s{2,}", entry, maxsplit=1)
            names = [head]
        else:
            chunks = [c.strip() for c in re.split(r"[,;]", entry) if c.strip()]
            if not chunks:
                continue
            plain = [re.sub(r"^((and|other)\s+)+", "", c, flags=re.IGNORECASE) for c in chunks]
            word_list = len(chunks) >= 3 and all(len(c.split()) == 1 for c in plain)
            names, i = [chunks[0]], 1
            while i < len(chunks):
                c = plain[i]
                counted = re.match(r"and\s+(\w+)", chunks[i], re.IGNORECASE)
                if counted and counted.group(1).upper() in _COUNT_WORDS:
                    # "HECATE, and three Witches"; "..., and other Attendants" -> Attendants
                    rest = chunks[i][counted.start(1) :]
                    names.append(re.sub(r"^other\s+", "", rest, flags=re.IGNORECASE))
                    i += 1
                elif _is_caps_name(c) or (word_list and c[:1].isupper()):
                    names.append(c)
                    i += 1
                else:
                    break
            role = ", ".join(chunks[i:])
        starts_with_count = entry.split()[0].upper() in _COUNT_WORDS
        for name in names:
            parts = re.split(r"\s+and\s+", name)
            if len(parts) == 1 or not all(p[:1].isupper() for p in parts):
                parts = [name]  # "Master-Gunner of Orleans and his Son": one entry
            for person in parts:
                person = person.strip(" .")
                if person and tokens(person):
                    persons.append(Person(person, role.strip(" ."), starts_with_count or word_list))
    return persons


# --- scenes and speakers --------------------------------------------------------------------------

_TAG = re.compile(
    r"^[A-Z][A-Za-z'’\-]*\.?(?:\s+(?:[A-Z][A-Za-z'’\-]*\.?|and|of|the|de|la|le|&))*\.?$"
)
_ROMAN = re.compile(r"^[IVXLC]+\.?$")


def _is_speaker_line(line: str, prev: str, nxt: str) -> bool:
    """A speaker tag stands alone after a blank line, before the speech, ends with a full
    stop (or is in capitals: A Midsummer Night's Dream writes "THESEUS"), and is short."""
    s = line.strip()
    if prev.strip() or not nxt.strip() or not s or len(s) > 40 or line[:1].isspace():
        return False
    if _SCENE.match(s) or _ACT.match(s) or _ROMAN.match(s) or not _TAG.match(s):
        return False
    return s.endswith(".") or s.isupper()


def parse_scenes(text: str) -> list[list[str]]:
    """The speaker tags of each scene, one per speech, in order. A scene starts at a
    "Scene N" line; an "ACT N" line also closes the scene before it; speeches before the
    first scene (a prologue or induction) form a scene of their own."""
    lines = text.splitlines()
    section_end = 0
    start = next((i for i, line in enumerate(lines[:200]) if _HEADER.match(line)), None)
    if start is not None:
        section_end = start + 1 + len(_persons_section(lines))
    scenes: list[list[str]] = [[]]
    for i in range(section_end, len(lines)):
        line = lines[i]
        if _SCENE.match(line) or _ACT.match(line):
            if scenes[-1]:
                scenes.append([])
            continue
        prev = lines[i - 1] if i > 0 else ""
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if _is_speaker_line(line, prev, nxt):
            scenes[-1].append(line.strip().rstrip(".").strip())
    return [s for s in scenes if s]


# --- entity linking -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """The result of linking one speaker tag: person indices (several for "Ros. and Guil."),
    and how: "exact", "name", "role", "several", or why not: "collective", "unknown"."""

    persons: tuple[int, ...]
    how: str


def _prefix_match(tag: list[str], words: list[str]) -> tuple[int, int] | None:
    """Match every tag token, in order, as a prefix of a distinct word (stop words skipped).
    Returns (index of the first matched word among the significant words, number of exact
    word matches), or None."""
    significant = [w for w in words if w not in _STOP]
    pos, first, exact = 0, None, 0
    for t in tag:
        while pos < len(significant) and not significant[pos].startswith(t):
            pos += 1
        if pos == len(significant):
            return None
        first = pos if first is None else first
        exact += significant[pos] == t
        pos += 1
    return (first or 0), exact


def _link_one(words: list[str], persons: list[Person]) -> Link:
    while len(words) > 1 and words[0] in _ORDINALS:
        words = words[1:]  # "First Lord" is one of the Lords; "I Player" one of the Players
    if words and words[0] == "ALL" and len(words) > 1:
        words = words[1:]  # "All Lords" -> the Lords
    if not words or (len(words) == 1 and words[0] in _COLLECTIVE):
        return Link((), "collective")
    exact = [i for i, p in enumerate(persons) if p.name_tokens == words]
    if exact:
        return Link((min(exact, key=lambda i: persons[i].is_group),), "exact")
    for how in ("name", "role"):
        ranked = []
        for i, p in enumerate(persons):
            m = _prefix_match(words, p.name_tokens if how == "name" else p.title_tokens)
            if m is not None:  # earliest word, most whole words, individuals, list order
                ranked.append(((m[0], -m[1], p.is_group, i), i))
        if ranked:
            return Link((min(ranked)[1],), how)
    return Link((), "unknown")


def link_speaker(tag: str, persons: list[Person]) -> Link:
    """Link a speaker tag to the persons list. The rule, in order:

    1. A tag naming several speakers ("Ros. and Guil.", "Alb. & Corn.") is split at
       "and"/"&"; each part is linked alone and the speech counts for each.
    2. Leading ordinals are dropped ("First Lord" -> Lord, "I Player" -> Player): numbered
       speakers belong to a listed group. "All", "Both" alone are collective (not linked).
    3. Exact: the tag's words equal a person's name words (after the crude singular of
       `tokens`, articles and count words dropped).
    4. Name: every tag word is the prefix of a name word, in order ("Ber." -> Bernardo,
       "Lady P." -> Lady Percy, "Mess." -> Messengers).
    5. Role: the same with the role's title words (`Person.title_tokens`: up to three, before
       any "to"): "King." -> Claudius, King of Denmark; "Wor." -> Thomas Percy, Earl of
       Worcester; but never Lady Percy, "Wife to Hotspur", for "Hot.".
    Among several candidates at one step, the winner is matched from its earliest word, then
    has the most whole-word matches, then is an individual rather than a group, then comes
    first in the list (lists open with the principal persons).
    """
    parts = [p for p in re.split(r"\s+(?:and|&)\s+", tag.strip(), flags=re.IGNORECASE) if p]
    links = [_link_one(tokens(p), persons) for p in parts]
    linked = tuple(dict.fromkeys(i for link in links for i in link.persons))
    if linked:
        return Link(linked, links[0].how if len(links) == 1 else "several")
    return Link((), links[0].how if len(links) == 1 else "unknown")


# --- plays ----------------------------------------------------------------------------------------


@dataclass
class Play:
    """A parsed, linked play. `scenes[s]` lists the person indices speaking in scene s (one
    entry per speech); `speeches[i]` counts person i's speeches; `links` maps each distinct
    tag to its `Link`."""

    key: str
    title: str
    persons: list[Person]
    scenes: list[list[int]]
    links: dict[str, Link]
    tag_counts: Counter

    @property
    def speeches(self) -> Counter:
        return Counter(i for scene in self.scenes for i in scene)

    @property
    def n_speeches(self) -> int:
        return sum(self.tag_counts.values())

    @property
    def unlinked_speeches(self) -> int:
        return sum(n for tag, n in self.tag_counts.items() if not self.links[tag].persons)

    @property
    def unlinked_rate(self) -> float:
        """Share of speeches whose tag names nobody in the persons list."""
        return self.unlinked_speeches / max(self.n_speeches, 1)

    def unlinked_tags(self) -> list[tuple[str, int, str]]:
        """(tag, speeches, reason), most frequent first."""
        out = [
            (t, n, self.links[t].how)
            for t, n in self.tag_counts.items()
            if not self.links[t].persons
        ]
        return sorted(out, key=lambda x: (-x[1], x[0]))


def play_key(path: Path | str) -> str:
    """'hamlet' from '.../hamlet_gut.txt'."""
    return Path(path).name.removesuffix(".txt").removesuffix("_gut")


def parse_play(path: Path | str) -> Play:
    """Parse and link one play file (see `parse_persons`, `parse_scenes`, `link_speaker`)."""
    path = Path(path)
    if not path.is_file():
        raise LLMLabError(f"no play at {path}: pass one of llmlab.data.shakespeare.play_files()")
    text = path.read_text(encoding="utf-8")
    persons = parse_persons(text)
    if not persons:
        raise LLMLabError(
            f"{path.name} has no PERSONS REPRESENTED / Dramatis Personae list: is it a play?"
        )
    tag_scenes = parse_scenes(text)
    counts = Counter(tag for scene in tag_scenes for tag in scene)
    links = {tag: link_speaker(tag, persons) for tag in counts}
    scenes = [[i for tag in scene for i in links[tag].persons] for scene in tag_scenes]
    title = next((line.strip() for line in text.splitlines() if line.strip()), path.name)
    return Play(play_key(path), title, persons, scenes, links, counts)


# --- the graph --------------------------------------------------------------------------------------

ROLE_CLASSES = {  # the first class whose words appear in a character's name or role wins
    "royalty": ["KING", "QUEEN", "PRINCE", "PRINCESS", "DAUPHIN", "EMPEROR", "EMPRESS"],
    "nobility": [
        "DUKE", "DUCHES", "EARL", "LORD", "LADY", "COUNT", "COUNTES", "SIR", "KNIGHT",
        "MARQUIS", "BARON", "NOBLEMAN", "GENTLEMAN", "GENTLEWOMAN", "COURTIER", "SENATOR",
        "TRIBUNE", "GOVERNOR", "TRIUMVIR",
    ],
    "military": [
        "SOLDIER", "OFFICER", "CAPTAIN", "GENERAL", "LIEUTENANT", "GUARD", "SERGEANT",
        "HERALD", "ANCIENT",
    ],
    "clergy": ["PRIEST", "FRIAR", "BISHOP", "CARDINAL", "ARCHBISHOP", "ABBES", "ABBOT", "VICAR"],
    "servants": [
        "SERVANT", "ATTENDANT", "PAGE", "STEWARD", "MESSENGER", "CLOWN", "FOOL", "JESTER",
        "BOY", "NURSE", "PORTER", "GAOLER", "MAN",
    ],
}  # fmt: skip
FEATURE_WORDS = sorted({w for words in ROLE_CLASSES.values() for w in words} | {
    "SON", "DAUGHTER", "WIFE", "HUSBAND", "BROTHER", "SISTER", "FATHER", "MOTHER", "FRIEND",
    "MERCHANT", "CITIZEN", "SHEPHERD", "SPIRIT", "GHOST", "WITCH", "FAIRY", "OLD", "YOUNG",
})  # fmt: skip
STRUCTURE_FEATURES = (
    "log_speeches",
    "speech_share",
    "scene_share",
    "degree_share",
    "weighted_degree_share",
    "group",
)


def role_class(person: Person) -> str:
    """A coarse class from the words of the name and role ("other" when none matches)."""
    words = set(person.name_tokens) | set(person.role_tokens)
    for cls, keys in ROLE_CLASSES.items():
        if words & set(keys):
            return cls
    return "other"


@dataclass
class Character:
    """A node: one person of one play who speaks."""

    play: str
    person: Person
    speeches: int
    scenes: int

    @property
    def name(self) -> str:
        return self.person.name.title() if self.person.name.isupper() else self.person.name

    @property
    def qualified(self) -> str:
        return f"{self.play}:{self.name}"


@dataclass
class CharacterGraph:
    """Characters of several plays and their co-scene edges (no edges between plays)."""

    characters: list[Character] = field(default_factory=list)
    edges: dict[tuple[int, int], int] = field(default_factory=dict)  # (u < v) -> shared scenes
    plays: dict[str, Play] = field(default_factory=dict)
    features: list[np.ndarray] = field(default_factory=list)

    @property
    def num_nodes(self) -> int:
        return len(self.characters)

    def add_play(self, play: Play) -> list[int]:
        """Add a play's speaking characters, their edges and features; return the new ids.
        Existing nodes, edges and features are untouched."""
        if play.key in self.plays:
            raise LLMLabError(f"play {play.key!r} is already in the graph")
        speeches = play.speeches
        scene_sets = [set(scene) for scene in play.scenes]
        local = sorted(speeches)  # person indices that speak
        offset = self.num_nodes
        node_of = {p: offset + k for k, p in enumerate(local)}
        for p in local:
            n_scenes = sum(p in s for s in scene_sets)
            self.characters.append(Character(play.key, play.persons[p], speeches[p], n_scenes))
        new_edges: Counter = Counter()
        for scene in scene_sets:
            for a, b in combinations(sorted(scene), 2):
                new_edges[(node_of[a], node_of[b])] += 1
        self.edges.update(new_edges)
        self.plays[play.key] = play
        self.features.extend(
            self._play_features(list(node_of.values()), new_edges, len(play.scenes))
        )
        return list(node_of.values())

    def _play_features(self, nodes: list[int], edges: Counter, n_scenes: int) -> list[np.ndarray]:
        """Per-node features from its own play only: structure (speech, scene and degree shares,
        a group flag) + which `FEATURE_WORDS` its name and role contain."""
        degree, weighted = Counter(), Counter()
        for (u, v), w in edges.items():
            degree[u] += 1
            degree[v] += 1
            weighted[u] += w
            weighted[v] += w
        total_speeches = sum(self.characters[n].speeches for n in nodes) or 1
        total_weight = sum(weighted.values()) or 1
        out = []
        for n in nodes:
            c = self.characters[n]
            words = set(c.person.name_tokens) | set(c.person.role_tokens)
            structure = [
                np.log1p(c.speeches) / 6.0,
                c.speeches / total_speeches * 10.0,
                c.scenes / max(n_scenes, 1),
                degree[n] / max(len(nodes) - 1, 1),
                weighted[n] / total_weight * 10.0,
                float(c.person.is_group),
            ]
            role = [float(w in words) for w in FEATURE_WORDS]
            out.append(np.asarray(structure + role, dtype=np.float32))
        return out

    def edge_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(edge_index in both directions (2, 2E), weights (2E,)) for a GNN."""
        if not self.edges:
            return torch.empty(2, 0, dtype=torch.long), torch.empty(0)
        pairs = torch.tensor(list(self.edges), dtype=torch.long).T
        weights = torch.tensor(list(self.edges.values()), dtype=torch.float32)
        return torch.cat([pairs, pairs.flip(0)], 1), torch.cat([weights, weights])

    def x(self) -> torch.Tensor:
        return torch.as_tensor(np.stack(self.features))

    def play_ids(self) -> torch.Tensor:
        """One integer per node: which play it belongs to (for within-play negatives)."""
        order = {k: i for i, k in enumerate(self.plays)}
        return torch.tensor([order[c.play] for c in self.characters])

    def find(self, query: str) -> int:
        """The node id of "Name" or "play:Name" (case-insensitive; "Nurse" also finds a
        character listed as "Nurse to Juliet"); a one-line error listing close names for an
        unknown or ambiguous query."""
        play, _, name = query.strip().rpartition(":")
        play, words = play.strip().lower(), tokens(name)
        pool = [i for i, c in enumerate(self.characters) if not play or c.play == play]
        hits = [
            i for i in pool
            if words in (self.characters[i].person.name_tokens, tokens(self.characters[i].person.name))
        ]  # fmt: skip
        if not hits:  # the query's words start the name ("Nurse" -> "Nurse to Juliet")
            hits = [i for i in pool if self.characters[i].person.name_tokens[: len(words)] == words]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            options = ", ".join(self.characters[i].qualified for i in hits[:6])
            raise LLMLabError(f"{query!r} names several characters: use one of {options}")
        names = [c.qualified for c in self.characters] + [c.name for c in self.characters]
        close = difflib.get_close_matches(query, names, n=4, cutoff=0.6)
        hint = f"; did you mean {', '.join(dict.fromkeys(close))}?" if close else ""
        raise LLMLabError(
            f"no character {query!r} in the {len(self.plays)} plays of the graph{hint} "
            "(write Name or play:Name, e.g. hamlet:Horatio)"
        )

    def subgraph(self, nodes: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, edge_index, weights) of the graph induced by `nodes`, renumbered 0..len-1
        (e.g. one play: a connected piece that a GNN can embed on its own)."""
        local = {n: k for k, n in enumerate(nodes)}
        pairs = [
            (local[u], local[v], w) for (u, v), w in self.edges.items() if u in local and v in local
        ]
        if pairs:
            t = torch.tensor(pairs, dtype=torch.float32)
            ei = t[:, :2].long().T
            ei, w = torch.cat([ei, ei.flip(0)], 1), torch.cat([t[:, 2], t[:, 2]])
        else:
            ei, w = torch.empty(2, 0, dtype=torch.long), torch.empty(0)
        return torch.as_tensor(np.stack([self.features[n] for n in nodes])), ei, w


# --- vector search ----------------------------------------------------------------------------------


class CharacterIndex:
    """A faiss `IndexFlatIP` over L2-normalised vectors (inner product = cosine similarity),
    wrapped in `IndexIDMap2` so each vector carries its node id. Adding nodes appends their
    vectors; nothing is rebuilt."""

    def __init__(self, dim: int) -> None:
        import faiss

        self.dim = dim
        self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: list[int], vectors: torch.Tensor | np.ndarray) -> None:
        vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        if vectors.ndim != 2 or vectors.shape != (len(ids), self.dim):
            raise LLMLabError(
                f"expected {len(ids)} vectors of width {self.dim}, got {vectors.shape}"
            )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.index.add_with_ids(vectors / np.maximum(norms, 1e-12), np.asarray(ids, dtype=np.int64))

    def vector(self, node: int) -> np.ndarray:
        return self.index.reconstruct(int(node))

    def search(
        self, vector: np.ndarray, k: int, allowed: list[int] | None = None
    ) -> list[tuple[int, float]]:
        """The k nearest stored vectors (id, cosine), optionally among `allowed` ids only."""
        import faiss

        query = np.ascontiguousarray(np.asarray(vector, dtype=np.float32).reshape(1, -1))
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        params = None
        if allowed is not None:
            params = faiss.SearchParameters(
                sel=faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
            )
        scores, ids = self.index.search(query, min(k, self.size), params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]


def most_like(
    graph: CharacterGraph,
    index: CharacterIndex,
    query: str,
    k: int = 5,
    play: str | None = None,
) -> list[tuple[str, float]]:
    """The k characters most like `query` (by cosine of their vectors), itself excluded,
    optionally only from `play`. Returns (play:Name, cosine) pairs, best first."""
    node = graph.find(query)
    allowed = None
    if play is not None:
        if play not in graph.plays:
            close = difflib.get_close_matches(play, list(graph.plays), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise LLMLabError(f"no play {play!r} in the graph{hint}")
        allowed = [i for i, c in enumerate(graph.characters) if c.play == play and i != node]
        if not allowed:
            return []
    hits = index.search(index.vector(node), k + 1, allowed)
    return [(graph.characters[i].qualified, s) for i, s in hits if i != node][:k]


__all__ = [
    "Character",
    "CharacterGraph",
    "CharacterIndex",
    "FEATURE_WORDS",
    "Link",
    "Person",
    "Play",
    "ROLE_CLASSES",
    "STRUCTURE_FEATURES",
    "link_speaker",
    "most_like",
    "parse_persons",
    "parse_play",
    "parse_scenes",
    "play_key",
    "role_class",
    "tokens",
]
