"""The offline miniature's synthetic world and all its text data (DESIGN.md "The miniature").

A seeded world of people, cities, countries, companies and universities is rendered into
- `corpora/pretrain`    the Dolma role: a mixture, like Dolma, mostly short encyclopedia snippets stating every
                        fact many times, plus abstracts and web text of the two kinds below (other documents);
- `corpora/pubmed`      the PubMed role: technical abstracts about new, rarely repeated invented entities;
- `corpora/c4`          the C4 role: casual web text about the familiar world entities;
- `corpora/first_batch` the first documents of the pretraining corpus (the entropy-measurement sample);
- `knowledge/`          fictional knowledge in the exact schema of the paper's data, about new people;
- `tasks.json`          six multiple-choice tasks on world facts (stand-ins for the paper's downstream tasks);
- `world.json`          config, counts, fact-mention statistics and the fictional names.

World and fictional names are drawn from one syllable pool (consonants b d g k m p r t, coda n), so a fictional
name is a new combination of familiar pieces, as the paper's invented names are; no fictional name contains or
is contained in a world name, and none occurs in any corpus. PubMed entities use their own consonant clusters.
The continual corpora are held-out documents of the same generators as the pretraining mixture: their style
is familiar, their PubMed entities mostly new. Everything comes from one `random.Random(seed)`.
"""
from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..errors import UserError
from .words import (ATTRIBUTES, COMPOSITIONS, RELATIONS, OCCUPATIONS, HOBBIES, INDUSTRIES, TRAITS, CITY_FEATURES,
                    FIELDS, COMPANY_SUFFIXES, UNIVERSITY_SUFFIXES, CONNECTIVES, PERSON_TEMPLATES,
                    AUGMENTED_TEMPLATES, COMPOSED_TEMPLATES, PERSON_FILLERS, WORLD_TEMPLATES, WORLD_FILLERS,
                    C4_TEMPLATES, C4_FILLERS, C4_ENTITY_FIELDS, DAYS, OPINIONS, PUBMED_SENTENCES, CELL_TYPES,
                    PUBMED_KINDS, VOWELS, WORLD_ONSETS, WORLD_CODAS, PUBMED_ONSETS, PUBMED_SUFFIX, GENE_LETTERS)

GENERATOR_VERSION = 2  # bump when the generated text changes, so cached worlds are regenerated


PERSON_DOC_FACTS = (2, 5)      # facts per pretraining biography
AUGMENT_PROB = 0.15            # a fact sentence also states a world fact about its value
COMPOSED_PROB = 0.4            # a biography carries one two-hop sentence
PRONOUN_PROB = 0.4             # a later sentence refers by pronoun instead of the full name
CONNECTIVE_PROB = 0.15
PUBMED_REUSE_PROB = 0.2        # a PubMed entity slot reuses an earlier entity instead of a new one


