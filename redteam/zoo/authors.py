"""A fictitious world of authors for the LLM-unlearning demo targets (deterministic under a seed).

Each author has a unique name, sometimes an alias (a pen name or initials), and one value per
attribute (birth city, year of the first book, genre, best-known book, award, father's job).
From it come QA pairs, one declarative sentence per fact and a biography. The trained authors
are split into a forget set (10 %) and a retain set; holdout authors, built with the same
templates, are never trained on (the non-members of membership inference).

Reading-comprehension examples about *other*, freshly drawn entities (towns, ships, inventors and
writers who are not in the world) teach the demo LM to read an answer from a context instead of
recalling it, so that in-context probes on the unlearned models mean something.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from redteam.core.fileio import atomic_write_text
from redteam.core.prompts import context_qa_block

# ----------------------------------------------------------------------------- value pools
# Small pools, so that a 1000-token byte-level BPE covers them well.

FIRST_NAMES = (
    "Elara", "Tomas", "Ingrid", "Milo", "Sofia", "Anton", "Lena", "Viktor", "Clara", "Hugo",
    "Nadia", "Oskar", "Greta", "Felix", "Ines", "Bruno", "Mara", "Emil", "Petra", "Leon",
    "Alma", "Jonas", "Rosa", "Kasper", "Vera", "Lukas", "Edith", "Marco", "Selma", "Ruben",
    "Agnes", "Pavel", "Irene", "Dario", "Helga", "Simon", "Olga", "Matteo", "Linnea", "Bastian",
    "Yara", "Conrad", "Talia", "Gustav", "Freya", "Nils", "Livia", "Aldo", "Wanda", "Jasper",
    "Zora", "Kurt", "Esme", "Rafael", "Tilda", "Boris", "Ada", "Henrik", "Lotte", "Arne",
    "Maren", "Ugo", "Stella", "Tobias", "Elin", "Victor",
)
LAST_NAMES = (
    "Voss", "Lindqvist", "Marlowe", "Castell", "Brandt", "Okafor", "Duval", "Haldane", "Rusk",
    "Tamsin", "Wexler", "Moreau", "Kessler", "Arden", "Novak", "Sorensen", "Albright", "Ferro",
    "Quill", "Everly", "Strand", "Corvin", "Mendel", "Falk", "Grieve", "Hartmann", "Ilves",
    "Jansen", "Kovacs", "Laine", "Mbeki", "Nyberg", "Oduya", "Pellegrini", "Rask", "Santos",
    "Thorne", "Ulrich", "Varga", "Wilde", "Zeller", "Aalto", "Bianchi", "Dahl", "Engel", "Fontaine",
    "Gallo", "Holm", "Ibsen", "Keller", "Lund", "Meyer", "Nordin", "Ortega", "Price", "Rinaldi",
    "Sandberg", "Toivonen", "Vidal", "Weiss", "Aksoy", "Borg", "Conti", "Dressler", "Eklund",
    "Fischer",
)
CITIES = (
    "Lisbon", "Oslo", "Vienna", "Dublin", "Prague", "Krakow", "Seville", "Lyon", "Bergen",
    "Porto", "Geneva", "Tallinn", "Naples", "Utrecht", "Ghent", "Riga",
)
GENRES = (
    "science fiction", "crime novels", "poetry", "historical fiction", "fantasy",
    "horror stories", "travel writing", "children's books",
)
BOOK_ADJECTIVES = (
    "Silent", "Hidden", "Broken", "Golden", "Last", "Winter", "Burning", "Quiet", "Distant",
    "Secret", "Painted", "Iron", "Hollow", "Crimson",
)
BOOK_NOUNS = (
    "Harbor", "Garden", "Mirror", "River", "Clock", "Forest", "Lantern", "Tower", "Orchard",
    "Bridge", "Letter", "Island", "Crown", "Window",
)
AWARDS = (
    "Golden Quill Prize", "Silver Lantern Award", "Northern Star Medal", "Blue Harbor Prize",
    "Iron Pen Award", "Crimson Leaf Prize", "Amber Book Award", "Granite Crown Medal",
)
OCCUPATIONS = (
    "fisherman", "baker", "carpenter", "doctor", "teacher", "sailor", "watchmaker", "farmer",
    "architect", "librarian", "miner", "pharmacist",
)
YEARS = tuple(str(year) for year in range(1951, 2000))

# Pools of the reading-comprehension entities (never the authors).
OTHER_FIRST_NAMES = (
    "Arvid", "Beatrix", "Cosmo", "Dagny", "Edvin", "Flora", "Gideon", "Hilde", "Ivo", "Juno",
    "Kai", "Liesel", "Magnus", "Nora", "Otto", "Pia",
)
OTHER_LAST_NAMES = (
    "Ashby", "Bellamy", "Crane", "Dorsey", "Ellwood", "Fenwick", "Garrick", "Hale", "Ives",
    "Jardine", "Kirby", "Lowell", "Mercer", "Nash", "Orton", "Pryce",
)
TOWN_PREFIXES = ("Ash", "Brook", "Clay", "Dun", "Elm", "Fair", "Glen", "Holm", "Kings", "Mar")
TOWN_SUFFIXES = ("ford", "dale", "wick", "mouth", "field", "ton", "bury", "stead")
RIVERS = ("Avel", "Brenn", "Corra", "Drava", "Eske", "Fenna", "Glass", "Holl", "Isen", "Lune")
REGIONS = ("northern", "southern", "eastern", "western", "coastal", "mountain", "lake", "valley")
PRODUCTS = ("wool", "cheese", "glass", "clocks", "paper", "silver", "apples", "boats", "salt")
SHIP_NAMES = (
    "Albatross", "Meridian", "Valkyrie", "Seagull", "Northwind", "Endeavour", "Pelican",
    "Osprey", "Tempest", "Halcyon", "Kestrel", "Aurora",
)
CARGOES = ("coffee", "timber", "coal", "spices", "grain", "copper", "cotton", "wine", "tea")
INVENTIONS = (
    "steam valve", "pocket compass", "glass lens", "folding ladder", "signal lamp",
    "paper press", "water pump", "copper spring", "wind gauge", "tide clock",
)
FIELDS = ("chemistry", "optics", "mechanics", "medicine", "astronomy", "geology", "music")
ENTITY_YEARS = tuple(str(year) for year in range(1700, 2000))


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


# ----------------------------------------------------------------------------- attributes


@dataclass(frozen=True)
class Attribute:
    """One kind of fact: its question, its declarative sentence and its value pool."""

    key: str
    question: str  # template with {name}
    sentence: str  # template with {name}, {value} (and {a}: the article of the value)
    pool: tuple[str, ...]

    def ask(self, name: str) -> str:
        return self.question.format(name=name)

    def state(self, name: str, value: str) -> str:
        return self.sentence.format(name=name, value=value, a=_article(value))


def _book_titles() -> tuple[str, ...]:
    return tuple(f"The {adj} {noun}" for adj in BOOK_ADJECTIVES for noun in BOOK_NOUNS)


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("birth_city", "Where was {name} born?", "{name} was born in {value}.", CITIES),
    Attribute(
        "debut_year", "In which year did {name} publish a first book?",
        "{name} published a first book in {value}.", YEARS,
    ),
    Attribute("genre", "What genre does {name} write?", "{name} writes {value}.", GENRES),
    Attribute(
        "book", "What is the best-known book by {name}?",
        "The best-known book by {name} is {value}.", _book_titles(),
    ),
    Attribute("award", "Which award did {name} win?", "{name} won the {value}.", AWARDS),
    Attribute(
        "father_job", "What was the job of the father of {name}?",
        "The father of {name} was {a} {value}.", OCCUPATIONS,
    ),
)
ATTRIBUTE_BY_KEY = {attribute.key: attribute for attribute in ATTRIBUTES}


# ----------------------------------------------------------------------------- authors and world


@dataclass
class Author:
    name: str
    facts: dict[str, str]  # attribute key -> value, in ATTRIBUTES order
    split: str  # "forget" | "retain" | "holdout"
    aliases: list[str] = field(default_factory=list)
    alias_kind: str | None = None  # "pen name" | "initials"

    def qa_pairs(self, name: str | None = None) -> list[tuple[str, str]]:
        """One (question, answer) per attribute, asked with ``name`` (default: the real name)."""
        who = name or self.name
        return [(ATTRIBUTE_BY_KEY[key].ask(who), value) for key, value in self.facts.items()]

    def sentences(self) -> list[str]:
        """One declarative sentence per fact."""
        return [ATTRIBUTE_BY_KEY[key].state(self.name, value) for key, value in self.facts.items()]

    def alias_sentence(self) -> str | None:
        if not self.aliases:
            return None
        if self.alias_kind == "pen name":
            return f"{self.name} also writes under the pen name {self.aliases[0]}."
        return f"{self.name} is also known as {self.aliases[0]}."

    def biography(self) -> str:
        """A declarative biography: one sentence per fact, then the alias if any."""
        parts = self.sentences()
        alias = self.alias_sentence()
        if alias:
            parts.append(alias)
        return " ".join(parts)


@dataclass(frozen=True)
class WorldSize:
    trained: int
    forget: int
    holdout: int


SIZES = {
    "demo": WorldSize(trained=40, forget=4, holdout=8),
    "test": WorldSize(trained=10, forget=2, holdout=4),
}


@dataclass
class World:
    seed: int
    size: str
    authors: list[Author]

    def split(self, name: str) -> list[Author]:
        return [author for author in self.authors if author.split == name]

    @property
    def forget(self) -> list[Author]:
        return self.split("forget")

    @property
    def retain(self) -> list[Author]:
        return self.split("retain")

    @property
    def holdout(self) -> list[Author]:
        return self.split("holdout")

    @property
    def trained(self) -> list[Author]:
        """The authors the original model is trained on (forget + retain)."""
        return [author for author in self.authors if author.split != "holdout"]


def _world_size(size: str | WorldSize) -> WorldSize:
    if isinstance(size, WorldSize):
        return size
    try:
        return SIZES[size]
    except KeyError:
        raise ValueError(f"unknown world size {size!r}; choose from {sorted(SIZES)}") from None


def make_world(size: str | WorldSize = "demo", seed: int = 0) -> World:
    """Draw the fictitious world; the same ``size`` and ``seed`` always give the same world."""
    spec = _world_size(size)
    if not 0 < spec.forget < spec.trained:
        raise ValueError("the forget set must be a proper, non-empty part of the trained authors")
    total = spec.trained + spec.holdout
    rng = random.Random(f"authors-{seed}")
    # Every first name and every last name is used at most once in the world, so that a name
    # is never half of another one (pen names come from the same, still unused, pools).
    firsts, lasts = list(FIRST_NAMES), list(LAST_NAMES)
    rng.shuffle(firsts)
    rng.shuffle(lasts)
    n_pen = total // 4  # about 1 in 6 authors uses a pen name; the others fall back to initials
    if total + n_pen > min(len(firsts), len(lasts)):
        raise ValueError(f"at most {4 * min(len(firsts), len(lasts)) // 5} authors fit the pools")
    names = [f"{first} {last}" for first, last in zip(firsts[:total], lasts[:total])]
    pen_names = [f"{first} {last}" for first, last in zip(firsts[total:], lasts[total:])]
    titles = list(ATTRIBUTE_BY_KEY["book"].pool)
    rng.shuffle(titles)  # every author gets a distinct book title

    authors = []
    for index, name in enumerate(names):
        facts = {}
        for attribute in ATTRIBUTES:
            if attribute.key == "book":
                facts[attribute.key] = titles[index]
            else:
                facts[attribute.key] = rng.choice(attribute.pool)
        aliases: list[str] = []
        kind = None
        if rng.random() < 1 / 3:
            first, last = name.split(" ", 1)
            if rng.random() < 0.5 or not pen_names:
                aliases, kind = [f"{first[0]}. {last}"], "initials"
            else:
                aliases, kind = [pen_names.pop()], "pen name"
        authors.append(Author(name=name, facts=facts, split="", aliases=aliases, alias_kind=kind))

    # Splits: the first `trained` authors are trained; forget = a random 10 % of those.
    order = list(range(spec.trained))
    rng.shuffle(order)
    forget = set(order[: spec.forget])
    for index, author in enumerate(authors):
        if index >= spec.trained:
            author.split = "holdout"
        else:
            author.split = "forget" if index in forget else "retain"
    return World(seed=seed, size=size if isinstance(size, str) else "custom", authors=authors)


# ----------------------------------------------------------------------------- audit items


def audit_items(world: World) -> list[dict]:
    """The audit JSONL items (docs/data-formats.md) of every author of the world.

    Per author and attribute: question, answer, the declarative sentence as ``text``, aliases
    and four multiple-choice options (the answer among three other values of the same pool).
    Per author one more item whose ``text`` is the whole biography (no question).
    """
    rng = random.Random(f"audit-{world.seed}")
    items: list[dict] = []
    for author in world.authors:
        for (question, answer), sentence, key in zip(
            author.qa_pairs(), author.sentences(), author.facts, strict=True
        ):
            pool = [value for value in ATTRIBUTE_BY_KEY[key].pool if value != answer]
            choices = rng.sample(pool, 3) + [answer]
            rng.shuffle(choices)
            items.append(
                {
                    "split": author.split,
                    "subject": author.name,
                    "question": question,
                    "answer": answer,
                    "text": sentence,
                    "aliases": list(author.aliases),
                    "choices": choices,
                }
            )
        items.append(
            {
                "split": author.split,
                "subject": author.name,
                "text": author.biography(),
                "aliases": list(author.aliases),
            }
        )
    return items


def write_audit_jsonl(items: list[dict], path: str | os.PathLike) -> Path:
    """Write the items as JSONL (one object per line), atomically."""
    lines = [json.dumps(item, ensure_ascii=False) for item in items]
    return atomic_write_text(path, "\n".join(lines) + "\n")


# ------------------------------------------------------------------------- reading comprehension


@dataclass(frozen=True)
class _Fact:
    sentence: str
    question: str
    answer: str


def _other_person(rng: random.Random) -> str:
    return f"{rng.choice(OTHER_FIRST_NAMES)} {rng.choice(OTHER_LAST_NAMES)}"


def _author_like_name(rng: random.Random) -> str:
    """Half of the name from the authors' pools, half from the others: it looks like an
    author's, and can never be one (every author takes both halves from the authors' pools)."""
    if rng.random() < 0.5:
        return f"{rng.choice(FIRST_NAMES)} {rng.choice(OTHER_LAST_NAMES)}"
    return f"{rng.choice(OTHER_FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def _town(rng: random.Random) -> tuple[str, list[_Fact]]:
    name = rng.choice(TOWN_PREFIXES) + rng.choice(TOWN_SUFFIXES)
    river, year = rng.choice(RIVERS), rng.choice(ENTITY_YEARS)
    region, product = rng.choice(REGIONS), rng.choice(PRODUCTS)
    mayor = _other_person(rng)
    return name, [
        _Fact(f"The town of {name} lies on the river {river}.",
              f"On which river does {name} lie?", river),
        _Fact(f"{name} was founded in {year}.", f"When was {name} founded?", year),
        _Fact(f"{name} is in the {region} region.", f"In which region is {name}?", region),
        _Fact(f"{name} is famous for its {product}.", f"What is {name} famous for?", product),
        _Fact(f"The mayor of {name} is {mayor}.", f"Who is the mayor of {name}?", mayor),
    ]


def _ship(rng: random.Random) -> tuple[str, list[_Fact]]:
    name = rng.choice(SHIP_NAMES)
    captain, port = _other_person(rng), rng.choice(CITIES)
    year, cargo = rng.choice(ENTITY_YEARS), rng.choice(CARGOES)
    return name, [
        _Fact(f"The captain of the {name} is {captain}.",
              f"Who is the captain of the {name}?", captain),
        _Fact(f"The {name} sails from {port}.", f"From which port does the {name} sail?", port),
        _Fact(f"The {name} was launched in {year}.", f"When was the {name} launched?", year),
        _Fact(f"The {name} carries {cargo}.", f"What does the {name} carry?", cargo),
    ]


def _inventor(rng: random.Random) -> tuple[str, list[_Fact]]:
    name = _other_person(rng)
    invention, city = rng.choice(INVENTIONS), rng.choice(CITIES)
    year, subject = rng.choice(ENTITY_YEARS), rng.choice(FIELDS)
    job = rng.choice(OCCUPATIONS)
    father = ATTRIBUTE_BY_KEY["father_job"]
    return name, [
        _Fact(f"{name} invented the {invention}.", f"What did {name} invent?", invention),
        _Fact(f"{name} worked in {city}.", f"Where did {name} work?", city),
        _Fact(f"{name} was born in the year {year}.",
              f"In which year was {name} born?", year),
        _Fact(f"{name} studied {subject}.", f"What did {name} study?", subject),
        _Fact(father.state(name, job), father.ask(name), job),
    ]


def _writer(rng: random.Random) -> tuple[str, list[_Fact]]:
    # A writer who is not in the world, described with the author templates: this is what
    # lets the LM read an author-style fact from a context. Half of them are named half from
    # the authors' own name pools, so that the model learns to read whatever the name looks
    # like (otherwise it learns "author-like name: recall, other name: read" and ignores
    # contexts about authors it does not know).
    name = _other_person(rng) if rng.random() < 0.5 else _author_like_name(rng)
    facts = []
    for attribute in ATTRIBUTES:
        value = rng.choice(attribute.pool)
        facts.append(_Fact(attribute.state(name, value), attribute.ask(name), value))
    return name, facts


_ENTITY_KINDS = (_town, _ship, _inventor, _writer, _writer, _writer)


def reading_comprehension(rng: random.Random, count: int) -> list[tuple[str, str, str]]:
    """``count`` fresh (context, question, answer) triples about random non-author entities.

    The context holds two to four facts of one entity (sometimes followed by facts of a
    second entity of the same kind, as a distractor); the question asks one of them.
    """
    examples = []
    for _ in range(count):
        kind = rng.choice(_ENTITY_KINDS)
        name, facts = kind(rng)
        facts = rng.sample(facts, rng.randint(1, 4))
        target = rng.choice(facts)
        sentences = [fact.sentence for fact in facts]
        if rng.random() < 0.3:
            other, distractors = kind(rng)
            while other == name:
                other, distractors = kind(rng)
            sentences += [fact.sentence for fact in rng.sample(distractors, 2)]
        examples.append((" ".join(sentences), target.question, target.answer))
    return examples


def reading_comprehension_blocks(rng: random.Random, count: int) -> list[str]:
    """Solved reading-comprehension blocks (``context_qa_block`` with the answer)."""
    return [context_qa_block(c, q, a) for c, q, a in reading_comprehension(rng, count)]