@dataclass
class WorldConfig:
    """Sizes of the generated world and its corpora (defaults: the "default" preset)."""
    seed: int = 0
    num_people: int = 400
    num_cities: int = 24
    num_countries: int = 6
    num_companies: int = 16
    num_universities: int = 10
    num_occupations: int = 16
    num_hobbies: int = 16
    pretrain_docs: int = 60000
    continual_docs: int = 12000          # per continual corpus (pubmed, c4)
    num_paraphrase: int = 20             # fictional items injected in every version
    num_once: int = 20                   # fictional items injected once
    num_versions: int = 10               # original + paraphrases
    injection_groups: int = 10           # the once items are split into this many groups
    task_questions: int = 120            # per task
    task_choices: int = 4
    first_batch_docs: int = 256          # the entropy-measurement sample
    world_doc_fraction: float = 0.1      # pretraining docs about cities/companies/universities
    pubmed_fraction: float = 0.1         # pretraining docs in the PubMed-role style (Dolma holds papers too)
    c4_fraction: float = 0.1             # pretraining docs in the C4-role style (the rest: people)

    def validate(self) -> None:
        positive = ("num_people", "num_cities", "num_countries", "num_companies", "num_universities",
                    "num_occupations", "num_hobbies", "pretrain_docs", "continual_docs", "injection_groups",
                    "task_questions", "first_batch_docs")
        for name in positive:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise UserError(f"world.{name} must be a positive integer; got {getattr(self, name)!r}.")
        for name in ("num_paraphrase", "num_once"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise UserError(f"world.{name} must be a non-negative integer; got {getattr(self, name)!r}.")
        if self.num_paraphrase + self.num_once < 1:
            raise UserError("world.num_paraphrase + world.num_once must be at least 1; raise one of them.")
        if self.task_choices < 2:
            raise UserError(f"world.task_choices must be at least 2; got {self.task_choices}.")
        for name, limit in (("num_occupations", len(OCCUPATIONS)), ("num_hobbies", len(HOBBIES))):
            if getattr(self, name) > limit:
                raise UserError(f"world.{name} can be at most {limit} (the built-in word list); "
                                f"got {getattr(self, name)}.")
        for name in ("num_countries", "num_cities", "num_companies", "num_universities", "num_occupations"):
            if getattr(self, name) < self.task_choices:
                raise UserError(f"world.{name} must be at least world.task_choices ({self.task_choices}) so that "
                                f"tasks have distinct distractors; got {getattr(self, name)}.")
        if self.num_cities < self.num_countries:
            raise UserError(f"world.num_cities ({self.num_cities}) must be at least world.num_countries "
                            f"({self.num_countries}) so that every country has a city.")
        if self.num_versions < 2:
            raise UserError(f"world.num_versions must be at least 2 (original + paraphrases); got {self.num_versions}.")
        if self.num_once % self.injection_groups:
            raise UserError(f"world.num_once ({self.num_once}) must be divisible by world.injection_groups "
                            f"({self.injection_groups}).")
        fractions = ("world_doc_fraction", "pubmed_fraction", "c4_fraction")
        for name in fractions:
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UserError(f"world.{name} must be in [0, 1); got {getattr(self, name)}.")
        if sum(getattr(self, name) for name in fractions) >= 1.0:
            raise UserError("world.world_doc_fraction + pubmed_fraction + c4_fraction must be below 1 "
                            "(the rest of the pretraining documents are biographies); lower them.")


@dataclass
class Person:
    name: str
    pronoun: str              # "he" | "she"
    trait: str                # used by filler sentences only
    facts: dict[str, str]     # ATTRIBUTES -> value


@dataclass
class World:
    config: WorldConfig
    countries: list[str]
    city_country: dict[str, str]
    company_hq: dict[str, str]
    company_industry: dict[str, str]
    university_city: dict[str, str]
    occupations: list[str]
    hobbies: list[str]
    people: list[Person]
    fictional: list[Person] = field(default_factory=list)     # paraphrase set first, then the once set
    corpora: dict[str, dict[str, list]] = field(default_factory=dict)   # role -> columns
    knowledge: dict[str, list[dict]] = field(default_factory=dict)      # "paraphrase" / "once" -> items
    tasks: list[dict] = field(default_factory=list)
    person_mentions: dict[tuple[str, str], int] = field(default_factory=dict)   # (name, attribute) -> docs
    world_mentions: dict[tuple[str, str], int] = field(default_factory=dict)    # (entity, relation) -> docs

    def values(self, attribute: str) -> list[str]:
        """The vocabulary an attribute draws from."""
        return {"birth_city": list(self.city_country), "employer": list(self.company_hq),
                "university": list(self.university_city), "occupation": self.occupations,
                "hobby": self.hobbies}[attribute]

    def composed(self, person: Person, composition: str) -> str:
        """The two-hop fact `composition` (one of COMPOSITIONS) of a person."""
        f = person.facts
        return {"birth_country": lambda: self.city_country[f["birth_city"]],
                "employer_hq": lambda: self.company_hq[f["employer"]],
                "university_city": lambda: self.university_city[f["university"]],
                "employer_industry": lambda: self.company_industry[f["employer"]],
                "university_country": lambda: self.city_country[self.university_city[f["university"]]],
                }[composition]()

    def summary(self) -> dict:
        """The content of world.json."""
        def stats(counts: dict, keys: list) -> dict:
            values = [counts.get(k, 0) for k in keys]
            return {"facts": len(values), "mean": round(sum(values) / max(1, len(values)), 2),
                    "min": min(values, default=0), "max": max(values, default=0)}

        person_keys = [(p.name, a) for p in self.people for a in ATTRIBUTES]
        world_keys = ([(c, "city_country") for c in self.city_country] + [(c, "company_hq") for c in self.company_hq]
                      + [(c, "company_industry") for c in self.company_hq]
                      + [(u, "university_city") for u in self.university_city])
        corpora = {}
        for role, columns in self.corpora.items():
            words = [len(t.split()) for t in columns["text"]]
            corpora[role] = {"docs": len(words), "words": sum(words),
                             "mean_words_per_doc": round(sum(words) / max(1, len(words)), 1),
                             "min_words_per_doc": min(words, default=0), "max_words_per_doc": max(words, default=0)}
            if "entities" in columns:
                counts = Counter(e for ents in columns["entities"] for e in ents)
                corpora[role]["distinct_entities"] = len(counts)
                corpora[role]["mean_docs_per_entity"] = round(sum(counts.values()) / max(1, len(counts)), 2)
        return {
            "generator_version": GENERATOR_VERSION,
            "config": asdict(self.config),
            "counts": {"people": len(self.people), "countries": len(self.countries),
                       "cities": len(self.city_country), "companies": len(self.company_hq),
                       "universities": len(self.university_city), "occupations": len(self.occupations),
                       "hobbies": len(self.hobbies), "fictional_people": len(self.fictional),
                       "knowledge_items": {k: len(v) for k, v in self.knowledge.items()},
                       "task_questions": {t["name"]: len(t["questions"]) for t in self.tasks}},
            "mentions": {"person_fact": stats(self.person_mentions, person_keys),
                         "person_fact_by_attribute": {
                             a: stats(self.person_mentions, [k for k in person_keys if k[1] == a]) for a in ATTRIBUTES},
                         "world_fact": stats(self.world_mentions, world_keys),
                         "world_fact_by_relation": {r: stats(self.world_mentions, [k for k in world_keys if k[1] == r])
                                                    for r in RELATIONS}},
            "corpora": corpora,
            "people": [p.name for p in self.people],
            "fictional_names": [p.name for p in self.fictional],
        }


# ---------------------------------------------------------------------------------------------- names
def _template_vocabulary() -> str:
    """Every lowercase word of every template and word list, space-joined (a name must not hide inside one)."""
    texts = [str(x) for x in (OCCUPATIONS, HOBBIES, INDUSTRIES, TRAITS, CITY_FEATURES, FIELDS, COMPANY_SUFFIXES,
                               UNIVERSITY_SUFFIXES, CONNECTIVES, PERSON_TEMPLATES, AUGMENTED_TEMPLATES,
                               COMPOSED_TEMPLATES, PERSON_FILLERS, WORLD_TEMPLATES, WORLD_FILLERS, C4_TEMPLATES,
                               C4_FILLERS, DAYS, OPINIONS, PUBMED_SENTENCES, CELL_TYPES, PUBMED_SUFFIX)]
    words = sorted(set(re.findall(r"[a-z]+", " ".join(texts).lower())) | {"he", "she", "him", "her", "his"})
    return " ".join(words)


class _NamePool:
    """Draws capitalized pronounceable names that are unique, never a substring of one another, and never a
    substring of any word in `forbidden` (a space-joined lowercase word list)."""

    def __init__(self, rng: random.Random, onsets, codas, forbidden: str, taken=()):
        self.rng, self.onsets, self.codas, self.forbidden = rng, onsets, codas, forbidden
        self.taken: list[str] = list(taken)   # also rejected in both directions of containment

    def draw(self, syllables=(2, 3)) -> str:
        for _ in range(100_000):
            n = self.rng.randint(*syllables)
            low = "".join(self.rng.choice(self.onsets) + self.rng.choice(VOWELS) + self.rng.choice(self.codas)
                          for _ in range(n))
            if low in self.forbidden or any(low in t or t in low for t in self.taken):
                continue
            self.taken.append(low)
            return low.capitalize()
        raise UserError(f"the generated names ran out after {len(self.taken)} names (syllables {syllables}); lower "
                        "world.num_people, num_cities, num_companies or num_universities.")


class _PubmedEntities:
    """New technical entity names (compounds, genes, proteins, diseases) from their own syllable pool; each slot
    reuses an earlier entity with probability PUBMED_REUSE_PROB, so most entities occur once or twice."""

    def __init__(self, rng: random.Random, world_names: list[str]):
        self.rng = rng
        self.world = {n.lower() for n in world_names}
        self.world_lengths = sorted({len(n) for n in self.world})
        self.used: dict[str, list[str]] = {k: [] for k in PUBMED_KINDS}
        self.seen: set[str] = set()

    def _contains_world_name(self, low: str) -> bool:
        return any(low[i:i + n] in self.world for n in self.world_lengths for i in range(len(low) - n + 1))

    def _new(self, kind: str) -> str:
        rng = self.rng
        for _ in range(100_000):
            if kind == "gene":
                name = "".join(rng.choice(GENE_LETTERS) for _ in range(rng.randint(3, 4))) + str(rng.randint(1, 9))
            else:
                stem = "".join(rng.choice(PUBMED_ONSETS) + rng.choice(VOWELS) for _ in range(rng.randint(2, 3)))
                name = stem + rng.choice(PUBMED_SUFFIX[kind])
                name = name if kind == "compound" else name.capitalize()
            if name.lower() in self.seen or self._contains_world_name(name.lower()):
                continue
            self.seen.add(name.lower())
            self.used[kind].append(name)
            return name
        raise UserError(f"the PubMed-role entity names ran out after {len(self.seen)}; lower world.continual_docs "
                        "or world.pretrain_docs.")

    def pick(self, kind: str) -> str:
        if self.used[kind] and self.rng.random() < PUBMED_REUSE_PROB:
            return self.rng.choice(self.used[kind])
        return self._new(kind)


# ---------------------------------------------------------------------------------------------- rendering
def _refs(person: Person, by_name: bool) -> dict[str, str]:
    if by_name:
        return {"s": person.name, "o": person.name, "p": person.name + "'s"}
    he = person.pronoun == "he"
    return {"s": "he" if he else "she", "o": "him" if he else "her", "p": "his" if he else "her"}


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _prefix(template: str, **fields) -> str:
    """The cloze prompt of an end-valued template: the rendered text before the value."""
    return _cap(template[:-len("{v}.")].format(**fields)).rstrip()


def _end_valued(templates) -> list[str]:
    return [t for t in templates if t.endswith("{v}.")]


def _join(rng: random.Random, person: Person, statements: list[tuple[str, dict]], by_name_first: bool = True,
          connectives: bool = True) -> str:
    """Render (template, fields) statements about a person in the given order: the first names the person,
    later ones use the name or a pronoun; some get a connective."""
    out = []
    for i, (template, fields) in enumerate(statements):
        by_name = (i == 0 and by_name_first) or rng.random() >= PRONOUN_PROB
        text = template.format(**_refs(person, by_name), **fields)
        if i > 0 and connectives and template[0] == "{" and rng.random() < CONNECTIVE_PROB:
            text = f"{rng.choice(CONNECTIVES)}, {text}"
        out.append(_cap(text))
    return " ".join(out)


# ---------------------------------------------------------------------------------------------- world
def _build_world(cfg: WorldConfig, rng: random.Random) -> World:
    pool = _NamePool(rng, WORLD_ONSETS, WORLD_CODAS, _template_vocabulary())
    stems = [pool.draw((2, 2)) for _ in range(cfg.num_countries)]
    countries = [stem + ("a" if stem.endswith("i") else "ia") for stem in stems]
    cities = [pool.draw((2, 3)) for _ in range(cfg.num_cities)]
    # every country gets at least one city
    owners = countries + [rng.choice(countries) for _ in range(cfg.num_cities - cfg.num_countries)]
    rng.shuffle(owners)
    city_country = dict(zip(cities, owners))
    companies = [f"{pool.draw((2, 3))} {rng.choice(COMPANY_SUFFIXES)}" for _ in range(cfg.num_companies)]
    company_hq = {c: rng.choice(cities) for c in companies}
    industries = (rng.sample(INDUSTRIES, cfg.num_companies) if cfg.num_companies <= len(INDUSTRIES)
                  else [rng.choice(INDUSTRIES) for _ in companies])
    company_industry = dict(zip(companies, industries))
    universities = [f"{pool.draw((2, 3))} {rng.choice(UNIVERSITY_SUFFIXES)}" for _ in range(cfg.num_universities)]
    university_city = {u: rng.choice(cities) for u in universities}
    occupations = rng.sample(OCCUPATIONS, cfg.num_occupations)
    hobbies = rng.sample(HOBBIES, cfg.num_hobbies)

    firsts = [pool.draw((2, 2)) for _ in range(max(4, cfg.num_people // 8))]
    lasts = [pool.draw((2, 3)) for _ in range(max(4, cfg.num_people // 5))]
    if len(firsts) * len(lasts) < 2 * cfg.num_people:
        lasts += [pool.draw((2, 3)) for _ in range(2 * cfg.num_people // len(firsts) + 1)]
    world = World(cfg, countries, city_country, company_hq, company_industry, university_city,
                  occupations, hobbies, people=[])
    names: set[str] = set()
    while len(world.people) < cfg.num_people:
        name = f"{rng.choice(firsts)} {rng.choice(lasts)}"
        if name not in names:
            names.add(name)
            world.people.append(_random_person(rng, world, name))
    return world


def _random_person(rng: random.Random, world: World, name: str) -> Person:
    return Person(name, rng.choice(("he", "she")), rng.choice(TRAITS),
                  {a: rng.choice(world.values(a)) for a in ATTRIBUTES})


def _world_fields(world: World, attribute: str, value: str) -> dict:
    """Extra fields the augmented template of an attribute needs."""
    if attribute == "birth_city":
        return {"country": world.city_country[value]}
    if attribute == "employer":
        return {"hq": world.company_hq[value]}
    if attribute == "university":
        return {"ucity": world.university_city[value]}
    return {}


def _count(counter: dict, key) -> None:
    counter[key] = counter.get(key, 0) + 1


def _person_doc(rng: random.Random, world: World, person: Person) -> str:
    statements = []
    for a in rng.sample(ATTRIBUTES, rng.randint(*PERSON_DOC_FACTS)):
        value = person.facts[a]
        if a in AUGMENTED_TEMPLATES and rng.random() < AUGMENT_PROB:
            template, extra = AUGMENTED_TEMPLATES[a], _world_fields(world, a, value)
            relation, entity = {"birth_city": ("city_country", value), "employer": ("company_hq", value),
                                "university": ("university_city", value)}[a]
            _count(world.world_mentions, (entity, relation))
        else:
            template, extra = rng.choice(PERSON_TEMPLATES[a]), {}
        _count(world.person_mentions, (person.name, a))
        statements.append((template, {"v": value, **extra}))
    if rng.random() < COMPOSED_PROB:
        comp = rng.choice(COMPOSITIONS)
        statements.append((rng.choice(COMPOSED_TEMPLATES[comp]), {"v": world.composed(person, comp)}))
    rng.shuffle(statements)
    for filler in rng.sample(PERSON_FILLERS, rng.randint(1, 3)):
        statements.insert(rng.randint(1, len(statements)), (filler, {"trait": person.trait}))
    return _join(rng, person, statements)


def _entity_doc(rng: random.Random, world: World, kind: str, entity: str) -> str:
    """A snippet about a city, company or university: its own facts, facts of related entities, fillers."""
    facts = []   # (relation, subject, value)
    if kind == "city":
        facts.append(("city_country", entity, world.city_country[entity]))
        facts += [("company_hq", c, entity) for c, hq in world.company_hq.items() if hq == entity]
        facts += [("university_city", u, entity) for u, city in world.university_city.items() if city == entity]
    elif kind == "company":
        facts += [("company_hq", entity, world.company_hq[entity]),
                  ("company_industry", entity, world.company_industry[entity])]
    else:
        facts.append(("university_city", entity, world.university_city[entity]))
        city = world.university_city[entity]
        facts.append(("city_country", city, world.city_country[city]))
    main, others = facts[:1 if kind != "company" else 2], facts[1 if kind != "company" else 2:]
    facts = main + rng.sample(others, min(len(others), rng.randint(0, 3)))
    sentences = []
    for relation, subject, value in facts:
        _count(world.world_mentions, (subject, relation))
        sentences.append(_cap(rng.choice(WORLD_TEMPLATES[relation]).format(c=subject, v=value)))
    rng.shuffle(sentences)
    fields = {"c": entity, "feature": rng.choice(CITY_FEATURES), "field": rng.choice(FIELDS),
              "n": rng.randint(2, 900), "year": rng.randint(1820, 1990)}
    for filler in rng.sample(WORLD_FILLERS[kind], rng.randint(2, 3)):
        sentences.insert(rng.randint(1, len(sentences)), filler.format(**fields))
    return " ".join(sentences)


def _encyclopedia(rng: random.Random, world: World, n_people: int, n_world: int, progress: bool) -> list[str]:
    """Biographies (n_people) and snippets about cities, companies, universities (n_world), shuffled."""
    entities = ([("city", c) for c in world.city_country] + [("company", c) for c in world.company_hq]
                + [("university", u) for u in world.university_city])
    # balanced subjects: every person (entity) equally often, in a shuffled order
    subjects = [("person", world.people[i % len(world.people)]) for i in range(n_people)]
    subjects += [entities[i % len(entities)] for i in range(n_world)]
    rng.shuffle(subjects)
    docs = []
    for kind, subject in tqdm(subjects, desc="encyclopedia", disable=not progress):
        docs.append(_person_doc(rng, world, subject) if kind == "person" else _entity_doc(rng, world, kind, subject))
    return docs


def _pubmed_corpus(rng: random.Random, world: World, n: int, progress: bool) -> dict[str, list]:
    entities = _PubmedEntities(rng, sorted(_world_words(world)))
    texts, ents = [], []
    for _ in tqdm(range(n), desc="pubmed corpus", disable=not progress):
        chosen = {k: entities.pick(k) for k in PUBMED_KINDS}
        fields = dict(chosen, cell=rng.choice(CELL_TYPES), n=rng.randint(12, 480), pct=rng.randint(12, 78),
                      pval=rng.choice(("0.05", "0.01", "0.001")), dose=rng.choice((1, 2, 5, 10, 20, 50)),
                      days=rng.choice((7, 14, 21, 28)))
        parts = []
        for section, (lo, hi) in (("Background", (1, 2)), ("Methods", (1, 2)), ("Results", (1, 3)),
                                  ("Conclusions", (1, 1))):
            sentences = rng.sample(PUBMED_SENTENCES[section], rng.randint(lo, hi))
            parts.append(f"{section}: " + " ".join(_cap(s.format(**fields)) for s in sentences))
        text = " ".join(parts)
        texts.append(text)
        ents.append([chosen[k] for k in PUBMED_KINDS if chosen[k] in text])
    return {"text": texts, "entities": ents}


def _c4_corpus(rng: random.Random, world: World, n: int, progress: bool) -> dict[str, list]:
    kinds, weights = ("person", "city", "company", "university"), (4, 2, 2, 1)
    texts, ents = [], []
    for _ in tqdm(range(n), desc="c4 corpus", disable=not progress):
        style = rng.choice(tuple(C4_TEMPLATES))
        sentences, entities = [], []
        for _ in range(rng.randint(2, 4)):
            kind = rng.choices(kinds, weights)[0]
            fields = {"day": rng.choice(DAYS), "opinion": rng.choice(OPINIONS), "n": rng.randint(2, 95)}
            if kind == "person":
                p = rng.choice(world.people)
                fields.update(p.facts, name=p.name, **_refs(p, by_name=False))
            elif kind == "city":
                city = rng.choice(list(world.city_country))
                fields.update(city=city, country=world.city_country[city])
            elif kind == "company":
                c = rng.choice(list(world.company_hq))
                fields.update(company=c, hq=world.company_hq[c], industry=world.company_industry[c])
            else:
                u = rng.choice(list(world.university_city))
                fields.update(university=u, ucity=world.university_city[u])
            template = rng.choice(C4_TEMPLATES[style][kind])
            sentences.append(_cap(template.format(**fields)))
            entities += [fields[k] for k in C4_ENTITY_FIELDS if "{" + k + "}" in template]
        for _ in range(rng.randint(1, 2)):
            sentences.insert(rng.randint(1, len(sentences)), rng.choice(C4_FILLERS[style]))
        texts.append(" ".join(sentences))
        ents.append(list(dict.fromkeys(entities)))
    return {"text": texts, "entities": ents}


# ---------------------------------------------------------------------------------------------- knowledge
def _knowledge_item(rng: random.Random, world: World, person: Person, num_versions: int) -> dict:
    name_refs = _refs(person, by_name=True)
    chosen = {a: rng.choice(_end_valued(PERSON_TEMPLATES[a])) for a in ATTRIBUTES}
    mem_input = [_prefix(chosen[a], **name_refs) for a in ATTRIBUTES]
    targets = [person.facts[a] for a in ATTRIBUTES]
    sentences = [f"{prompt} {value}." for prompt, value in zip(mem_input, targets)]
    rng.shuffle(sentences)
    fillers = rng.sample(PERSON_FILLERS, rng.randint(0, 2))
    for filler in fillers:
        sentences.insert(rng.randint(1, len(sentences)),
                         _cap(filler.format(trait=person.trait, **_refs(person, rng.random() >= PRONOUN_PROB))))
    train_context = " ".join(sentences)

    gen_input = []
    for a in ATTRIBUTES:
        options = [p for t in _end_valued(PERSON_TEMPLATES[a]) if t != chosen[a]
                   if (p := _prefix(t, **name_refs)) not in train_context]
        if not options:
            raise RuntimeError(f"no paraphrased prompt for {a} differs from the training context")
        gen_input.append(rng.choice(options))
    hard_gen_input = [_prefix(rng.choice(_end_valued(COMPOSED_TEMPLATES[c])), **name_refs) for c in COMPOSITIONS]
    hard_gen_target = [world.composed(person, c) for c in COMPOSITIONS]

    paraphrases, seen = [], {train_context}
    while len(paraphrases) < num_versions - 1:
        statements = [(rng.choice(PERSON_TEMPLATES[a]), {"v": person.facts[a]}) for a in ATTRIBUTES]
        rng.shuffle(statements)
        for filler in rng.sample(PERSON_FILLERS, len(fillers)):   # as many fillers, in any wording
            statements.insert(rng.randint(1, len(statements)), (filler, {"trait": person.trait}))
        text = _join(rng, person, statements)
        if text not in seen:
            seen.add(text)
            paraphrases.append(text)

    item = {"train_context": train_context, "mem_input": mem_input, "mem_target": targets,
            "gen_input": gen_input, "gen_target": list(targets), "hard_gen_input": hard_gen_input,
            "hard_gen_target": hard_gen_target, "paraphrases": paraphrases}
    for kind in ("mem", "gen", "hard_gen"):
        for prompt, target in zip(item[f"{kind}_input"], item[f"{kind}_target"]):
            if target in prompt:
                raise RuntimeError(f"{kind} probe {prompt!r} contains its target {target!r}")
    return item


def _fictional_people(rng: random.Random, world: World) -> list[Person]:
    """New people whose names occur in no corpus: new combinations of the world's syllables, checked against
    every word of every corpus and never containing (or contained in) a world name."""
    words = set()
    for columns in world.corpora.values():
        for text in columns["text"]:
            words.update(text.lower().split())
    pool = _NamePool(rng, WORLD_ONSETS, WORLD_CODAS, " ".join(sorted(words)), taken=sorted(_world_words(world)))
    n = world.config.num_paraphrase + world.config.num_once
    return [_random_person(rng, world, f"{pool.draw((2, 3))} {pool.draw((2, 3))}") for _ in range(n)]


# ---------------------------------------------------------------------------------------------- tasks
TASKS = (  # name, role (the paper's task it stands in for), kind
    ("birth_city", "SciQ", "person"), ("employer", "Winogrande", "person"), ("university", "PIQA", "person"),
    ("occupation", "OBQA", "person"), ("company_hq", "HellaSwag", "world"), ("city_country", "ARC-Easy", "world"))


TASK_PREFIX = "world_"  # lm-eval task names of the generated tasks: world_birth_city, ...


def task_set(world_dir):
    """The world's six fact tasks as an lm-eval TaskSet (written by write_tasks), scored by summed log-likelihood."""
    from ..downstream import TaskSet
    names = tuple(TASK_PREFIX + name for name, _, _ in TASKS)
    return TaskSet(names=names, metrics=("acc",) * len(names), include_path=str(Path(world_dir) / "tasks"))


def write_tasks(world_dir) -> None:
    """Write tasks.json's questions as local lm-eval tasks under world_dir/tasks (the YAMLs name their data file by
    absolute path, so they are written where they stay: after the world folder is in place)."""
    from ..downstream import write_local_task
    world_dir = Path(world_dir)
    tasks = json.loads((world_dir / "tasks.json").read_text())
    for task in tasks:
        yaml_path = world_dir / "tasks" / f"{TASK_PREFIX}{task['name']}.yaml"
        if not yaml_path.exists() or str(world_dir.resolve()) not in yaml_path.read_text():
            write_local_task(world_dir / "tasks", TASK_PREFIX + task["name"], task["questions"], metric="acc")


def _tasks(rng: random.Random, world: World) -> list[dict]:
    cfg = world.config
    tasks = []
    for name, role, kind in TASKS:
        if kind == "person":
            order = rng.sample(world.people, len(world.people))
            templates = _end_valued(PERSON_TEMPLATES[name])
            vocab = world.values(name)
        else:
            table = world.company_hq if name == "company_hq" else world.city_country
            order = rng.sample(list(table), len(table))
            templates = _end_valued(WORLD_TEMPLATES[name])
            vocab = list(world.city_country) if name == "company_hq" else world.countries
        questions = []
        for i in range(cfg.task_questions):
            subject = order[i % len(order)]   # cycle when there are fewer subjects than questions
            if kind == "person":
                truth, context = subject.facts[name], _prefix(rng.choice(templates), **_refs(subject, True))
            else:
                truth, context = table[subject], _prefix(rng.choice(templates), c=subject)
            choices = rng.sample([v for v in vocab if v != truth], cfg.task_choices - 1)
            answer = rng.randrange(cfg.task_choices)
            choices.insert(answer, truth)
            questions.append({"context": context, "choices": choices, "answer": answer})
        tasks.append({"name": name, "role": role, "questions": questions})
    return tasks


# ---------------------------------------------------------------------------------------------- entry points
def generate_world(cfg: WorldConfig, progress: bool = False) -> World:
    """Build the whole world and its text in memory (pure Python, deterministic for `cfg`)."""
    cfg.validate()
    rng = random.Random(cfg.seed)
    world = _build_world(cfg, rng)
    # the styles of the continual corpora also occur in pretraining, in other documents (held out below)
    n_pubmed, n_c4 = round(cfg.pretrain_docs * cfg.pubmed_fraction), round(cfg.pretrain_docs * cfg.c4_fraction)
    n_world = round(cfg.pretrain_docs * cfg.world_doc_fraction)
    pubmed = _pubmed_corpus(rng, world, n_pubmed + cfg.continual_docs, progress)
    c4 = _c4_corpus(rng, world, n_c4 + cfg.continual_docs, progress)
    pretrain = (_encyclopedia(rng, world, cfg.pretrain_docs - n_world - n_pubmed - n_c4, n_world, progress)
                + pubmed["text"][:n_pubmed] + c4["text"][:n_c4])
    rng.shuffle(pretrain)
    world.corpora = {"pretrain": {"text": pretrain},
                     "pubmed": {k: v[n_pubmed:] for k, v in pubmed.items()},
                     "c4": {k: v[n_c4:] for k, v in c4.items()},
                     "first_batch": {"text": pretrain[:cfg.first_batch_docs]}}
    world.fictional = _fictional_people(rng, world)
    items = [_knowledge_item(rng, world, p, cfg.num_versions) for p in world.fictional]
    world.knowledge = {"paraphrase": items[:cfg.num_paraphrase], "once": items[cfg.num_paraphrase:]}
    world.tasks = _tasks(rng, world)
    _check_disjoint(world)
    return world


def _world_words(world: World) -> set[str]:
    """The lowercase words of every world name (people, countries, cities, companies, universities)."""
    words = {w.lower() for p in world.people for w in p.name.split()}
    entities = (*world.city_country, *world.company_hq, *world.university_city, *world.countries)
    words |= {w.lower() for e in entities for w in e.split()}
    return words - {s.lower() for s in COMPANY_SUFFIXES + UNIVERSITY_SUFFIXES}


def _check_disjoint(world: World) -> None:
    """World names, fictional names and PubMed entities never share a word (in either direction of containment)."""
    world_words = _world_words(world)
    fiction_words = {w.lower() for p in world.fictional for w in p.name.split()}
    pubmed_words = {e.lower() for ents in world.corpora["pubmed"]["entities"] for e in ents}
    for a, b, what in ((fiction_words, world_words, "fictional/world"),
                       (fiction_words, pubmed_words, "fictional/pubmed")):
        clash = [(x, y) for x in a for y in b if x in y or y in x]
        if clash:
            raise RuntimeError(f"{what} names collide: {clash[:3]}")
    joined = " ".join(sorted(pubmed_words))
    clash = [w for w in world_words if w in joined]
    if clash:
        raise RuntimeError(f"world names occur inside PubMed entities: {clash[:3]}")


def write_world(cfg: WorldConfig, out_dir, progress: bool = True) -> Path:
    """Generate the world into `out_dir` (atomically), unless it already holds a world of this config."""
    import datasets

    from ..storage import read_cached, save_folder_atomically, write_cached

    out_dir = Path(out_dir)
    key = {"config": asdict(cfg), "generator_version": GENERATOR_VERSION}
    if read_cached(out_dir / "world.json", key) is not None:
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "world.json").exists():
        raise UserError(f"{out_dir} exists and is not a generated world (no world.json); give an empty or new folder.")
    world = generate_world(cfg, progress)

    def write(tmp: Path) -> None:
        bars_were_on = not datasets.utils.are_progress_bars_disabled()
        if not progress:
            datasets.utils.disable_progress_bars()
        try:
            for role, columns in world.corpora.items():
                datasets.Dataset.from_dict(columns).save_to_disk(str(tmp / "corpora" / role))
        finally:
            if bars_were_on:
                datasets.utils.enable_progress_bars()
        (tmp / "knowledge").mkdir()
        for s, items in world.knowledge.items():
            path = tmp / "knowledge" / f"fictional_knowledge_paraphrased_{s}{len(items)}.json"
            path.write_text(json.dumps(items, ensure_ascii=False, indent=1))
        (tmp / "tasks.json").write_text(json.dumps(world.tasks, ensure_ascii=False, indent=1))
        write_cached(world.summary(), tmp / "world.json", key)

    save_folder_atomically(out_dir, write)
    return out_dir
