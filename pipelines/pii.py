"""PII detection and replacement without a language model.

Why no spaCy/NER: the pipeline must scrub a million records in seconds on two cores,
and no model may be downloaded. Detection here is patterns plus validation:

- EMAIL, IP_ADDRESS (IPv4 and IPv6), US_SSN (area/group/serial rules), PHONE (US and
  international formats, a '+' also as '%2B' in a URL and spaces as '%20' or '+'; short
  numbers only next to a phone word), CREDIT_CARD (IIN prefix + Luhn; "card ending
  1234"), IBAN (per-country length + mod-97).
- PERSON: bundled first-name/surname lists (``resources/pii``), runs of capitalised
  words, honorifics and cue phrases ("my name is", "Dear X", "Hi X,", "Regards,\\nX"),
  with guards against capitalised common words, calendar words and product names; an
  unlisted or ambiguous name in a list with a listed one ("Siobhan and Mark"); a
  name in Cyrillic, Greek or a CJK script after a strong cue ("меня зовут", "我叫",
  "my name is 山田太郎"), in lower case too ("меня зовут иван"); a Chinese one also where
  the sentence runs on after it ("我叫李明今年二十岁"); a capitalised word that is no common
  word before "'s address", "'s phone number", "'s email" ("here's Zlata's address").
- STREET_ADDRESS: house number + street name + street type (US/UK and many European
  forms, "C/ Mayor 10"), unit/PO box/military forms, postcode with a "zip code"/"postcode"
  cue (a UK or Canadian one also in lower case; a Portuguese one after "CP"), a full UK
  postcode with no cue ("SW1A 1AA", upper case, valid area and letters), and the text
  after an address cue ("lives at", "address:"), extended over unit (also a Spanish floor
  and door, "3º B"), city, state and postcode (also Portuguese, "1100-053"; a UK or
  Canadian one in lower case, after a lower-case city too: "london sw1a 2aa"), also over
  lines quoted in an e-mail ("> 12 Main St\\n> Springfield, IL 62704").

Every detector proposes candidate spans; overlaps are resolved by entity priority
(an e-mail beats the name inside it, an address beats the name of its street) and
lower-priority candidates are trimmed, not dropped, so that the uncovered rest is
still masked. Existing placeholders are protected, which keeps scrubbing idempotent.

Resources load lazily on first use and are cached; importing this module is cheap.
The batch path :func:`scrub_series` runs a vectorised (Rust) prefilter over a whole
column and calls the Python detectors only on rows that can contain PII.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import ipaddress
import itertools
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import polars as pl

ENTITY_TYPES: tuple[str, ...] = (
    "EMAIL",
    "PHONE",
    "CREDIT_CARD",
    "IBAN",
    "US_SSN",
    "IP_ADDRESS",
    "PERSON",
    "STREET_ADDRESS",
)
DEFAULT_PLACEHOLDER = "<{entity}>"

# Higher wins an overlap: structured, validated values beat fuzzy ones.
PRIORITY: dict[str, int] = {
    "EMAIL": 8,
    "IBAN": 7,
    "CREDIT_CARD": 6,
    "US_SSN": 5,
    "IP_ADDRESS": 4,
    "PHONE": 3,
    "STREET_ADDRESS": 2,
    "PERSON": 1,
}

# --- numeric limits (named so that the rules read as rules) -----------------------------
CARD_MIN_DIGITS, CARD_MAX_DIGITS = 13, 19
CARD_FIRST_DIGITS = "23456"  # Mastercard 2-series, Amex/Diners/JCB, Visa, MC, Discover/UnionPay
PHONE_MIN_DIGITS, PHONE_MAX_DIGITS = 6, 15
PHONE_PLAIN_MIN_DIGITS = 10  # a bare digit run this long reads as a phone number
PHONE_PLAIN_MAX_DIGITS = 10  # ... up to this long; a longer run (14155550132, 07700900123) needs a phone word
PHONE_GROUPED_MIN_DIGITS = 8  # ... or this many digits in 3+ separated groups
CONTEXT_WINDOW = 40  # characters before a value searched for a cue word ("SSN", "call")
PHONE_SUFFIX_WINDOW = 16  # characters after a number searched for "office", "fax", ...
SSN_DIGITS = 9
IPV6_MIN_COLONS_WITHOUT_DIGIT = 4
MAX_NAME_TOKENS = 4
MAX_CUE_NAME_TOKENS = 3
NAME_WINDOW = 48  # characters each side of a listed name searched for the rest of it
MAX_ADDRESS_PARTS = 6
MAX_ADDRESS_BODY_TOKENS = 18
MAX_ADDRESS_BODY_CHARS = 140
MIN_STRONG_NAME_LEN = 3  # shorter names (Li, Wu, Al) need a cue or a neighbouring name
TOKEN_CACHE_SIZE = 1 << 17
PARALLEL_MIN_TEXTS = 20_000  # fewer texts than this are not worth shipping to workers
CHUNKS_PER_WORKER = 2
FEW_TEXTS = 128  # up to this many texts, one polars call runs every pattern on every text
MAX_RESCANS = 3  # extra passes over a text whose placeholders touch other text (see scrub_items)

# IBAN length per country (ISO 13616 registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20,
    "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
    "YE": 30,
}  # fmt: skip

# --- word lists small enough to live in code ------------------------------------------
HONORIFICS = (
    "mr", "mrs", "ms", "miss", "mx", "dr", "prof", "professor", "sir", "dame", "rev",
    "mme", "mlle", "herr", "frau", "sr", "sra", "srta", "sig", "sig.ra", "dott",
)  # fmt: skip
_HONORIFIC_SET = frozenset(HONORIFICS)
HONORIFIC_LOOKBACK = 10
NAME_PARTICLES = frozenset(
    (
        "van", "von", "de", "da", "di", "del", "della", "der", "den", "du", "la", "le", "dos",
        "das", "do", "ter", "ten", "bin", "binti", "ibn", "al", "el", "ben", "mac", "st", "y",
        "e"
    )
)  # fmt: skip
PLACE_PREFIXES = frozenset(
    ("san", "santa", "santo", "são", "los", "las", "new", "fort", "port", "mount", "mt",
     "saint", "st", "lake", "cape", "palm", "north", "south", "east", "west")
)  # fmt: skip
NAME_SUFFIX_RE = r",?[ \t]+(?:Jr|Sr|II|III|IV|V|PhD|MD|Esq)\b\.?"

STREET_SUFFIXES = (
    "street", "avenue", "road", "boulevard", "lane", "drive", "way", "court", "place",
    "terrace", "circle", "parkway", "highway", "square", "trail", "crescent", "close",
    "alley", "row", "walk", "path", "plaza", "loop", "pike", "expressway", "freeway",
    "turnpike", "causeway", "grove", "gardens", "mews", "heights", "ridge", "point",
    "crossing", "junction", "landing", "commons", "bypass", "view", "hill", "hills",
    "park", "green", "estate", "estates", "wharf", "quay", "embankment", "glen",
    "hollow", "meadow", "meadows", "cove", "knoll", "summit", "rise", "vale", "manor",
    "brook", "creek", "harbor", "harbour", "shore", "shores", "springs", "valley",
    "ranch", "str", "st", "ave", "av", "rd", "blvd", "bvd", "ln", "dr", "ct", "crt",
    "pl", "ter", "terr", "cir", "pkwy", "pky", "hwy", "sq", "trl", "cres", "expy",
    "fwy", "gdns", "hts", "xing", "jct", "plz", "cv", "crk", "mnr",
)  # fmt: skip
# Street-type words written before the name ("Rue X 12", "Via X 3", "ul. X 5").
STREET_PREFIXES = (
    "rue", "via", "viale", "vicolo", "piazza", "piazzale", "corso", "largo", "calle",
    "avenida", "avda", "av", "paseo", "plaza", "camino", "carrer", "rua", "travessa",
    "praça", "praca", "estrada", "alameda", "rambla", "strada", "ulica", "ul", "aleja",
    "al", "boulevard", "bd", "avenue", "chemin", "allée", "allee", "impasse", "quai",
    "route", "place", "cours", "square", "rond-point", "ronda", "carretera", "calzada",
    "jalan", "jl", "soi", "thanon", "odos", "leoforos", "bulevar", "ulitsa", "prospekt",
    "utca", "út", "c/",  # Spanish 'C/ Mayor 10' (calle), also glued: 'C/Mayor 10'
)  # fmt: skip
# Capitals that may start a street name glued to 'C/' ('C/Mayor', 'C/Álava'; not 'c/o')
GLUED_STREET_CAPITALS = "A-ZÀ-ÖØ-Þ"
# English words among the prefixes, and 'c/' (also Spanish shorthand for 'con': 'c/
# tarjeta'), need a capitalised street name (after any particles: 'C/ de la Paz 5') or
# two numbers.
AMBIGUOUS_PREFIXES = frozenset(
    ("via", "place", "route", "square", "avenue", "boulevard", "plaza", "cours", "al", "av", "c/")
)
# Street-type words written after the name as a separate word ("Gyula utca 76").
STREET_TYPES_AFTER = (
    "utca", "u", "út", "útja", "tér", "körút", "köz", "sor", "tee", "iela", "gatve",
    "prospekt", "ulitsa", "sokak", "sokağı", "caddesi", "cad", "straße", "strasse",
    "str", "gasse", "weg", "platz", "allee", "gade", "vej", "gata", "gatan", "vägen",
    "veien", "vegen", "gate", "tie", "katu", "kuja", "polku", "laan", "straat", "plein",
    "kade", "gracht", "steeg", "dijk", "ulica", "ulice", "cesta", "trg", "street",
    "road", "avenue", "lane",
)  # fmt: skip
# Street-type endings fused into the name ("Auerstrasse 84", "Holmevej 34").
FUSED_STREET_ENDINGS = (
    "straße", "strasse", "str.", "gasse", "weg", "platz", "allee", "ring", "damm", "ufer",
    "gracht", "straat", "laan", "plein", "kade", "dijk", "steeg", "singel", "vej", "gade",
    "gatan", "gata", "vägen", "veien", "vegen", "gate", "stræde", "torv", "tie", "katu",
    "kuja", "polku", "tori", "utca", "körút", "ulica", "ulice", "cesta", "trg", "iela",
    "gatve", "sokak", "caddesi", "bulvarı", "yolu", "strada", "straza", "ulitsa",
)  # fmt: skip
UNIT_WORDS = (
    "apartment", "apt", "suite", "ste", "unit", "flat", "floor", "fl", "room", "rm",
    "building", "bldg", "no",
)  # fmt: skip
DIRECTIONS = r"(?:N|S|E|W|NE|NW|SE|SW|North|South|East|West)"
US_STATES = (
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "FL", "GA", "HI", "ID", "IL", "IN",
    "IA", "KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV",
    "NH", "NJ", "NM", "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN",
    "TX", "UT", "VT", "VA", "WA", "WV", "WI", "WY", "DC", "PR", "GU", "VI"
)  # fmt: skip
# UK postcode areas (the letters before the first digit, 'SW' of 'SW1A 1AA'; Royal Mail's
# list, with the Crown dependencies and the non-geographic BF and BX)
UK_POSTCODE_AREAS = frozenset(
    (
        "AB", "AL", "B", "BA", "BB", "BD", "BF", "BH", "BL", "BN", "BR", "BS", "BT", "BX", "CA",
        "CB", "CF", "CH", "CM", "CO", "CR", "CT", "CV", "CW", "DA", "DD", "DE", "DG", "DH", "DL",
        "DN", "DT", "DY", "E", "EC", "EH", "EN", "EX", "FK", "FY", "G", "GL", "GU", "GY", "HA",
        "HD", "HG", "HP", "HR", "HS", "HU", "HX", "IG", "IM", "IP", "IV", "JE", "KA", "KT", "KW",
        "KY", "L", "LA", "LD", "LE", "LL", "LN", "LS", "LU", "M", "ME", "MK", "ML", "N", "NE",
        "NG", "NN", "NP", "NR", "NW", "OL", "OX", "PA", "PE", "PH", "PL", "PO", "PR", "RG", "RH",
        "RM", "S", "SA", "SE", "SG", "SK", "SL", "SM", "SN", "SO", "SP", "SR", "SS", "ST", "SW",
        "SY", "TA", "TD", "TF", "TN", "TQ", "TR", "TS", "TW", "UB", "W", "WA", "WC", "WD", "WF",
        "WN", "WR", "WS", "WV", "YO", "ZE",
    )
)  # fmt: skip
UK_DISTRICT_LETTERS = ("ABCDEFGHJKPSTUW", "ABEHMNPRVWXY")  # 'W1A' after one area letter, 'SW1A' after two
UK_INWARD_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"  # never C, I, K, M, O, V ('1AA', not '2PM')
CA_FIRST_LETTERS = "ABCEGHJKLMNPRSTVXY"  # Canada: no D, F, I, O, Q, U anywhere, no W, Z first
CA_LETTERS = "ABCEGHJKLMNPRSTVWXYZ"
# Inward codes that read as something else when no cue or street goes before: a size
# ('M2 1TB', 'B2 8GB', 'L 2XL') or an ordinal ('B12 2ND dose')
POSTCODE_LOOKALIKE_INWARDS = frozenset(("GB", "TB", "XL", "XS"))
ORDINAL_ENDINGS = {"1": "ST", "2": "ND", "3": "RD"}  # other digits: 'TH'
# Function words that never belong to a street or city name.
STOPWORDS = frozenset(
    (
        "a", "an", "the", "and", "or", "but", "nor", "of", "to", "in", "on", "at", "for",
        "from", "by", "with", "without", "as", "is", "are", "was", "were", "be", "been",
        "being", "am", "i", "you", "he", "she", "it", "we", "they", "me", "him", "her", "us",
        "them", "my", "your", "his", "its", "our", "their", "this", "that", "these", "those",
        "there", "here", "then", "than", "so", "if", "when", "while", "because", "since",
        "until", "not", "no", "yes", "do", "does", "did", "have", "has", "had", "will", "would",
        "can", "could", "should", "may", "might", "must", "shall", "just", "very", "also",
        "only", "even", "about", "into", "onto", "over", "under", "after", "before", "up",
        "down", "out", "off", "again", "more", "most", "some", "any", "each", "every", "all",
        "both", "few", "many", "much", "such", "own", "same", "other", "what", "which", "who",
        "whom", "whose", "why", "how", "where", "please", "thanks", "thank", "hi", "hello",
        "hey", "dear", "ok", "okay", "sure", "let", "lets", "get", "got", "make", "made",
        "take", "took", "go", "went", "come", "came", "see", "saw", "know", "today", "tomorrow",
        "yesterday", "tonight", "now", "soon", "later", "last", "next", "ago", "am", "pm",
        "noon", "midnight", "o'clock", "times", "time", "minutes", "minute", "hours", "hour",
        "days", "day", "weeks", "week", "months", "month", "years", "year", "people", "items",
        "things"
    )
)  # fmt: skip
CONNECTORS = frozenset(
    (
        "and", "of", "the", "de", "la", "del", "da", "di", "do", "du", "des", "el", "les",
        "sur", "upon", "on", "am", "an", "der", "den", "y", "e"
    )
)  # fmt: skip

# Cue words (case-insensitive) that make a nearby number a phone number or an SSN.
PHONE_CUES = (
    r"phone|tel|telephone|call|called|calling|cell|cellphone|mobile|mob|fax|office|"
    r"number|no\.|nr\.|reach|text|sms|whatsapp|contact|dial|ring|landline|hotline|"
    r"answering|helpline|extension|ext|home|work|direct|#"
)
PHONE_SUFFIX_CUES = r"office|fax|mobile|cell|home|work|tel|phone|direct|landline"
SSN_CUES = r"ssn|ss#|ss ?no|social security|soc\.? ?sec|tax ?id|tin|itin"


@dataclass(frozen=True, slots=True)
class Span:
    """A detected entity: ``text[start:end]`` is an ``entity`` (one of ENTITY_TYPES)."""

    entity: str
    start: int
    end: int

    def text_of(self, text: str) -> str:
        """The covered substring of ``text``."""
        return text[self.start : self.end]


# =======================================================================================
# resources
# =======================================================================================


@dataclass(frozen=True)
class Lexicon:
    """Word lists, lower-cased. Built once, on first use."""

    first: frozenset[str]
    last: frozenset[str]
    common: frozenset[str]
    not_names: frozenset[str]
    places: frozenset[str]

    @functools.cached_property
    def names(self) -> frozenset[str]:
        return self.first | self.last

    @functools.cached_property
    def strong_names(self) -> frozenset[str]:
        """Names that are evidence on their own: not a common word, place or product."""
        return frozenset(
            n
            for n in self.names
            if len(n) >= MIN_STRONG_NAME_LEN
            and n not in self.common
            and n not in self.places
            and n not in self.not_names
        )


def _read_words(*patterns: str) -> frozenset[str]:
    """Read every resource file matching ``patterns``; lower-case, with accent-free forms."""
    folder = resources.files("pipelines") / "resources" / "pii"
    words: set[str] = set()
    for entry in folder.iterdir():
        if not any(_glob_match(entry.name, p) for p in patterns):
            continue
        for line in entry.read_text(encoding="utf-8").splitlines():
            word = line.split("#", 1)[0].strip()
            if not word:
                continue
            low = word.lower()
            words.add(low)
            if not low.isascii():  # most words are; only the others have accents to strip
                words.add(_strip_accents(low))
    return frozenset(words)


def _glob_match(name: str, pattern: str) -> bool:
    prefix, _, suffix = pattern.partition("*")
    return name.startswith(prefix) and name.endswith(suffix) and len(name) >= len(pattern) - 1


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


@functools.cache
def lexicon() -> Lexicon:
    """The bundled word lists (loaded and cached on first call)."""
    return Lexicon(
        first=_read_words("first_names_*.txt"),
        last=_read_words("last_names_*.txt"),
        common=_read_words("common_words*.txt"),
        not_names=_read_words("not_names*.txt"),
        places=_read_words("places_*.txt"),
    )


# =======================================================================================
# patterns
#
# Two engines: the Rust regex engine of polars scans whole columns for *candidates*
# (fast, no look-around), and Python's ``re`` validates each candidate on a short window
# of its text (exact boundaries, look-around, context words). A text with no candidate
# never reaches Python. The same path serves one text and a million: one implementation.
# =======================================================================================

UNICODE_SCAN_LIMIT = 0x20000  # upper-case letters end in plane 1
ADDRESS_MARGIN_BACK = 90  # characters before an address candidate searched for its start
ADDRESS_MARGIN_FWD = 12


def _char_class(categories: frozenset[str]) -> str:
    """A character-class body for every code point in the Unicode ``categories``.

    Why: Python's ``re`` has no ``\\p{Lu}``, and what counts as a capital letter must
    match the Rust side's ``\\p{Lu}|\\p{Lt}``.
    """
    ranges: list[tuple[int, int]] = []
    for cp in range(UNICODE_SCAN_LIMIT):
        if unicodedata.category(chr(cp)) in categories:
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    return "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
        for a, b in ranges
    )


def _alt(words: Sequence[str]) -> str:
    """Alternation of literal words, longest first so that 'Street' is tried before 'St'."""
    return "|".join(re.escape(w) for w in sorted(set(words), key=lambda w: (-len(w), w)))


def _trie_alt(words: Sequence[str]) -> str:
    """The same alternation as :func:`_alt`, written as a prefix tree.

    Why: Python's ``re`` tries the branches of a flat alternation one by one, so a
    200-word list costs 200 failed tries at every position where it is tried (the
    stop-word check inside a street pattern ran at every word of a window). A tree
    branches on the first letter. Among the words that fit at a position, which are
    prefixes of one another, the longer is still tried first, as in :func:`_alt`.
    It is not used for a pattern's first element: ``re`` finds the possible first
    letters of a flat alternation and skips ahead to them, but not for a tree.
    """
    tree: dict[str, dict] = {}
    for word in set(words):
        node = tree
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}
    return _trie_body(tree)


def _trie_body(node: dict[str, dict]) -> str:
    branches = [re.escape(ch) + _trie_body(node[ch]) for ch in sorted(k for k in node if k)]
    if not branches:
        return ""
    body = "|".join(branches)
    if "" in node:  # a word ends here: longer words first, then the end (greedy '?')
        return f"(?:{body})?"
    return body if len(branches) == 1 else f"(?:{body})"


_GREETINGS = r"dear|hi|hello|hey|hiya|greetings|good{S}+(?:morning|afternoon|evening)"
# Words after a greeting that are neither a name nor the start of another cue ('Hi there,',
# 'Dear team,'): the batch prefilter drops those greetings (a test checks both conditions).
GREETING_FILLERS = (
    "there", "all", "everyone", "everybody", "team", "guys", "folks", "and", "again", "both",
    "world", "friends", "you", "yall",
)  # fmt: skip
_NAME_INTROS = (
    r"my{S}+name{S}+is|my{S}+name's|name{S}+is|call{S}+me|calls{S}+me|goes{S}+by"
    r"|named(?:{S}+(?:him|her))?|called|signed(?:{S}+by)?"
    r"|attn|attention|(?:reported|written|sent|signed|approved|submitted|created|requested"
    r"|assigned|prepared|authored){S}+by|(?:signed|sign{S}+it){S}+as"
)
_SELF_INTROS = r"this{S}+is|i{S}+am|i'm|i’m"
_SIGN_OFFS = (
    r"regards|thanks|thank{S}+you|cheers|sincerely|best|yours|warmly|respectfully|love"
    r"|best{S}+wishes|xoxo|all{S}+the{S}+best|kind{S}+regards|warm{S}+regards"
)
# Words before a name used as a form of address, then a comma or stop ("Sure Lucía, ...").
_VOCATIVES = (
    r"good{S}+luck|congrats|congratulations|welcome(?:{S}+back)?|sorry|sure|ok|okay|yes"
    r"|no{S}+problem|of{S}+course|absolutely|great|bye|goodbye|see{S}+you|morning|evening"
    r"|thanks{S}+again|happy{S}+birthday|well{S}+done|nice{S}+work|great{S}+work|good{S}+job"
)
_LABELS = (
    r"(?:full{S}+)?name|from|to|cc|contact|customer|client|patient|employee|user|author"
    r"|sender|recipient|assignee|owner|manager|agent|reporter|requester|signed{S}+by"
)
# Name intros and 'name:' labels in other languages ('меня зовут', '我叫', '名前：'): written
# without a word boundary before them (Chinese and Japanese put none), a name follows.
_NATIVE_INTROS = (
    r"меня{S}+зовут|мене{S}+звати|мо[её]{S}+имя|με{S}+λένε|ονομάζομαι|το{S}+όνομά{S}+μου{S}+είναι"
    r"|我叫|我名叫|我的名字[是叫]|(?:私|僕|俺)の名前は|(?:제|내|저의){S}*이름은"
    r"|(?:имя|фио|όνομα|名前|氏名|姓名|이름){S}*[:：]"
)
# The cues after which a name in a script without case (CJK) is taken: no capital tells
# a name from a word there, so only a cue that announces a name counts ('this is', 'Dear',
# 'Thanks,' do not). 'I am' is one; a nationality after it ('I am 日本人') is not a name.
_STRONG_INTROS = (
    r"my{S}+name{S}+is|my{S}+name's|name{S}+is|call{S}+me|i{S}+am|i'm|i’m|(?:full{S}+)?name"
)
# Letters of the scripts without case: Han, katakana, Hangul syllables (hiragana is left
# out: Japanese writes its particles in it, 'です' after '山田太郎'). Both engines use it.
CJK_LETTERS = (
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # Han
    "\u30a1-\u30fa\u31f0-\u31ff\uff66-\uff9f"  # katakana, full and half width
    "\uac00-\ud7a3"  # Hangul syllables
)
CJK_NAME_MAX = 6  # Han or Hangul characters in a name ('山田太郎', '長谷川一郎'); more is a sentence
CJK_KANA_NAME_MAX = 12  # a name in katakana is written out ('アレクサンドル・ペトロフ')
# Blocks of the cased scripts that no name list here covers: Greek (and Greek Extended),
# Cyrillic (and its supplement), Armenian. A lower-case name in them ('меня зовут иван')
# is taken after a strong cue alone (see _non_latin_lower_name).
NON_LATIN_CASED = "\u0370-\u03ff\u1f00-\u1fff\u0400-\u052f\u0530-\u058f"
FIRST_NON_LATIN = "\u0370"  # below it no letter of those scripts or of CJK: nothing to look for
MIN_NON_LATIN_NAME_LEN = 3  # a shorter word after the first ('и', 'из') is no part of the name
# Words that after 'меня зовут', 'моё имя', 'με λένε' start a phrase, not a name ('моё имя
# не важно', 'меня зовут просто Ваня'): a lower-case word there is no name when it is one.
NON_LATIN_NOT_NAMES = frozenset(
    ("не", "ни", "просто", "как", "так", "тоже", "это", "все", "всё", "сейчас", "теперь",
     "нема", "також", "δεν", "απλά", "και", "επίσης")
)  # fmt: skip
# Korean copulas glued to the name they follow ('김민수입니다')
KOREAN_NAME_ENDINGS = ("입니다", "이에요", "이라고", "라고", "예요", "이고", "이야")
# Chinese name intros, after which the sentence often runs on with no stop ('我叫李明今年二十岁'):
# the name is cut out of the run (see _chinese_name_end)
CHINESE_INTROS = ("我叫", "我名叫", "我的名字", "姓名")
# Common Chinese surnames (about the 100 most common and some more, simplified and
# traditional), less those that often start an ordinary word ('和', '来', '管' of '管理员'):
# '叫' is also 'to call for' ('我叫管理员帮我...'), so a run too long to be a name is read
# as one only after a listed surname.
CHINESE_SURNAMES = frozenset(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕"
    "丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃"
    "武戴莫孔向汤樊葛邢乔伍庞颜倪庄聂章鲁岳翟殷詹欧耿兰焦俞柳舒阮柯纪梅裴涂翁冉骆蓝靳柴鲍喻祁蒲滕饶"
    "張劉陳楊黃趙吳孫馬鄭謝許韓馮鄧蕭葉蘇呂盧鍾譚陸賈韋鄒閆閻龍賀顧龔萬錢嚴湯莊聶顏龐喬魯蘭紀駱藍鮑饒"
)
CHINESE_COMPOUND_SURNAMES = frozenset(
    (
        "欧阳", "歐陽", "司马", "司馬", "上官", "诸葛", "諸葛", "东方", "東方", "皇甫", "慕容", "令狐",
        "司徒", "夏侯", "公孙", "公孫", "长孙", "長孫", "宇文", "尉迟", "尉遲", "轩辕", "軒轅", "端木",
        "独孤", "獨孤", "西门", "西門", "南宫", "南宮", "申屠", "澹台", "澹臺", "濮阳", "濮陽", "钟离",
        "鍾離", "闻人", "聞人", "赫连", "赫連", "呼延", "司空", "拓跋",
    )
)  # fmt: skip
# Words that start the rest of a Chinese sentence after a name and end no given name:
# particles, pronouns and verbs ('是', '在', '他'), time and place phrases ('今年', '来自',
# '住在'), form labels ('性别', '电话') and a number of years ('二十岁', '三岁')
CHINESE_AFTER_NAME = (
    r"[是在的了和与與跟也很就都还還又不没沒呢吗嗎啊哦呀吧啦嘛岁歲想要从從住请請这這那我你他她们們]"
    r"|今年|今天|现在|現在|目前|来自|來自|来到|來到|出生|毕业|畢業|喜欢|喜歡|工作|家住|已经|已經|刚刚"
    r"|剛剛|昨天|明天|性别|性別|年龄|年齡|电话|電話|地址"
    r"|[一二三四五六七八九十两兩][一二三四五六七八九十两兩岁歲年个個]"
)


CUE_KINDS = ("greeting", "name_intro", "self_intro", "sign_off", "label", "honorific")
# The cues read right after another cue ('Hi, I'm X', 'Dear Mr. X', 'Name: Mr. X')
CHAINED_CUE_KINDS = ("name_intro", "self_intro", "honorific")


def _cue_pattern(b: str, up: str, s: str, follow: str, kinds: Sequence[str] = CUE_KINDS) -> str:
    """The person-cue pattern for one engine, of the cue ``kinds`` (in CUE_KINDS order).

    ``b`` is the word boundary, ``up`` a capital letter and ``follow`` what must come next
    (Python looks at any word, the Rust prefilter wants a capital). Greetings and name
    intros take the next word; 'I am'/'this is' need ``up`` (Python: a capital or a CJK
    letter); sign-offs need a comma or a line break, field labels a colon, honorifics a
    following word.
    """
    honor = _alt(HONORIFICS)
    parts = {
        "greeting": rf"(?i:{_GREETINGS}){b}{s}*,?{s}*{follow}",
        "name_intro": rf"(?i:{_NAME_INTROS}){b}{s}*:?{s}*{follow}",
        "self_intro": rf"(?i:{_SELF_INTROS}){b}{s}+{up}",
        "sign_off": rf"(?i:{_SIGN_OFFS}){b}[ \t]*(?:,[ \t]*\n?|\n)[ \t]*{follow}",
        "label": rf"(?i:{_LABELS}){b}[ \t]*:[ \t]*{follow}",
        "honorific": rf"(?i:{honor}){b}\.?[ \t]+{follow}",
    }
    body = "|".join(f"(?:{parts[k]})" for k in CUE_KINDS if k in kinds).replace("{S}", s)
    return rf"{b}(?:{body})"


def _native_cue_pattern(s: str, follow: str) -> str:
    """Name intros of other languages (see _NATIVE_INTROS), then ``follow``."""
    return rf"(?i:{_NATIVE_INTROS.replace('{S}', s)}){s}*:?{s}*{follow}"


def _lower_cue_pattern(b: str, s: str) -> str:
    """Strong cues followed by a lower-case word, for the Rust prefilter of mixed-case text.

    Why: 'My name is john smith.' is typed in chat; the mixed-case prefilter wanted a
    capital after every cue, so the name was never looked at. Only cues that rarely
    precede an ordinary word are taken (name intros, 'Name:' labels, a sign-off then a
    line break); Python then keeps a lower-case word only if a name list has it and it is
    no common word (:func:`_names_after`). A name in a script without case ('my name is
    山田太郎', 'I am 李明') follows the same cues, and so does a greeting ('Hi john,'),
    which Python holds to stricter terms (:func:`_names_after_cue`).
    """
    low = r"\p{Ll}"
    low_or_cjk = rf"(?:\p{{Ll}}|[{CJK_LETTERS}])"
    parts = (
        rf"(?i:{_NAME_INTROS}){b}{s}*:?{s}*{low_or_cjk}",
        rf"(?i:{_LABELS}){b}[ \t]*:[ \t]*{low_or_cjk}",
        rf"(?i:{_SIGN_OFFS}){b}[ \t]*,?[ \t]*\n[ \t]*{low}",
        rf"(?i:{_SELF_INTROS}){b}{s}+[{CJK_LETTERS}]",
        # the word whole (Latin-1 letters: a small automaton), for the filler filter
        rf"(?i:{_GREETINGS}){b}{s}*,?{s}*{low}[a-zß-öø-ÿ]*",
    )
    body = "|".join(f"(?:{p})" for p in parts).replace("{S}", s)
    return rf"{b}(?:{body})"


def _vocative_pattern(b: str, up: str, s: str) -> str:
    """'Good luck, X' / 'Sure X,': a capitalised word after a form of address."""
    return rf"{b}(?i:{_VOCATIVES.replace('{S}', s)}){b}[ \t]*,?[ \t]*{up}"


# What a person's own details are called after their name's possessive ('Zlata's address')
_POSSESSED = r"(?:home{S}+)?(?i:address|e-?mail|phone|number)"


def _possessive_pattern(up: str, s: str, run: str = "") -> str:
    """Up to three capitalised words, the last one's possessive, then ``_POSSESSED``.

    Why a run and not one word: the Rust match starts at its leftmost capital ('Send
    Zlata's address'), and Python reads the name off the end of the run (see
    :func:`_possessive_name`), so the name lies inside the Rust match. ``run``: the
    group the words are in (``?P<run>`` for Python, none for Rust).
    """
    word = rf"{up}[\w'’-]*"
    return rf"({run or '?:'}{word}(?:[ ]{word}){{0,2}})['’]s{s}+{_POSSESSED.replace('{S}', s)}"


@dataclass(frozen=True)
class _Py:
    """Python patterns, applied to candidate windows only."""

    ipv4: re.Pattern[str]
    ipv4_shape: re.Pattern[str]
    card: re.Pattern[str]
    card_tail: re.Pattern[str]
    iban_start: re.Pattern[str]
    ssn: re.Pattern[str]
    ssn_plain: re.Pattern[str]
    ssn_cue: re.Pattern[str]
    phone: re.Pattern[str]
    phone_cue: re.Pattern[str]
    phone_suffix_cue: re.Pattern[str]
    date_like: re.Pattern[str]
    cap_token: re.Pattern[str]
    any_token: re.Pattern[str]
    person_cue: re.Pattern[str]
    chained_cue: re.Pattern[str]
    strong_cue: re.Pattern[str]
    greeting: re.Pattern[str]
    cjk_run: re.Pattern[str]
    chinese_intro: re.Pattern[str]
    chinese_after_name: re.Pattern[str]
    non_latin_word: re.Pattern[str]
    vocative_cue: re.Pattern[str]
    possessive_cue: re.Pattern[str]
    name_suffix: re.Pattern[str]
    particle_gap: re.Pattern[str]
    us_street: re.Pattern[str]
    after_street: re.Pattern[str]
    fused_street: re.Pattern[str]
    line_street: re.Pattern[str]
    unit_alone: re.Pattern[str]
    po_box: re.Pattern[str]
    military: re.Pattern[str]
    zip_cue: re.Pattern[str]
    cp_cue: re.Pattern[str]
    uk_postcode: re.Pattern[str]
    prefix_street: re.Pattern[str]
    address_cue: re.Pattern[str]
    address_cont: re.Pattern[str]
    number_gap: re.Pattern[str]
    body_token: re.Pattern[str]


@functools.cache
def _py() -> _Py:
    upper = _char_class(frozenset(("Lu", "Lt")))
    letter = r"[^\W\d_]"
    word = rf"(?:\d{{1,3}}(?:st|nd|rd|th)|{letter}[\w'’.-]*)"
    stop = _trie_alt(sorted(STOPWORDS))
    sword = rf"(?!(?i:{stop})(?![\w'’-])){word}"  # a street-name word: not a function word
    house = r"\d{1,6}(?:[A-Za-z](?![\w'’]))?(?:[-/]\d{1,5}[A-Za-z]?)?"
    suffix = _alt(STREET_SUFFIXES)
    units = _alt(UNIT_WORDS)
    # Spanish/Portuguese floor and door after a street ('3º B', '2ª izq', '4.º 1ª', 'bajo A')
    doors = "izquierda|izqda|izda|izq|derecha|dcha|dch|der|centro|ctro|esq|dto|dta"
    door = rf"(?i:{doors})\.?|\d{{1,2}}\.?[ \t]?[ºª]|[A-Za-z]"
    floors = r"\d{1,3}\.?[ \t]?[ºª°]|(?i:bajo|entresuelo|entlo|principal|pral|ático|atico)\.?"
    floor = rf"(?:{floors})(?:[ \t-]?(?:{door})(?![\w'’]))?(?![\w'’])"
    unit = (
        rf"(?i:{units})\.?[ \t]*#?[ \t]*\d{{1,5}}[A-Za-z]?(?![\w'’])|\#[ \t]?\d{{1,5}}(?![\w'’])"
        rf"|{floor}"
    )
    # US, UK, Canadian, Portuguese ('1100-053') and other all-digit postcodes
    zip_ = (
        r"\d{5}(?:-\d{4})?|[A-Z]{1,2}\d[A-Z\d]?[ \t]?\d[A-Z]{2}|[A-Z]\d[A-Z][ \t]?\d[A-Z]\d"
        r"|\d{4}-\d{3}|\d{4,6}"
    )
    # a UK or Canadian postcode typed in lower case ('sw1a 1aa'): only after a postcode
    # cue, and not a letter-digit code before an ordinal ('post q1 2nd half figures')
    zip_any_case = (
        r"(?i:[a-z]{1,2}\d[a-z\d]?[ \t]?\d(?!(?:st|nd|rd|th)\b)[a-z]{2}"
        r"|[a-z]\d[a-z][ \t]?\d[a-z]\d)"
    )
    state = "|".join(US_STATES)
    # a city word has no digits: 'NW1' in 'London NW1 6XE' is the postcode's first half
    cword = rf"(?:[{upper}](?:[^\W\d_]|['’.-])*(?![\w])|nan(?![\w]))"
    connectors = _alt(sorted(CONNECTORS))
    city = rf"{cword}(?:[ \t]+(?:(?:{connectors})[ \t]+)?{cword}){{0,3}}"
    # a city typed in lower case ('london sw1a 2aa'): only before a UK or Canadian postcode
    lword = r"[^\W\d_](?:[^\W\d_]|['’.-])*(?![\w])"
    lower_city = rf"{lword}(?:[ \t]+{lword}){{0,2}}"
    octet = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    us_street = (
        rf"(?<![\w.,/-]){house}(?:[ \t]+{house})?[ \t]+(?:{DIRECTIONS}\.?[ \t]+)?"
        rf"(?:{sword}[ \t]+){{1,5}}(?i:{suffix})(?![\w'’-])\.?(?:[ \t]+{DIRECTIONS}\b\.?)?"
    )
    after_street = (
        rf"(?<![\w'’-])(?:{sword}[ \t]+){{0,3}}{sword}[ \t]+"
        rf"(?i:{_trie_alt(STREET_TYPES_AFTER)})\.?[ \t]+{house}(?![\w'’])\.?"
    )
    fused_street = (
        rf"(?<![\w'’-]){letter}[\w'’-]{{2,}}?(?i:{_trie_alt(FUSED_STREET_ENDINGS)})\.?"
        rf"[ \t]+{house}(?![\w'’])\.?"
    )
    line_street = (
        rf"(?m)^[^\w\n]{{0,6}}({house}[ \t]+(?:{sword}[ \t]+){{1,5}}{house}(?![\w'’])\.?)"
        rf"(?=[ \t]*(?:,|\n|$|(?i:{units})\b))"
    )
    unit_alone = (
        r"(?<![\w'’])(?i:apartment|apt|suite|ste|flat)\.?[ \t]*#?[ \t]*\d{1,5}[A-Za-z]?(?![\w'’])"
    )
    po_box = r"(?<![\w'’])(?i:p\.?[ \t]?o\.?[ \t]*box|post[ \t]+office[ \t]+box)[ \t]+\d{1,6}\b"
    military = (
        r"(?i:(?:(?:psc|cmr|unit)[ \t]+\d{1,5},?[ \t]+box[ \t]+\d{1,5}"
        r"|(?:usns|usnv|uss|uscgc)[ \t]+[^\W\d_][\w'’-]*(?:[ \t]+[^\W\d_][\w'’-]*)?)"
        r"[ \t]*,?\s*)?(?i:\b(?:apo|fpo|dpo)[ \t]+(?:aa|ae|ap)[ \t]+\d{5}\b)"
    )
    zip_cue = (
        r"(?i:\b(?:zip|postal|post)[ \t]*(?:code)?\b[ \t]*(?:is|:|#|number)?[ \t]*)"
        rf"((?:{zip_}|{zip_any_case})(?![\w]))"
    )
    possessive = _possessive_pattern(f"[{upper}]", r"\s", run="?P<run>")
    quote = r"(?:>[ \t]*){0,3}"  # an e-mail quote at a line's start ('> ', '> > ')
    strong_intros = _STRONG_INTROS.replace("{S}", r"\s")
    native_intros = _native_cue_pattern(r"\s", "")
    greetings = _GREETINGS.replace("{S}", r"\s")
    return _Py(
        ipv4_shape=re.compile(r"\d{1,3}(?:\.\d{1,3}){3}"),
        ipv4=re.compile(rf"(?<![\w.]){octet}(?:\.{octet}){{3}}(?:/\d{{1,2}})?(?![\w]|\.\d)"),
        card=re.compile(
            r"(?<![\w-])(?:\d{4}([ -])\d{4}\1\d{4}\1\d{1,7}|\d{4}([ -])\d{6}\2\d{4,5}"
            r"|\d{13,19})(?![\w]|-\d)"
        ),
        card_tail=re.compile(
            r"(?i:\b(?:card|visa|mastercard|amex|account|acct)\b[^.\n]{0,24}?"
            r"(?:ending|ends|last[ \t]+(?:4|four)(?:[ \t]+digits)?)[ \t]*(?:in|with|of|are|is|:)?"
            r"[ \t]*(?:[#:][ \t]*)?)(\d{4})(?!\d)"
            r"|(?:[xX*•]{4}[ -]?){2,3}[xX*•]{0,4}[ -]?(\d{4})(?!\d)"
        ),
        iban_start=re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?=[ ]?[A-Za-z0-9])"),
        ssn=re.compile(r"(?<![\w-])(\d{3})([- .])(\d{2})\2(\d{4})(?![\w-]|\.\d)"),
        ssn_plain=re.compile(r"(?<![\w-])\d{9}(?![\w-])"),
        ssn_cue=re.compile(rf"(?i:\b(?:{SSN_CUES})\b)"),
        phone=re.compile(
            # not inside a word, number, path, amount or URL escape ('%20'); but an opening
            # bracket starts a value whatever stands before it: glued to a name, e-mail or
            # other number ('Sarah(415) 555-0134'), or to the placeholder a second pass sees
            # there; and so does an escaped space in a URL ('call%20415%20555%200132').
            # A space is also '%20' in a URL, and '+' after a leading '+' ('%2B1+415+555+0132')
            r"(?:(?<![\w+/.$€£¥%-])|(?=\()|(?<=%20))"
            r"(?P<cc>(?:(?P<plus>\+|%2[Bb])|\b00)\d{1,3}(?:[ .-]|%20|(?(plus)\+|(?!))|(?=\())?)?"
            r"(?P<core>(?:\(\d{1,5}\)[ .-]?)?\d{1,15}"
            r"(?:(?:[ .-]|[ ]-[ ]|%20|(?(plus)\+|(?!)))\d{1,10}){0,6})"
            r"(?P<ext>[ ]?(?i:x|ext\.?|extension)[ ]?\d{1,6})?"
            r"(?![\w]|[.-]\d)"
        ),
        phone_cue=re.compile(rf"(?i:(?:\b|(?<=\W))(?:{PHONE_CUES})(?:\b|(?=\W)))"),
        phone_suffix_cue=re.compile(rf"^\W{{0,3}}(?i:{PHONE_SUFFIX_CUES})\b"),
        date_like=re.compile(
            r"^(?:\d{4}[-./](?:0?[1-9]|1[0-2])[-./](?:0?[1-9]|[12]\d|3[01])"
            r"|(?:0?[1-9]|[12]\d|3[01])[-./](?:0?[1-9]|[12]\d|3[01])[-./](?:\d{4}|\d{2}))(?!\d)"
        ),
        cap_token=re.compile(rf"(?<![\w'’@#/\\&])[{upper}][\w'’]*(?:-[\w'’]+)*"),
        any_token=re.compile(rf"(?<![\w'’@#/\\&]){letter}[\w'’]*(?:-[\w'’]+)*"),
        person_cue=re.compile(
            _cue_pattern(r"\b", f"(?=[{upper}{CJK_LETTERS}])", r"\s", r"(?=\S)")
            + "|"
            + _native_cue_pattern(r"\s", r"(?=\S)")
        ),
        chained_cue=re.compile(
            _cue_pattern(r"\b", f"(?=[{upper}{CJK_LETTERS}])", r"\s", r"(?=\S)", CHAINED_CUE_KINDS)
        ),
        strong_cue=re.compile(rf"(?i:{strong_intros})\b\s*:?\s*|{native_intros}"),
        greeting=re.compile(rf"(?i:{greetings})\b"),
        cjk_run=re.compile(rf"[{CJK_LETTERS}][{CJK_LETTERS}・ー]*"),
        chinese_intro=re.compile("|".join(CHINESE_INTROS)),
        chinese_after_name=re.compile(CHINESE_AFTER_NAME),
        non_latin_word=re.compile(
            rf"(?:(?=[^\W\d_])[{NON_LATIN_CASED}])+(?:-(?:(?=[^\W\d_])[{NON_LATIN_CASED}])+)*"
        ),
        vocative_cue=re.compile(_vocative_pattern(r"\b", f"(?=[{upper}])", r"\s")),
        possessive_cue=re.compile(rf"(?<![\w'’@#/\\&]){possessive}\b"),
        name_suffix=re.compile(NAME_SUFFIX_RE),
        particle_gap=re.compile(
            rf"^[ \t](?:(?:{_alt(sorted(NAME_PARTICLES))})[ \t]){{1,2}}$", re.IGNORECASE
        ),
        us_street=re.compile(us_street),
        after_street=re.compile(after_street),
        fused_street=re.compile(fused_street),
        line_street=re.compile(line_street),
        unit_alone=re.compile(unit_alone),
        po_box=re.compile(po_box),
        military=re.compile(military),
        zip_cue=re.compile(zip_cue),
        # 'CP 1100-053': Portuguese 'código postal' before a postcode of that form only
        cp_cue=re.compile(r"(?<![\w.])(?:CP|C\.P\.)[ \t]*:?[ \t]*(\d{4}-\d{3})(?![\w-])"),
        # a full UK postcode, upper case, one space ('SW1A 1AA'): see _check_postcode
        uk_postcode=re.compile(r"(?<![\w'’-])([A-Z]{1,2}\d[A-Z\d]?) (\d[A-Z]{2})(?![\w'’-])"),
        prefix_street=re.compile(
            rf"(?<![\w.,/-])(?:(?P<num1>{house})[ \t]+)?(?:{house}[ \t]+)?"
            rf"(?P<type>(?i:{_alt(STREET_PREFIXES)}))(?:\.?[ \t]+|(?<=/)(?=[{GLUED_STREET_CAPITALS}]))"
            # a number before '%' is no house number ('c/ IVA 21%': Spanish 'con IVA')
            rf"(?P<name>(?:{sword}[ \t]+){{0,4}}{sword})(?:,?[ \t]+(?P<num2>{house})(?![\w'’%])\.?)?"
        ),
        address_cue=re.compile(_address_cue_pattern(r"\b", r"\s")),
        number_gap=re.compile(r"\.?[ \t]+\d"),
        address_cont=re.compile(
            # a line may start with an e-mail quote ('> ', '> > ') the address goes on after
            rf"(?P<sep>[ \t]*,[ \t]*(?:\n[ \t]*{quote})?|[ \t]*\n[ \t]*{quote}(?:,[ \t]*)?|[ \t]+)"
            rf"(?P<part>(?P<unit>{unit})"
            rf"|(?P<zip>(?:{zip_}|{zip_any_case})(?![\w'’-]))"
            rf"|(?P<state>(?:{state})(?![\w'’-])(?:[ \t]+(?:{zip_})(?![\w'’-]))?)"
            rf"|(?P<city>{city}(?:[ \t]*,?[ \t]*(?P<cstate>{state})(?![\w'’-]))?"
            rf"(?:[ \t]+(?P<czip>{zip_})(?![\w'’-]))?)"
            rf"|(?P<lcity>{lower_city})[ \t]+(?P<lzip>{zip_any_case})(?![\w'’-]))"
        ),
        body_token=re.compile(
            rf"[ \t]*(?:(?P<nl>\n[ \t]*{quote})|(?P<comma>,)|(?P<num>{house})(?![\w'’])\.?"
            rf"|(?P<word>{letter}[\w'’-]*\.?))"
        ),
    )


def _address_cue_pattern(b: str, s: str) -> str:
    """Phrases after which an address is written ('lives at', 'ship it to', 'address:').

    'address:' ends in no word boundary: the colon is followed by a space or the value
    ('Address: Grote Baan 477'), so only the phrases that end in a word need one after.
    """
    return (
        rf"{b}(?i:address{s}*:|(?:address{s}+is|(?:lives?|living|resides?|residing|located|based"
        rf"|stay(?:s|ing)?|arrived|meet{s}+(?:me|us)|(?:office|home|house){s}+is){s}+at"
        rf"|(?:moved|moving|relocated|relocating){s}+to"
        rf"|(?:ship(?:ped|ping)?|deliver(?:ed|y)?|send|sent|mail(?:ed)?|post(?:ed)?"
        rf"|return(?:ed)?|forward(?:ed)?)(?:{s}+(?:it|them|this|that|a{s}+new{s}+one"
        rf"|the{s}+\w+))?{s}+to|corner{s}+of|address{s}+(?:with|to)|new{s}+address(?:{s}+is)?){b})"
        rf"[ \t]*:?[ \t]*(?:\n[ \t]*(?:>[ \t]*){{0,3}})*"  # lines may start with an e-mail quote
    )


@functools.cache
def _rust() -> dict[str, str]:
    """Candidate patterns for the Rust engine (polars); each a superset of what Python keeps."""
    b, s = r"(?-u:\b)", r"\s"
    up = r"(?:\p{Lu}|\p{Lt})"
    word = r"\S+"  # any word: the window only has to contain the Python match
    house = r"\d{1,6}[A-Za-z]?(?:[-/]\d{1,5}[A-Za-z]?)?"
    sfx_pre = _alt((*STREET_SUFFIXES, *STREET_PREFIXES))
    return {
        # also percent-encoded in a URL's query ('?email=jdoe%40example.com')
        "email": r"[\w.%+-]+(?:@|%40)(?:[\w-]+\.)+\p{L}{2,}",
        "email_obf": r"[\w.+-]+[ \t]*[\[(](?i:at)[\])][ \t]*[\w-]+"
        r"(?:[ \t]*(?:[\[(](?i:dot)[\])]|\.)[ \t]*[\w-]{2,})+",
        "ip": r"\d{1,3}(?:\.\d{1,3}){3}(?:/\d{1,2})?"
        r"|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.\d{1,3}){0,3}(?:/\d{1,3})?",
        # a '+' also percent-encoded in a URL's query ('?phone=%2B14155550132')
        # and a space as '%20' or '+' ('%2B1%20415%20555%200132', '+1+415+555+0132')
        "num": r"(?:\+|%2[Bb])?\(?\d(?:(?:[ .\-+]|%20|[ ]?\([ ]?|\)[ ]?|[ ]-[ ]|\)[.\-])?\d){5,}"
        r"(?:[ ]?(?i:x|ext\.?|extension)[ ]?\d{1,6})?",
        "iban": r"[A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]){11,32}",
        "card_tail": rf"{b}(?i:card|visa|mastercard|amex|account|acct){b}[^.\n]{{0,24}}?"
        r"(?i:ending|ends|last[ \t]+(?:4|four))[^\d\n]{0,16}\d{4}|(?:[xX*•]{4}[ -]?){2,3}[xX*•]{0,4}[ -]?\d{4}",
        # two address patterns, not one: a single alternation of all forms blows up the
        # lazy DFA (measured 4x slower than the two passes together)
        "addr_num": "|".join(
            (
                rf"{house}(?:[ \t]+\d{{1,6}})?[ \t]+(?:{word}[ \t]+){{0,5}}(?i:{sfx_pre}){b}",
                rf"(?m:^)[^\w\n]{{0,6}}\d{{1,6}}[ \t]+(?:{word}[ \t]+){{1,5}}\d{{1,6}}",
            )
        ),
        "addr_word": "|".join(
            (
                # also 'C/' glued to the name ('C/Mayor 10'): in this branch, as a branch of
                # its own made this pattern ~15% slower on presidio-research
                rf"{b}(?:(?i:{_alt(STREET_PREFIXES)})\.?[ \t]+|[Cc]/)(?:{word}[ \t]+){{0,5}}\d{{1,6}}",
                rf"{b}(?i:{_alt(STREET_TYPES_AFTER)})\.?[ \t]+\d{{1,6}}",
                rf"(?i:{_alt(FUSED_STREET_ENDINGS)})\.?[ \t]+\d{{1,6}}",
                rf"{b}(?i:apartment|apt|suite|ste|flat)\.?[ \t]*#?[ \t]*\d",
                rf"{b}(?i:box)[ \t]+\d|{b}(?i:[afd]po)[ \t]+(?i:a[aep])[ \t]+\d",
                # a US/European postcode, or a UK or Canadian one's outward code ('SW1A', 'K1A', 'sw1a')
                rf"{b}(?i:zip|postal|post)[^\n\d]{{0,14}}(?:\d{{4}}|[A-Za-z]\d)",
                # a Portuguese postcode after 'CP' ('código postal': 'CP 1100-053')
                rf"{b}(?:CP|C\.P\.)[ \t]*:?[ \t]*\d{{4}}-\d{{3}}",
            )
        ),
        # a full UK postcode, no cue needed ('SW1A 1AA'): a pass of its own, as in 'addr_word'
        # a street-prefix match ahead of it could take its first half ('via SW1A 1')
        "postcode": rf"{b}[A-Z]{{1,2}}[0-9][A-Z0-9]? [0-9][A-Z]{{2}}{b}",
        "addr_cue": _address_cue_pattern(b, s),
        "cue": _cue_pattern(b, up, s, up) + "|" + _vocative_pattern(b, up, s) + "|" + _lower_cue_pattern(b, s)
        # a name before its owner's details ('Zlata's address'): led by a capital, not a
        # literal, but measured ~3 ms more on 13k texts (the cue pattern takes ~17 ms there)
        + "|" + _possessive_pattern(up, s),
        # in a text without capitals: where Python's cue pattern may start (no follower)
        "cue_lower": _cue_pattern(b, "", s, ""),
        # a 'cue' match that is a greeting to no one in particular ('Hi there', 'Dear team')
        "cue_filler": rf"^(?i:{_GREETINGS.replace('{S}', s)}){s}*,?{s}*(?i:{_alt(GREETING_FILLERS)})$",
        # name intros in other languages: inside the 'cue' pattern they made it ~15% slower
        # on every text; on their own (literals, a fast scan) they cost next to nothing
        "cue_native": _native_cue_pattern(s, ""),
        "token": rf"{up}[\p{{Ll}}'’][\p{{L}}'’]*(?:-[\p{{L}}'’]+)*",
        # gates: something every match of the gated patterns contains
        "upper": r"\p{Lu}|\p{Lt}",
        "digit": r"\d",
        "ip_gate": r"\d|:[0-9A-Fa-f]{0,4}:",  # IPv4 needs digits, IPv6 two close colons
        "obf_gate": r"[\[(](?i:at)[\])]",
        # a space, a digit, two capitals: a literal-led scan (~4x faster than the postcode
        # pattern on the texts with digits, which would otherwise all meet it)
        "postcode_gate": r" [0-9][A-Z][A-Z]",
    }


_GATES = ("upper", "digit", "ip_gate", "obf_gate")
# Gates scanned only when a kind they gate is asked for (the others are columns of every
# batch); each is written to mean the same to Python's ``re`` (see _few_items)
_LAZY_GATES = ("postcode_gate",)
# Candidate kinds by the gate their texts must pass (None: every text). Every match of
# these patterns holds a digit, and so does every address Python accepts after a cue.
_GATED_KINDS: dict[str | None, tuple[str, ...]] = {
    None: ("email", "cue_native"),  # a literal scan: cheaper than any gate would be
    "obf_gate": ("email_obf",),
    "ip_gate": ("ip",),
    "digit": ("num", "iban", "card_tail", "addr_num", "addr_word", "addr_cue"),
    "postcode_gate": ("postcode",),
    "upper": ("cue",),
    "lower": ("cue_lower",),
}


CANDIDATE_KINDS = (
    "email", "email_obf", "ip", "num", "iban", "card_tail", "addr_num", "addr_word", "addr_cue",
    "postcode", "cue", "cue_native",
)  # fmt: skip
# What each kind of candidate can turn into ("names": listed names Rust found in a text).
KIND_ENTITIES: dict[str, frozenset[str]] = {
    "email": frozenset({"EMAIL"}),
    "email_obf": frozenset({"EMAIL"}),
    "ip": frozenset({"IP_ADDRESS"}),
    "num": frozenset({"PHONE", "CREDIT_CARD", "US_SSN"}),
    "iban": frozenset({"IBAN"}),
    "card_tail": frozenset({"CREDIT_CARD"}),
    "addr_num": frozenset({"STREET_ADDRESS"}),
    "addr_word": frozenset({"STREET_ADDRESS"}),
    "addr_cue": frozenset({"STREET_ADDRESS"}),
    "postcode": frozenset({"STREET_ADDRESS"}),
    "cue": frozenset({"PERSON"}),
    "cue_native": frozenset({"PERSON"}),
    "names": frozenset({"PERSON"}),
}


@functools.cache
def detector_kinds(entities: frozenset[str]) -> frozenset[str]:
    """The candidate kinds whose detectors can change the spans of ``entities``.

    Why not only the kinds of ``entities``: an overlap goes to the higher priority and
    trims the lower span, so every type that outranks an asked one must still be found.
    Types below all the asked ones cannot change them, and their detectors (names and
    addresses, the costly ones) are skipped: asking for fewer types costs less.
    """
    unknown = entities - set(ENTITY_TYPES)
    if unknown:
        raise ValueError(f"unknown entity types {sorted(unknown)}; known: {list(ENTITY_TYPES)}")
    if not entities:
        return frozenset()
    floor = min(PRIORITY[e] for e in entities)
    needed = {e for e in ENTITY_TYPES if PRIORITY[e] >= floor}
    return frozenset(k for k, found in KIND_ENTITIES.items() if found & needed)


ALL_KINDS = frozenset(KIND_ENTITIES)


# =======================================================================================
# checksums and validators
# =======================================================================================


def luhn_valid(digits: str) -> bool:
    """Luhn mod-10 check (payment cards)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = ord(ch) - 48
        if i % 2:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """ISO 13616 check: known country, exact length, mod-97 of the rearranged number == 1."""
    iban = iban.replace(" ", "").upper()
    if len(iban) < 5 or IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    if not (iban.isascii() and iban.isalnum() and iban[2:4].isdigit()):
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def ssn_valid(area: str, group: str, serial: str) -> bool:
    """SSA rules: area not 000/666/9xx, group not 00, serial not 0000."""
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _ascii_digits(text: str) -> str:
    return "".join(c for c in text if "0" <= c <= "9")


Candidate = tuple[str, int, int]


Check = Callable[[int, int], Iterable[Candidate]]
"""What a candidate kind's validator is to :func:`_checked`: (start, end) of a Rust match -> candidates."""


def _checked(text: str, items: Sequence[str] | None, check: Check) -> Iterator[Candidate]:
    """Candidates that ``check`` finds at the Rust matches ``items`` (non-overlapping, in order).

    Rust gives the matched strings, not where they are. Each is looked for after the
    previous one, and where ``check`` refuses an occurrence the next one is tried: the
    same string can occur earlier where the Rust pattern itself did not match (its ``\b``
    failed: ``giftcard ending 4821`` before ``card ending 4821``, ``StMr. Smith`` before
    ``Mr. Smith``), and located there the real match would never be checked. Each
    occurrence of a string is checked at most once, so the work stays linear in the text.
    """
    cursor = 0
    resume: dict[str, int] = {}  # where the next look for a string starts: earlier ones were checked
    for item in items or ():
        pos = text.find(item, max(cursor, resume.get(item, 0)))
        if pos < 0:
            continue
        # the Rust match is here or later, so the next one is after here: it is looked for
        # from here even when a later occurrence of this string is the one taken, or the
        # matches in between would be skipped ('A415-555-0134: card ..., 415-555-0134')
        cursor = pos + len(item)
        while pos >= 0:
            found = list(check(pos, pos + len(item)))
            if found:
                yield from found
                break
            pos = text.find(item, pos + 1)
        resume[item] = pos + 1 if pos >= 0 else len(text) + 1


# ---------------------------------------------------------------------------------------
# structured entities
# ---------------------------------------------------------------------------------------


def _check_ip(text: str, start: int, end: int, p: _Py) -> Iterator[Candidate]:
    value = text[start:end]
    if ":" not in value:
        m = p.ipv4.match(text, start, min(len(text), end + 2))
        if m and m.end() >= end - 3:
            yield ("IP_ADDRESS", m.start(), m.end())
        return
    before = text[start - 1 : start]
    after = text[end : end + 1]
    if (before and (before.isalnum() or before in "_:.")) or (
        after and (after.isalnum() or after == "_")
    ):
        return
    addr = value.split("/", 1)[0]
    try:
        ipaddress.IPv6Address(addr)
    except ValueError:
        return
    if any(c.isdigit() for c in addr) or addr.count(":") >= IPV6_MIN_COLONS_WITHOUT_DIGIT:
        yield ("IP_ADDRESS", start, end)


def _check_number(
    text: str, start: int, end: int, p: _Py, other: Sequence[Candidate] = ()
) -> Iterator[Candidate]:
    """A run of digit groups: card (Luhn), SSN (rules, context) and/or phone (shape, context).

    Phones are looked for only beside the cards, SSNs and ``other`` values (e-mails, IPs,
    IBANs) found in the run, each piece searched as if those were already placeholders: a second
    pass then sees what the first saw.
    """
    if p.ipv4_shape.fullmatch(text, start, end):
        return  # an IPv4 address: the IP check has it
    stop = min(len(text), end + 2)  # the patterns look two characters past a number
    n_digits = sum(map(str.isdigit, text[start:end]))
    taken: list[Candidate] = []
    if n_digits >= CARD_MIN_DIGITS:
        taken.extend(_check_card(text, start, stop, p))
    if n_digits >= SSN_DIGITS:
        taken.extend(_check_ssn(text, start, stop, p))
    yield from taken
    blocked = sorted((s, e) for _, s, e in (*taken, *other) if s < stop and e > start)
    for lo, hi in _subtract(max(0, start - 1), stop, blocked):
        pos = lo
        while (m := p.phone.search(text, pos, hi)) is not None:
            found = _valid_phone(text, m, p)
            if found:
                yield ("PHONE", *found)
            pos = found[1] if found else m.end()


def _valid_phone(text: str, m: re.Match[str], p: _Py) -> tuple[int, int] | None:
    """The phone number ``m`` starts, cut back group by group if it ran into other digits."""
    while True:
        core = m.group("core")
        n_digits = _phone_digit_count(core) + _phone_digit_count(m.group("cc"))
        if PHONE_MIN_DIGITS <= n_digits <= PHONE_MAX_DIGITS and (
            _phone_shape_ok(m, core, n_digits, p) or _phone_context(text, m, p)
        ):
            return m.start(), m.end()
        if n_digits <= PHONE_MAX_DIGITS:
            return None
        cut = max(text.rfind(sep, m.start(), m.end() - 1) for sep in PHONE_CUT_AT)
        shorter = p.phone.match(text, m.start(), cut) if cut > m.start() else None
        if shorter is None:
            return None
        m = shorter


PHONE_CUT_AT = " .-%+"  # where a number that ran on is cut back: a separator or an escape's '%'
_URL_ESCAPES = re.compile("%2[0Bb]")
_PHONE_SEPARATORS = re.compile(r"(?:[ .()+-]|%20)+")


def _phone_digit_count(part: str | None) -> int:
    """Digits in part of a phone number, less those of its URL escapes ('%2B', '%20')."""
    return len(_ascii_digits(_URL_ESCAPES.sub("", part or "")))


def _check_card(text: str, start: int, stop: int, p: _Py) -> Iterator[Candidate]:
    for m in p.card.finditer(text, start, stop):
        digits = _ascii_digits(m.group(0))
        if (
            CARD_MIN_DIGITS <= len(digits) <= CARD_MAX_DIGITS
            and digits[0] in CARD_FIRST_DIGITS
            and len(set(digits)) > 1
            and luhn_valid(digits)
        ):
            yield ("CREDIT_CARD", m.start(), m.end())


def _check_ssn(text: str, start: int, stop: int, p: _Py) -> Iterator[Candidate]:
    for m in p.ssn.finditer(text, start, stop):
        if ssn_valid(m.group(1), m.group(3), m.group(4)):
            yield ("US_SSN", m.start(), m.end())
    for m in p.ssn_plain.finditer(text, start, stop):
        v = m.group(0)
        if ssn_valid(v[:3], v[3:5], v[5:]) and _has_cue(
            p.ssn_cue, text, max(0, m.start() - CONTEXT_WINDOW), m.start()
        ):
            yield ("US_SSN", m.start(), m.end())


def _phone_shape_ok(m: re.Match[str], core: str, n_digits: int, p: _Py) -> bool:
    """Formats that read as a phone number without any cue word."""
    if p.date_like.match(core):
        return False
    groups = [g for g in _PHONE_SEPARATORS.split(core) if g]
    if "+" in m.group(0)[1:]:  # a space written '+' in a URL, or a sum ('+10+20+30+40')
        return n_digits >= PHONE_PLAIN_MIN_DIGITS
    if m.group("cc") or m.group("ext") or core.startswith("("):
        return n_digits > PHONE_MIN_DIGITS
    if len(groups[0]) > PHONE_PLAIN_MAX_DIGITS:  # an order number or a timestamp as often as a phone
        return False
    if len(groups) == 1:
        return n_digits >= PHONE_PLAIN_MIN_DIGITS and not core.startswith("0000")
    if n_digits >= PHONE_PLAIN_MIN_DIGITS:
        return True
    return n_digits >= PHONE_GROUPED_MIN_DIGITS and len(groups) >= 3


def _phone_context(text: str, m: re.Match[str], p: _Py) -> bool:
    """A phone cue shortly before the number (same line), or a label like 'office' after it."""
    line_start = text.rfind("\n", 0, m.start()) + 1
    start = max(line_start, m.start() - CONTEXT_WINDOW)
    if _has_cue(p.phone_cue, text, start, m.start()):
        return True
    after = p.phone_suffix_cue.match(text[m.end() : m.end() + PHONE_SUFFIX_WINDOW])
    return after is not None and not _in_placeholder(text, m.end() + after.end() - 1)


def _has_cue(cue: re.Pattern[str], text: str, start: int, end: int) -> bool:
    """A cue word in ``text[start:end]`` that is not part of a placeholder.

    Why: '<PHONE>' or '<US_SSN>' left by an earlier pass must not count as the words
    'phone' or 'SSN', or a second pass would find what the first did not (idempotency).
    """
    return any(not _in_placeholder(text, c.start()) for c in cue.finditer(text, start, end))


def _in_placeholder(text: str, pos: int) -> bool:
    """``pos`` lies in an upper-case word wrapped in placeholder brackets or joined by '_'."""
    i = j = pos
    while i > 0 and (text[i - 1].isupper() or text[i - 1] == "_"):
        i -= 1
    while j < len(text) and (text[j].isupper() or text[j] == "_"):
        j += 1
    return (
        i < j
        and text[i - 1 : i] in PLACEHOLDER_BRACKETS
        and text[j : j + 1] in PLACEHOLDER_BRACKETS
    )


def _check_iban(text: str, start: int, end: int, p: _Py) -> Iterator[Candidate]:
    for m in p.iban_start.finditer(text, start, end):
        length = IBAN_LENGTHS.get(m.group(0)[:2].upper())
        if length is None:
            continue
        stop = _take_iban_chars(text, m.start(), length)
        if stop and iban_valid(text[m.start() : stop]):
            yield ("IBAN", m.start(), stop)


def _take_iban_chars(text: str, start: int, length: int) -> int:
    """End index after exactly ``length`` alphanumerics (single spaces allowed between).

    Why not a regex: the BBAN length depends on the country, and a greedy pattern would
    swallow the next word of the sentence ("GB82 WEST 1234 5698 7654 32 is ...").
    """
    count, i, n = 0, start, len(text)
    while i < n and count < length:
        c = text[i]
        if c.isascii() and c.isalnum():
            count += 1
            i += 1
        elif c == " " and count and i + 1 < n and text[i + 1].isascii() and text[i + 1].isalnum():
            i += 1
        else:
            break
    if count != length or (i < n and text[i].isascii() and text[i].isalnum()):
        return 0
    return i


def _check_card_tail(text: str, start: int, end: int, p: _Py) -> Iterator[Candidate]:
    """'card ending in 4242', 'xxxx-xxxx-xxxx-4242': the visible digits of a card."""
    m = p.card_tail.search(text, start, min(len(text), end + 1))
    if m:
        group = 1 if m.group(1) else 2
        yield ("CREDIT_CARD", m.start(group), m.end(group))


# ---------------------------------------------------------------------------------------
# PERSON
# ---------------------------------------------------------------------------------------

_STRONG, _AMBIG, _UNKNOWN, _OTHER = 3, 2, 1, 0


@functools.lru_cache(maxsize=TOKEN_CACHE_SIZE)
def _token_class(token: str) -> int:
    """How much a capitalised token says 'person name'.

    STRONG: a listed name that is not also a common word, place or product.
    AMBIG: a listed name that is also an ordinary word ("Will", "Grace", "Jordan").
    UNKNOWN: a plain alphabetic word in no list (could be a rare surname).
    OTHER: anything else (common word, product, acronym, digits).
    """
    core = _strip_possessive(token)
    if "-" in core:
        parts = [_token_class(part) for part in core.split("-") if part]
        if not parts or _OTHER in parts:
            return _OTHER
        return max(parts)
    core = core.replace("’", "'")  # O’Brien = O'Brien
    if not core.replace("'", "").isalpha() or (len(core) > 1 and core.isupper()):
        return _OTHER
    lex = lexicon()
    low = core.lower()
    if low in lex.not_names:
        return _OTHER
    if low in lex.strong_names:
        return _STRONG
    if low in lex.names:
        return _AMBIG
    if low in lex.common or low in lex.places or low in STOPWORDS:
        return _OTHER
    return _UNKNOWN


def _strip_possessive(token: str) -> str:
    for tail in ("'s", "’s", "'", "’"):
        if token.endswith(tail):
            return token[: -len(tail)]
    return token


def _is_sentence_start(text: str, start: int) -> bool:
    """True when only spaces, quotes or bullets separate ``start`` from a sentence end."""
    i = start - 1
    while i >= 0 and text[i] in " \t\"'“”‘’(*•-–—>?#":
        i -= 1
    return i < 0 or text[i] in ".!?\n:;"


_LEAD = -1  # in _names_in: an unlisted word at a sentence start, a name only as an item of a list


def _names_in(text: str, start: int, end: int, lowercase_mode: bool, p: _Py) -> Iterator[Candidate]:
    """Runs of adjacent capitalised tokens in ``text[start:end]`` holding a strong name.

    In mixed-case text, also every run of a list of names that holds one (see
    :func:`_accept_runs`).
    """
    token_re = p.any_token if lowercase_mode else p.cap_token
    run: list[tuple[int, int, int]] = []  # (start, end, class)
    runs: list[list[tuple[int, int, int]]] = []  # every run, in order (for lists of names)
    listed = False  # two runs of mixed-case text are joined as items of a list ('Ana and Ben')
    place_end = -1  # end of a place prefix ("San", "New") the next token may continue
    for m in token_re.finditer(text, start, end):
        tok = m.group()
        tok_start, tok_end = m.span()
        cls, is_place, core_len = _token_info(tok)
        if place_end >= 0 and tok_start == place_end + 1 and text[place_end] == " ":
            cls = _OTHER  # "San Francisco", "New York", "Fort Worth": a place, both words
            if run and run[-1][1] == place_end:
                run.pop()
        place_end = tok_end if is_place else -1
        if lowercase_mode:
            if cls == _AMBIG:
                cls = _OTHER  # "will", "mark": in lower-case text only listed, unambiguous names
        else:
            if cls == _UNKNOWN and _is_sentence_start(text, tok_start):
                cls = _LEAD  # a capital after a full stop is no evidence (but a list item may be)
            if tok_end - tok_start == 1:
                cls = _UNKNOWN if text[tok_end : tok_end + 1] == "." and tok not in "AI" else _OTHER
        if run and (cls <= _OTHER or not _joinable(text, run[-1][1], tok_start, p)):
            yield from _accept_run(text, run, p)
            runs.append(run)
            run = []
        if cls > _OTHER:
            # a run starts: is it the next item of a list? (no token may stand between:
            # the gap of a list holds none)
            if not (run or listed) and runs:
                listed = _list_gap(text, runs[-1][-1][1], tok_start) is not None
            run.append((tok_start, tok_start + core_len, cls))
        elif cls == _LEAD:  # after a sentence's end, so never after a list's gap
            runs.append([(tok_start, tok_start + core_len, cls)])  # a run of its own
    if run:
        yield from _accept_run(text, run, p)
        runs.append(run)
    if listed and not lowercase_mode:
        yield from _accept_runs(text, runs, p)


# What joins two items of a list of names ('Ana, Ben and Cleo', 'Sousa & Ball', 'Ana or Ben')
_NAME_LIST_GAP = re.compile(r",[ \t]*(?:(?:and|or|&)[ \t]+)?|[ \t]+(?:and|or|&)[ \t]+")
MIN_NAME_LIST_ITEMS = 3  # fewer: two names joined by 'and', '&' or 'or', with no comma
_NUMBER_AFTER = re.compile(r"[ \t]+\d")  # 'Priya and Truhlářská 996': a street or a version, no name
# Listed names that in a list are a relation or a firm's name ('Steptoe and Son'), no person
NOT_LIST_NAMES = frozenset(("son", "sister", "brother", "daughter", "mother", "father", "baby"))


def _list_gap(text: str, end: int, start: int) -> re.Match[str] | None:
    """``text[end:start]`` joins two items of a list of names (``end < start``).

    Most gaps between two runs are a space and a word ('Priya went'): its first letter
    rules them out before the pattern is tried.
    """
    first = text[end]
    if first == "," or (first in " \t" and text[end + 1] in "ao& \t"):
        return _NAME_LIST_GAP.fullmatch(text, end, start)
    return None


def _accept_runs(text: str, runs: list[list[tuple[int, int, int]]], p: _Py) -> Iterator[Candidate]:
    """The runs of mixed-case text that are names as items of a list of names holding a
    strong one (those holding a strong name themselves are names already).

    Why: a name no list has as a sure one ('Mark' is also a word, 'Zulunil' is in no list)
    is a name as an item of a list with a sure one ('Siobhan and Mark', 'Zulunil, Siobhan
    and Abakumova'). A list is three runs or more joined by ', ', 'and', 'or' or '&', or
    two joined by 'and', '&' or 'or' alone: two joined by a comma are as often a name and
    the sentence after it ('Priya, Zendesk is down', 'based in London, and Priya is').
    An item of such a list is no name where :func:`_list_item_ok` says so.
    """
    strong = [any(cls == _STRONG for _, _, cls in run) for run in runs]
    i, n = 0, len(runs)
    while i < n - 1:
        j, comma = i, False
        while j + 1 < n and (gap := _list_gap(text, runs[j][-1][1], runs[j + 1][0][0])):
            comma = comma or "," in gap.group()
            j += 1
        if (j - i + 1 >= MIN_NAME_LIST_ITEMS or (j > i and not comma)) and any(strong[i : j + 1]):
            for k in range(i, j + 1):  # the parts with no strong name of its runs
                if (not strong[k] or len(runs[k]) > MAX_NAME_TOKENS) and _list_item_ok(text, runs[k]):
                    yield from _accept_run(text, runs[k], p, listed=True)
        i = j + 1


def _list_item_ok(text: str, run: list[tuple[int, int, int]]) -> bool:
    """An item of a list of names is one: no number follows it (a street or a version: 'Priya
    and Truhlářská 996'), no 'the' goes before it ('the Ngai Tahu and ... tribes'), and no
    word of it is a place ('London', 'Jordan'), a relation ('Steptoe and Son') or a function
    word that a name list has too ('Marge Simpson or The Simpsons')."""
    start = run[0][0]
    if _NUMBER_AFTER.match(text, run[-1][1]) or text[max(0, start - 4) : start].lower() == "the ":
        return False
    places = lexicon().places
    for s, e, _ in run:
        word = text[s:e].lower()
        if word in places or word in NOT_LIST_NAMES or word in STOPWORDS:
            return False
    return True


@functools.lru_cache(maxsize=TOKEN_CACHE_SIZE)
def _token_info(token: str) -> tuple[int, bool, int]:
    """(class, is a place prefix, length without a possessive ending) of a token, cached."""
    return _token_class(token), token.lower() in PLACE_PREFIXES, len(_strip_possessive(token))


def _has_strong_name(text: str, p: _Py) -> bool:
    """Whether a token of ``text`` is a strong name (a cheap look before reading runs)."""
    return any(_token_class(token) == _STRONG for token in p.any_token.findall(text))


def _joinable(text: str, prev_end: int, start: int, p: _Py) -> bool:
    """Two tokens belong to one name: one space, particles ('van der'), or an initial's dot."""
    gap = text[prev_end:start]
    if gap == " ":
        return True
    if gap in (". ", "."):
        return (
            prev_end >= 1
            and text[prev_end - 1].isupper()
            and (prev_end < 2 or not text[prev_end - 2].isalnum())
        )
    return bool(p.particle_gap.match(gap))


def _accept_run(
    text: str, run: list[tuple[int, int, int]], p: _Py, listed: bool = False
) -> Iterator[Candidate]:
    """The parts of a run (MAX_NAME_TOKENS words each) holding a strong name, or, if
    ``listed`` (the run is an item of a list of names), the parts holding none."""
    for i in range(0, len(run), MAX_NAME_TOKENS):
        chunk = run[i : i + MAX_NAME_TOKENS]
        if any(cls == _STRONG for _, _, cls in chunk) != listed:
            end = chunk[-1][1]
            m = p.name_suffix.match(text, end)
            yield ("PERSON", chunk[0][0], m.end() if m else end)


def _names_after(
    text: str, pos: int, p: _Py, followed_by: str | None = None
) -> Iterator[Candidate]:
    """Up to MAX_CUE_NAME_TOKENS name-like words right after a cue at ``pos``.

    After 'Dear', 'my name is', 'Mr.' or 'Regards,' a capitalised word that is no common
    word is taken as a name even if no list has it; a lower-case one only if listed.
    """
    lex = lexicon()
    before = text[max(0, pos - HONORIFIC_LOOKBACK) : pos].rstrip(" \t.").lower().rsplit(None, 1)
    honorific = bool(before) and before[-1] in _HONORIFIC_SET
    start = end = -1
    i = pos
    for _ in range(MAX_CUE_NAME_TOKENS):
        m = p.any_token.match(text, i)
        if not m:
            break
        core = _strip_possessive(m.group(0))
        low = core.lower()
        if not core.replace("-", "").isalpha() or low in lex.not_names or low in STOPWORDS:
            break
        if core[:1].isupper():
            cls = _token_class(m.group(0))
            ok = cls != _OTHER or honorific or (core.isupper() and low in lex.names)
        else:
            ok = low in lex.names and low not in lex.common
        if not ok:
            break
        if start < 0:
            start = m.start()
        end = m.start() + len(core)
        if text[m.end() : m.end() + 1] != " " or end != m.end():
            break
        i = m.end() + 1
    if start >= 0 and (followed_by is None or text[end : end + 1] in followed_by):
        suffix = p.name_suffix.match(text, end)
        yield ("PERSON", start, suffix.end() if suffix else end)


VOCATIVE_END = ",!?.;"
GREETING_NAME_END = ",!?;:\n"  # what follows a lower-case name after a greeting ('Hi john,')
# Listed names that after a greeting are rarely a person ('Hey ho, let's go', 'hey ai, ...')
GREETING_NOT_NAMES = frozenset({"ho", "kitty", "ai", "nana"})


def _cued_names(text: str, start: int, p: _Py) -> Iterator[Candidate]:
    """Names after the cue that starts at ``start`` (a Rust cue candidate)."""
    m = p.person_cue.match(text, start)
    if m:
        yield from _names_after_cue(text, m, p, mixed_case=True)
        return
    m = p.vocative_cue.match(text, start)
    if m is None:
        yield from _possessive_name(text, start, p)
        return
    found = next(_names_after(text, m.end(), p, followed_by=VOCATIVE_END), None)
    if found is not None:
        yield found
        return
    nested = _chained_cue(text, m.end(), p)  # 'Sure, I'm Tihomir': Rust took the 'I'
    if nested is not None:
        yield from _names_after_cue(text, nested, p, mixed_case=True)


def _possessive_name(text: str, start: int, p: _Py) -> Iterator[Candidate]:
    """The name before ''s address', ''s phone number', ... in a Rust match at ``start``.

    The words of the match's run are read from its end: each one that is no common
    word, function word, product or calendar word is part of the name ('Send Zlata
    Novak's address' takes 'Zlata Novak'; 'Google's address', 'Monday's email' none).
    """
    m = p.possessive_cue.match(text, start)
    if m is None:
        return
    words = list(p.cap_token.finditer(text, start, m.end("run") + 2))  # with its ''s
    name_start = -1
    end = start
    for i in range(len(words) - 1, -1, -1):
        tok = words[i]
        core = _strip_possessive(tok.group())
        if core.lower() in STOPWORDS or _token_class(tok.group()) == _OTHER:  # 'The' is a listed name too
            break
        if i == len(words) - 1:
            end = tok.start() + len(core)
        name_start = tok.start()
        if i and text[words[i - 1].end() : tok.start()] != " ":
            break
    if name_start >= 0:
        yield ("PERSON", name_start, end)


MAX_CHAINED_CUES = 4  # cues read one right after another ('Hi, my name is Dr. X'): no more
CHAIN_WORD_WINDOW = 16  # characters read for the first word of a chained cue (longer: no cue)


def _lead_words(*alternations: str) -> frozenset[str]:
    """The lower-case words that can begin a phrase of the cue ``alternations`` (a superset).

    Each alternative's first word, with groups opened ('(?:reported|written){S}+by' begins
    with either word). A word after an optional group at a phrase's start would be
    missed; no chained phrase has one (a unit test reads every chained cue through it).
    """
    words: set[str] = set()
    for alternation in alternations:
        for piece in alternation.replace("{S}", " ").split("|"):
            m = re.match(r"(?:\(\?:|\()*([^\W\d_][\w'’.]*)", piece)
            if m:
                words.add(m.group(1).lower())
    return frozenset(words)


# What a chained cue (CHAINED_CUE_KINDS) starts with: a word check first, as a failed
# match of the cue pattern after every 'Kind regards,\nCustomer Support' cost 5%.
_CHAIN_START_WORDS = _lead_words(_SELF_INTROS, _NAME_INTROS, "|".join(HONORIFICS))


def _chained_cue(text: str, pos: int, p: _Py) -> re.Match[str] | None:
    """The self-intro, name intro or honorific cue starting at ``pos``, if any."""
    head = text[pos : pos + CHAIN_WORD_WINDOW].split(None, 1)
    if not head or head[0].rstrip(".:,").lower() not in _CHAIN_START_WORDS:
        return None
    return p.chained_cue.match(text, pos)


def _names_after_cue(
    text: str, cue: re.Match[str], p: _Py, mixed_case: bool
) -> Iterator[Candidate]:
    """Names after a person cue ``cue`` (a match of ``p.person_cue``) and the cues right after it.

    A name in a script without case is taken only after a strong cue (see _STRONG_INTROS),
    and so is a lower-case one in Greek, Cyrillic or Armenian, which no list has. In
    mixed-case text a lower-case word after a greeting is a name only if a list has it and
    it is no common word, and then only with a stop or a line break after it ('Hi john,',
    not 'hi res display') or if it is a strong name ('Hi john how are you'; not 'hey mark
    this done', 'hi will you', 'hey jo what'); an all-lower-case text reads every greeting
    as any cue, as it always did. A cue right after this one is read here too ('Hi, I'm
    Tihomir', 'Dear Mr. Tihomir', 'hi mr. Okonkwo'): the Rust match of the first cue took
    that cue's first letter, so Rust did not report it (in an all-lower-case text the
    caller's scan finds it). A loop, not recursion: 'Hi hi hi ...' is a chain of greetings.
    """
    for _ in range(MAX_CHAINED_CUES):
        pos = cue.end()
        after = text[pos : pos + 1]
        if after >= FIRST_NON_LATIN and (
            p.cjk_run.match(text, pos) or _non_latin_lower_at(text, pos, p)
        ):
            yield from _caseless_name(text, cue, p)
            return
        if mixed_case and after.islower() and p.greeting.match(text, cue.start()):
            first = p.any_token.match(text, pos)
            if first is None:
                return
            word = first.group(0).lower()
            lex = lexicon()
            if word in lex.names and word not in lex.common and word not in GREETING_NOT_NAMES:
                stop = None if word in lex.strong_names else GREETING_NAME_END
                yield from _names_after(text, pos, p, followed_by=stop)
                return
            nested = p.person_cue.match(text, pos)  # 'Hi team,', or any cue: 'hi mr. Okonkwo'
        else:
            found = next(_names_after(text, pos, p), None)
            if found is not None:  # most cues: the name follows at once, no second cue to look for
                yield found
                return
            nested = _chained_cue(text, pos, p) if mixed_case else None
        if nested is None:
            return
        cue = nested


def _non_latin_lower_at(text: str, pos: int, p: _Py) -> bool:
    """A lower-case word in Greek, Cyrillic or Armenian starts at ``pos``."""
    return text[pos : pos + 1].islower() and p.non_latin_word.match(text, pos) is not None


def _caseless_name(text: str, cue: re.Match[str], p: _Py) -> Iterator[Candidate]:
    """The name after a strong cue in a script without case, or in lower case in one with it.

    'I am'/'I'm' (the only strong cues that start with 'i') are followed by other words
    as often: a CJK word there is a name unless it is a nationality ('日本人'), and a
    lower-case Cyrillic word ('I am учитель') is not taken at all.
    """
    pos = cue.end()
    if not p.strong_cue.fullmatch(text, cue.start(), pos):
        return
    after_i_am = text[cue.start()] in "iI"
    if p.cjk_run.match(text, pos):
        chinese = p.chinese_intro.search(text, cue.start(), pos) is not None
        found = _cjk_name(text, pos, p, after_i_am, chinese)
        if found is not None:
            yield found
    elif not after_i_am:
        found = _non_latin_lower_name(text, pos, p)
        if text[found[1] : found[2]].split(" ", 1)[0] not in NON_LATIN_NOT_NAMES:
            yield found


NON_LATIN_NAME_END = ",.!?;:\n"  # what ends a lower-case non-Latin name of several words


def _non_latin_lower_name(text: str, pos: int, p: _Py) -> Candidate:
    """A lower-case name in Greek, Cyrillic or Armenian at ``pos``, right after a strong cue.

    No capital tells where the name ends: the first word is taken, and the words after
    it (each MIN_NON_LATIN_NAME_LEN letters or more, up to MAX_CUE_NAME_TOKENS in all)
    only when a stop, a line break or the end of the text follows them ('иван петров.',
    not 'иван мне 25 лет').
    """
    ends: list[int] = []
    i = pos
    for _ in range(MAX_CUE_NAME_TOKENS):
        m = p.non_latin_word.match(text, i)
        if m is None or (
            ends and (len(m.group()) < MIN_NON_LATIN_NAME_LEN or not m.group().islower())
        ):
            break
        ends.append(m.end())
        if text[m.end() : m.end() + 1] != " ":
            break
        i = m.end() + 1
    after = text[ends[-1] : ends[-1] + 1]
    return ("PERSON", pos, ends[-1] if not after or after in NON_LATIN_NAME_END else ends[0])


def _cjk_name(
    text: str, pos: int, p: _Py, after_i_am: bool, chinese: bool = False
) -> Candidate | None:
    """The name in a caseless script at ``pos``, right after a strong cue; None if too long.

    A run of Han, katakana or Hangul letters ('山田太郎'), or two runs with one space or a
    '・' between ('山田 太郎'), with a Korean copula cut off ('김민수입니다'). A longer run is
    a sentence without a stop, where the name's end is unknown; after a Chinese intro
    (``chinese``) a run of Han letters is cut where the sentence goes on (see
    _chinese_name_end: '我叫李明今年二十岁').
    """
    m = p.cjk_run.match(text, pos)
    if m is None:
        return None
    end = m.end()
    if chinese and all("\u3400" <= c <= "\u9fff" or "\uf900" <= c <= "\ufaff" for c in m.group()):
        cut = _chinese_name_end(text, pos, end, p)
        return None if cut is None else ("PERSON", pos, cut)
    if text[end : end + 1] in (" ", "\u3000", "・"):
        more = p.cjk_run.match(text, end + 1)
        if more is not None and _cjk_name_len_ok(text[pos : more.end()]):
            end = more.end()
    name = text[pos:end]
    for ending in KOREAN_NAME_ENDINGS:
        if name.endswith(ending) and len(name) - len(ending) >= 2:
            end -= len(ending)
            name = name[: -len(ending)]
            break
    if not _cjk_name_len_ok(name) or (after_i_am and name.endswith("人")):
        return None
    return ("PERSON", pos, end)


def _chinese_name_end(text: str, pos: int, end: int, p: _Py) -> int | None:
    """Where a Chinese name after an intro ends in the Han run ``text[pos:end]``; None: no name.

    Chinese puts no space or stop after a name ('我叫李明今年二十岁'). A run of up to
    CJK_NAME_MAX characters is taken whole, as before, but cut before the first word
    that goes on with the sentence (CHINESE_AFTER_NAME: '是', '今年', '二十岁') once it has
    two characters, three after a compound surname ('我叫李明是学生'). A longer run is a
    name only if it starts with a listed surname: then the surname and one character
    when such a word follows them ('李明|今年'), else the surname and two ('王小明今年...',
    '张伟华北京人...'). A run that starts with such a word is no name: '叫' is also 'to call
    for' or 'tell' ('我叫了一辆车', '我叫他明天再来').
    """
    if end - pos < 2 or p.chinese_after_name.match(text, pos):
        return None
    surname = 2 if text[pos : pos + 2] in CHINESE_COMPOUND_SURNAMES else 1
    if end - pos > CJK_NAME_MAX:
        if surname == 1 and text[pos] not in CHINESE_SURNAMES:
            return None
        short = pos + surname + 1
        return short if p.chinese_after_name.match(text, short) else short + 1
    for cut in range(pos + min(surname + 1, end - pos), end):
        if p.chinese_after_name.match(text, cut):
            return cut
    return end


def _cjk_name_len_ok(name: str) -> bool:
    letters = len(name) - sum(name.count(c) for c in " \u3000・ー")
    kana = any("\u30a1" <= c <= "\u30fa" or "\uff66" <= c <= "\uff9f" for c in name)
    return 2 <= letters <= (CJK_KANA_NAME_MAX if kana else CJK_NAME_MAX)


def _word_end(text: str, pos: int) -> int:
    """``pos`` moved past the rest of the word it falls in (a search window never cuts one)."""
    n = len(text)
    while pos < n and not text[pos].isspace():
        pos += 1
    return pos


def _line_bounds(text: str, pos: int) -> tuple[int, int]:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return start, len(text) if end < 0 else end


# ---------------------------------------------------------------------------------------
# STREET_ADDRESS
# ---------------------------------------------------------------------------------------


def _check_address(
    text: str, start: int, end: int, lowercase_mode: bool, p: _Py
) -> Iterator[Candidate]:
    """Try the exact street forms that fit a Rust address candidate.

    The candidate's first word tells which form produced it; forms that put the street
    name before the type word or number ('Gyula utca 76') are searched a little before.
    """
    hi = _word_end(text, min(len(text), end + ADDRESS_MARGIN_FWD))
    head = text[start:end].split(None, 1)[0].rstrip(".").lower()
    if head[:1].isdigit() or not head[:1].isalnum():
        line_start = text.rfind("\n", 0, start) + 1
        words = {w.rstrip(".,").lower() for w in text[start:end].split()}
        forms = []
        if words & _SUFFIX_SET:
            forms.append((p.us_street, 0))
        if not any(c.isalnum() for c in text[line_start:start]):
            forms.append((p.line_street, 1))
        if words & _PREFIX_SET:
            forms.append((p.prefix_street, 0))
        lo = line_start if not head[:1].isalnum() else start
    elif head in ("apartment", "apt", "suite", "ste", "flat"):
        forms, lo = [(p.unit_alone, 0)], start
    elif head in ("box", "apo", "fpo", "dpo"):
        forms, lo = [(p.po_box, 0), (p.military, 0)], max(0, start - ADDRESS_MARGIN_BACK // 3)
    elif head.startswith(("zip", "post")):  # 'zip', 'postal', 'postcode:', 'zip:90210'
        forms, lo = [(p.zip_cue, 1)], start
    elif head.startswith(("cp", "c.p")):  # 'CP 1100-053', 'C.P. 4000-123', 'CP:1100-053'
        forms, lo = [(p.cp_cue, 1)], start
    else:
        lo = max(0, start - ADDRESS_MARGIN_BACK)
        after, fused = _type_words_before_numbers(text, lo, hi, p)
        forms = [(p.prefix_street, 0)]
        if after:  # the two slow forms only where their type word stands before a number
            forms.append((p.after_street, 0))
        if fused:
            forms.append((p.fused_street, 0))
    for pattern, group in forms:
        # most candidates start where the address starts: one anchored try before a scan;
        # the scan then goes on after it, as a candidate may hold a second address
        # ('12 Main St to 40 Oak Ave')
        first = pattern.match(text, lo, hi)
        if first is not None and _street_form_ok(pattern, first, lowercase_mode, p):
            matches: Iterator[re.Match[str]] = itertools.chain(
                (first,), pattern.finditer(text, first.end(), hi)
            )
        else:
            matches = pattern.finditer(text, lo, hi)
        for m in matches:
            s, e = m.span(group)
            if e <= start or s >= end or not _street_form_ok(pattern, m, lowercase_mode, p):
                continue
            yield ("STREET_ADDRESS", s, _extend_address(text, e, lowercase_mode, p))


_SUFFIX_SET = frozenset(STREET_SUFFIXES)
_PREFIX_SET = frozenset(STREET_PREFIXES)
# Python's case-insensitive match also pairs i with İ and ı, and s with ſ; str.lower
# does not, so those are mapped first (checked over every letter of the word lists).
_FOLD_FIXES = str.maketrans({"İ": "i", "ı": "i", "ſ": "s"})


def _fold(word: str) -> str:
    """Lower case that equates at least what a case-insensitive ``re`` match equates."""
    return word.translate(_FOLD_FIXES).lower()


_TYPES_AFTER_FOLDED = frozenset(_fold(w) for w in STREET_TYPES_AFTER)
_FUSED_FOLDED = tuple(_fold(w.rstrip(".")) for w in FUSED_STREET_ENDINGS)


def _type_words_before_numbers(text: str, lo: int, hi: int, p: _Py) -> tuple[bool, bool]:
    """Whether ``text[lo:hi]`` may hold ('Gyula utca 76', 'Auerstrasse 84') street forms.

    Why: the patterns of those two forms try a run of words at every word of a window,
    which is slow; both need a number right after a street-type word (on its own, or
    fused to the end of a name), which a scan for numbers and a look at the word before
    each rules in or out cheaply. A superset of what the patterns match, never less.
    """
    after = fused = False
    for m in p.number_gap.finditer(text, lo, hi):
        before = text[lo : m.start()].rsplit(None, 1)
        if not before:
            continue
        word = _fold(before[-1].rstrip("."))
        after = after or word in _TYPES_AFTER_FOLDED
        fused = fused or word.endswith(_FUSED_FOLDED)
        if after and fused:
            break
    return after, fused


def _street_form_ok(
    pattern: re.Pattern[str], m: re.Match[str], lowercase_mode: bool, p: _Py
) -> bool:
    if pattern is p.prefix_street:
        return _prefix_street_ok(m, lowercase_mode)
    if pattern is p.line_street:
        return _street_words_ok(m.group(1), lowercase_mode, require_uncommon=True)
    if pattern is p.after_street or pattern is p.fused_street:
        return _street_words_ok(m.group(0), lowercase_mode)
    return True


def _prefix_street_ok(m: re.Match[str], lowercase_mode: bool) -> bool:
    """'Rue X 12' needs a number; an English type word ('place', 'via') needs more."""
    if not (m.group("num1") or m.group("num2")):
        return False
    kind = m.group("type").lower()
    if kind not in AMBIGUOUS_PREFIXES or (m.group("num1") and m.group("num2")):
        return True
    name = m.group("name")
    return (
        not lowercase_mode
        and _capitalised_after_particles(name)
        and _street_words_ok(name, lowercase_mode, require_uncommon=True)
    )


def _capitalised_after_particles(name: str) -> bool:
    """The first word of ``name`` that is no particle has a capital ('de la Paz', 'della Spiga')."""
    for word in name.split():
        if word.lower() not in NAME_PARTICLES:
            return word[:1].isupper()
    return False


def _street_words_ok(chunk: str, lowercase_mode: bool, require_uncommon: bool = False) -> bool:
    """The words of a street candidate look like a name rather than a sentence."""
    lex = lexicon()
    # a house number's letter ("12a", "7b") is part of the number, not a word
    words = [w.strip(".,'’") for w in re.findall(r"(?<!\w)[^\W\d_][\w'’.-]*", chunk)]
    if not words or any(w.lower() in STOPWORDS for w in words):
        return False
    if not require_uncommon:
        return True
    if all(w[:1].isupper() for w in words) and not lowercase_mode:
        return True
    return any(w.lower() not in lex.common for w in words)


def _check_address_cue(text: str, start: int, lowercase_mode: bool, p: _Py) -> Iterator[Candidate]:
    m = p.address_cue.match(text, start)
    if m:
        end = _address_body_end(text, m.end(), lowercase_mode, p)
        if end > m.end():
            yield ("STREET_ADDRESS", m.end(), _extend_address(text, end, lowercase_mode, p))


def _address_body_end(text: str, pos: int, lowercase_mode: bool, p: _Py) -> int:
    """End of an address written after a cue ('lives at ...'); ``pos`` if none.

    The body runs over numbers, street/unit words, capitalised words and non-English
    lower-case words, and stops at a function word, a common English word or other
    punctuation. It counts as an address only with a number and a name-like word. A dot
    after its last word stays out ('My new address is Grote Baan 477. Thanks'); one inside
    it is part of it ('Gyula utca 76., Budapest').
    """
    lex = lexicon()
    vocab = _street_vocabulary()
    i = end = pos
    has_number = has_name = False
    for _ in range(MAX_ADDRESS_BODY_TOKENS):
        if i - pos > MAX_ADDRESS_BODY_CHARS:
            break
        m = p.body_token.match(text, i)
        if not m:
            break
        if m.group("nl") is not None or m.group("comma") is not None:
            i = m.end()
            continue
        if m.group("num") is not None:
            has_number = True
        else:
            word = m.group("word").rstrip(".")
            low = word.lower()
            if low in CONNECTORS and end > pos:
                i = m.end()
                continue
            if low in STOPWORDS or (low in lex.not_names and low not in vocab):
                break
            if low not in vocab:
                if word[:1].isupper() and not lowercase_mode:
                    if low in lex.common and not word.isupper():
                        break
                elif low in lex.common:
                    break
                has_name = True
        i = m.end()
        end = i - 1 if text[i - 1] == "." else i  # a dot after the last word may be a full stop
    return end if has_number and has_name else pos


@functools.cache
def _street_vocabulary() -> frozenset[str]:
    words = {*STREET_SUFFIXES, *STREET_PREFIXES, *STREET_TYPES_AFTER, *UNIT_WORDS, "box", "po"}
    return frozenset(words)


def _extend_address(text: str, end: int, lowercase_mode: bool, p: _Py) -> int:
    """Extend an address over the unit, city, state and postcode parts that follow it.

    A UK or Canadian postcode counts in any case when its letters are valid ones, and so
    does a lower-case city right before one ('10 Downing Street, london sw1a 2aa').
    """
    lex = lexicon()
    for _ in range(MAX_ADDRESS_PARTS):
        m = p.address_cont.match(text, end)
        if not m:
            break
        zip_ = m.group("zip")
        if zip_ is not None and zip_.upper() != zip_ and not postcode_valid(zip_):
            break  # 'ab12 3cd' typed in lower case must be a real UK or Canadian postcode
        if m.group("lcity") is not None:
            words = m.group("lcity").split()
            if not postcode_valid(m.group("lzip")) or any(
                w.lower() in STOPWORDS or w.lower() in lex.common for w in words
            ):
                break
        city = m.group("city")
        if city is not None:
            if "\n" not in m.group("sep") and "," not in m.group("sep") and not city[:1].isupper():
                break
            if not _city_ok(text, m, p):
                break
        end = m.end()
    return end


_US_STATE_SET = frozenset(US_STATES)


def _city_ok(text: str, m: re.Match[str], p: _Py) -> bool:
    """The city part ``m`` of an address (an ``address_cont`` match) reads as a city.

    Its name holds no function word ('then', 'is'), and no common word either unless a
    postcode (no year) or a state that is no word follows it, in the part ('New York, NY',
    'New Delhi 110001') or as the next part ('New Milton\\nBH25 6AA'): then the name is a
    city whatever its words ('Salt Lake City', 'Grand Rapids'), while 'New Year plans' and
    'Big Sale, OK' are none. The state is no word of the name ('Portland, OR 97201',
    'Tulsa OK 74103').
    """
    if _city_words_ok(_CITY_WORD.findall(m.group("city")), common_ok=False):
        return True  # most cities: one look at the words, state and postcode included
    state, postcode = m.group("cstate"), m.group("czip")
    code = m.start("cstate") if state else m.start("czip") if postcode else m.end("city")
    words = _CITY_WORD.findall(text, m.start("city"), code)
    if postcode and not state and len(words) > 1 and words[-1] in _US_STATE_SET:
        words.pop()  # 'Tulsa OK 74103': the state, read as a word of the city by the pattern
    if not _city_words_ok(words, common_ok=True):
        return False
    if _city_words_ok(words, common_ok=False):
        return True
    lex = lexicon()
    return (
        bool(state) and state.lower() not in STOPWORDS and state.lower() not in lex.common  # 'Big Sale, OK'
    ) or _postcode_no_year(postcode) or _postcode_follows(text, m.end(), p)


_CITY_WORD = re.compile(r"[^\W\d_][\w'’.-]*")


def _city_words_ok(words: Sequence[str], common_ok: bool) -> bool:
    """No word of a city's name is a function word, nor a common one unless ``common_ok``
    (connectors, street words and an upper-case word such as 'NEW YORK' aside)."""
    lex = lexicon()
    vocab = _street_vocabulary()
    for w in words:
        low = w.lower()
        if low in CONNECTORS or w == "nan" or low in vocab:
            continue
        if low in STOPWORDS or (not common_ok and low in lex.common and not w.isupper()):
            return False
    return True


def _postcode_no_year(code: str | None) -> bool:
    """``code`` is a postcode that reads as no year ('2024' is a Danish postcode and a year)."""
    if not code:
        return False
    return not (len(code) == 4 and code.isdigit() and code[:2] in ("19", "20"))


def _postcode_follows(text: str, pos: int, p: _Py) -> bool:
    """The address part at ``pos`` is a postcode (with a state or alone) that is no year."""
    m = p.address_cont.match(text, pos)
    if m is None or not (m.group("zip") or m.group("state")):
        return False
    code = m.group("zip") or m.group("state").split()[-1]
    if not any(c.isdigit() for c in code):
        return False
    return (code.upper() == code or postcode_valid(code)) and _postcode_no_year(code)


def postcode_valid(code: str) -> bool:
    """A UK ('SW1A 1AA') or Canadian ('K1A 0B1') postcode, in any case, one space or none.

    UK: a known postcode area, the letters each place of the district may hold ('W1A',
    'EC1A'), and an inward code of a digit and two letters from UK_INWARD_LETTERS.
    Canada: letter, digit, letter, digit, letter, digit from the letters Canada Post uses.
    """
    code = code.upper().replace(" ", "").replace("\t", "")
    canadian = len(code) == 6 and code[1::2].isdigit() and code[0::2].isalpha()  # 'K1A0B1'
    if canadian and code[0] in CA_FIRST_LETTERS and all(c in CA_LETTERS for c in code[2::2]):
        return True
    outward, inward = code[:-3], code[-3:]
    if not (inward[:1].isdigit() and all(c in UK_INWARD_LETTERS for c in inward[1:])):
        return False
    area = outward[:2] if outward[1:2].isalpha() else outward[:1]
    district = outward[len(area) :]
    if area not in UK_POSTCODE_AREAS or not district[:1].isdigit() or not 1 <= len(district) <= 2:
        return False
    last = district[1:]
    return not last or last.isdigit() or last in UK_DISTRICT_LETTERS[len(area) - 1]


def _check_postcode(text: str, start: int, end: int, p: _Py) -> Iterator[Candidate]:
    """A full UK postcode with no cue or street ('Send it to SW1A 1AA'): upper case, one space.

    Also a valid one whose inward code reads as a size or an ordinal ('M2 1TB', 'B12 2ND')
    is left alone: without a cue nothing says it is a postcode.
    """
    m = p.uk_postcode.match(text, start, min(len(text), end + 1))
    if m is None:
        return
    inward = m.group(2)
    if inward[1:] in POSTCODE_LOOKALIKE_INWARDS or inward[1:] == ORDINAL_ENDINGS.get(inward[0], "TH"):
        return
    if postcode_valid(m.group(0)):
        yield ("STREET_ADDRESS", m.start(), m.end())


# =======================================================================================
# resolution
# =======================================================================================


@functools.cache
def _placeholder_pattern(placeholder_format: str) -> re.Pattern[str]:
    """Matches any placeholder this format (or the default one) produces."""
    alternatives = "|".join(ENTITY_TYPES)
    parts = []
    for fmt in sorted({placeholder_format, DEFAULT_PLACEHOLDER}):
        before, _, after = fmt.partition("{entity}")
        parts.append(re.escape(before) + f"(?:{alternatives})" + re.escape(after))
    return re.compile("|".join(parts))


def _resolve(
    text: str, candidates: list[Candidate], protected: list[tuple[int, int]]
) -> list[Span]:
    """Merge same-type overlaps, then take types by priority, trimming around taken spans."""
    if not protected:
        ordered = sorted(candidates, key=lambda c: c[1])
        if all(a[2] <= b[1] for a, b in itertools.pairwise(ordered)):
            return [  # nothing overlaps: nothing to merge or trim
                Span(entity, a, b)
                for entity, a, b in ((e, *_tidy(text, s, t)) for e, s, t in ordered)
                if b > a and _ALNUM.search(text, a, b)
            ]
    by_type: dict[str, list[tuple[int, int]]] = {}
    for entity, start, end in candidates:
        if end > start:
            by_type.setdefault(entity, []).append((start, end))
    taken = sorted(protected)
    out: list[Span] = []
    for entity in sorted(by_type, key=PRIORITY.__getitem__, reverse=True):
        new: list[tuple[int, int]] = []
        for start, end in _merge(by_type[entity]):
            for a, b in _subtract(start, end, taken):
                a, b = _tidy(text, a, b)
                if b > a and _ALNUM.search(text, a, b):
                    new.append((a, b))
        out.extend(Span(entity, a, b) for a, b in new)
        taken = sorted(taken + new)
    out.sort(key=lambda s: s.start)
    return out


def _merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(intervals):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _subtract(start: int, end: int, taken: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    cur = start
    for a, b in taken:
        if b <= cur:
            continue
        if a >= end:
            break
        if a > cur:
            yield (cur, a)
        cur = max(cur, b)
    if cur < end:
        yield (cur, end)


_EDGE_JUNK = " \t\n\r,;:"
_ALNUM = re.compile(r"[^\W_]")  # a character str.isalnum() accepts: a span needs one
PLACEHOLDER_BRACKETS = "<>[]{}()_#*"
_PLACEHOLDER_HINT = DEFAULT_PLACEHOLDER.split("{", 1)[0]


def _tidy(text: str, start: int, end: int) -> tuple[int, int]:
    """Drop separators at the edges so placeholders keep the surrounding punctuation."""
    while start < end and text[start] in _EDGE_JUNK:
        start += 1
    while end > start and text[end - 1] in _EDGE_JUNK:
        end -= 1
    return start, end


# =======================================================================================
# the engine: Rust candidates for a column, Python validation per candidate
# =======================================================================================


def _candidates(texts: pl.Series, kinds: frozenset[str] = ALL_KINDS) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The Rust half of the engine: (texts that may hold PII, their candidates).

    The first frame has ``idx`` (position in ``texts``), ``t`` and ``lower`` (no capital
    letter anywhere) for every text with at least one candidate; the second one row per
    candidate: ``idx``, ``kind`` (index into _ITEM_KINDS) and ``v`` (the matched text).
    Each pattern runs only on the texts its gate finds (see _GATED_KINDS): most of a
    long, PII-free text never meets the costly address and number patterns; patterns of
    kinds not in ``kinds`` do not run at all.
    """
    rx = _rust()
    t = pl.col("t")
    base = (
        pl.DataFrame({"t": texts.cast(pl.String)})
        .with_row_index("idx")
        .with_columns(t.str.contains(rx[g]).alias(g) for g in _GATES)
        .with_columns((t.str.len_bytes().gt(0) & ~pl.col("upper")).alias("lower"))
    )
    parts = [pl.DataFrame(schema={"idx": base.schema["idx"], "kind": pl.UInt8, "v": pl.String})]
    for gate, gated in _GATED_KINDS.items():
        gated = tuple(k for k in gated if k.removesuffix("_lower") in kinds)
        if gate in _LAZY_GATES and gated:
            rows = base.filter(t.str.contains(rx[gate]))
        else:
            rows = base.filter(gate) if gate and gated else base
        if rows.height:
            # a greeting to no one in particular leads Python to no name: not worth its look
            parts.extend(_extract(rows, rx[k], _slot(k), rx.get(f"{k}_filler")) for k in gated)
    names = "names" in kinds
    rows = base.filter("upper") if names else base.clear()
    if rows.height:
        parts.append(_strong_name_hits(rows, rx["token"]))
    long = pl.concat(parts)
    # texts without capitals go on when names are asked for: Python looks for them itself
    keep = (pl.col("lower") & names) | pl.col("idx").is_in(long["idx"].unique().implode())
    return base.filter(keep).select("idx", "t", "lower"), long


def _extract(rows: pl.DataFrame, pattern: str, kind: int, drop: str | None = None) -> pl.DataFrame:
    """Every match of ``pattern`` in ``rows`` (less those ``drop`` matches): rows (idx, kind, v)."""
    found = (
        rows.select(
            "idx",
            pl.lit(kind, dtype=pl.UInt8).alias("kind"),
            pl.col("t").str.extract_all(pattern).alias("v"),
        )
        .explode("v")
        .drop_nulls("v")
    )
    return found if drop is None else found.filter(~pl.col("v").str.contains(drop))


def _strong_name_hits(rows: pl.DataFrame, token_rx: str) -> pl.DataFrame:
    """The tokens of ``rows`` that are listed strong names, as (idx, kind, v) rows.

    Each distinct token is looked up once, in Python: a batch repeats its names, and the
    set lookup is cheaper than hashing the name list into polars for every batch.
    """
    tokens = (
        rows.select("idx", pl.col("t").str.extract_all(token_rx).alias("v"))
        .explode("v")
        .drop_nulls("v")
        .with_columns(pl.col("v").str.split("-"))
        .explode("v")
    )
    strong = [v for v in tokens["v"].unique().to_list() if _strong_key(v.lower())]
    hits = tokens.filter(pl.col("v").is_in(pl.Series(strong, dtype=pl.String).implode()))
    return hits.unique(maintain_order=True).select(
        "idx", pl.lit(_slot("names"), dtype=pl.UInt8).alias("kind"), "v"
    )


POSSESSIVE_TAILS = ("'s", "’s", "'", "’")
"""Endings a Rust token may carry after a name, in the order they can follow each other."""


def _strong_key(word: str, tails: int = len(POSSESSIVE_TAILS)) -> bool:
    """``word`` (lower case) is a strong name followed by possessive endings, or none.

    The endings are the first ``tails`` of POSSESSIVE_TAILS, each at most once and in
    that order; the last one is peeled off first.
    """
    if word in _strong_name_forms():
        return True
    return any(
        word.endswith(tail) and _strong_key(word[: -len(tail)], j)
        for j, tail in enumerate(POSSESSIVE_TAILS[:tails])
    )


@functools.cache
def _strong_name_forms() -> frozenset[str]:
    """Strong names as written, with ’ for ' as well (O’Brien)."""
    names = lexicon().strong_names
    return names | {n.replace("'", "’") for n in names if "'" in n}


def _slot(kind: str) -> int:
    """Where candidates of a pattern go in an Item ('cue_lower' shares the 'cue' slot)."""
    return _ITEM_KINDS.index(kind.removesuffix("_lower"))


_ITEM_KINDS = (*CANDIDATE_KINDS, "names")

Item = tuple[int, str, bool, tuple[list[str] | None, ...]]
"""(row index, text, has no capitals, candidates per kind in _ITEM_KINDS order).

For a text without capitals, ``cue`` holds cue phrases found without the capital a name
would start with, and ``names`` stays empty.
"""


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic GC while building many small acyclic objects (measured: -25% CPU)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def candidate_items(texts: pl.Series, kinds: frozenset[str] = ALL_KINDS) -> list[Item]:
    """The texts of ``texts`` that may hold PII, with their candidates, as Python objects.

    Why the long form: turning mostly-empty list columns into Python objects row by row
    costs more than the detection itself; the candidates alone are few.
    """
    if texts.len() == 0:
        return []
    if texts.len() <= FEW_TEXTS:
        return _few_items(texts, kinds)
    frame, long = _candidates(texts, kinds)
    with _no_gc():
        return _assemble(frame, long)


def _few_items(texts: pl.Series, kinds: frozenset[str] = ALL_KINDS) -> list[Item]:
    """:func:`candidate_items` for a handful of texts: every pattern in one polars call.

    Why: a polars call costs ~0.1 ms whatever its size and the gated path makes dozens;
    for a few texts (``scrub_text`` has one) running every pattern on every text is
    cheaper. Same candidates: a gate only skips texts its patterns cannot match. A lazy
    gate (_LAZY_GATES) is looked for here in Python first: polars compiles each pattern on
    every call (~60 µs for the postcode one, ~5% of a ``scrub_text``), and a pattern no
    text can match is left out.
    """
    rx = _rust()
    t = pl.col("t")
    lower = t.str.len_bytes().gt(0) & ~t.str.contains(rx["upper"])
    none = pl.lit(None, dtype=pl.List(pl.String))
    closed = _closed_lazy_kinds(texts.to_list())
    patterns = {
        k: t.str.extract_all(rx[k])
        for k in CANDIDATE_KINDS
        if k != "cue" and k in kinds and k not in closed
    }
    if "cue" in kinds:
        patterns["cue"] = (
            pl.when(lower).then(t.str.extract_all(rx["cue_lower"])).otherwise(t.str.extract_all(rx["cue"]))
        )
    if "names" in kinds:  # the parts of every token (a hyphenated name is looked up part by part)
        patterns["names"] = t.str.extract_all(rx["token"]).list.join("-").str.split("-")
    frame = pl.DataFrame({"t": texts.cast(pl.String)}).select(
        t, lower.alias("lower"), *[patterns.get(k, none).alias(k) for k in _ITEM_KINDS]
    )
    names = "names" in kinds
    items: list[Item] = []
    for i, row in enumerate(frame.iter_rows(named=True)):
        tokens = row["names"] or ()
        row["names"] = list(dict.fromkeys(v for v in tokens if v and _strong_key(v.lower())))
        cands = tuple(row[k] or None for k in _ITEM_KINDS)
        if (row["lower"] and names) or any(cands):
            items.append((i, row["t"], bool(row["lower"]), cands))
    return items


def _closed_lazy_kinds(values: Sequence[str | None]) -> frozenset[str]:
    """The kinds of the lazy gates that none of ``values`` passes (see _few_items)."""
    closed: set[str] = set()
    for gate in _LAZY_GATES:
        found = _lazy_gate_re(gate).search
        if not any(v and found(v) for v in values):
            closed.update(_GATED_KINDS[gate])
    return frozenset(closed)


@functools.cache
def _lazy_gate_re(gate: str) -> re.Pattern[str]:
    """A lazy gate for Python's ``re``: written (ASCII classes, no look-around) to mean the same there."""
    return re.compile(_rust()[gate])


def _assemble(frame: pl.DataFrame, long: pl.DataFrame) -> list[Item]:
    cands: dict[int, list[list[str] | None]] = {}
    for i, k, v in zip(*(long[c].to_list() for c in ("idx", "kind", "v")), strict=True):
        row = cands.get(i)
        if row is None:
            row = cands[i] = [None] * len(_ITEM_KINDS)
        if row[k] is None:
            row[k] = [v]
        else:
            row[k].append(v)
    empty = (None,) * len(_ITEM_KINDS)
    return [
        (i, text, bool(low), tuple(cands[i]) if i in cands else empty)
        for i, text, low in zip(
            frame["idx"].to_list(), frame["t"].to_list(), frame["lower"].to_list(), strict=True
        )
    ]


def detect_item(
    item: Item, placeholder_format: str = DEFAULT_PLACEHOLDER, kinds: frozenset[str] = ALL_KINDS
) -> list[Span]:
    """The Python half of the engine: validated, resolved spans of one candidate text.

    ``kinds``: the detectors to run (see :func:`detector_kinds`); the item's candidates
    of other kinds are empty already, but names in a text without capitals are looked
    for here, not by Rust.
    """
    p = _py()
    _, text, lower, cands = item
    email, email_obf, ip, num, iban, card_tail, addr_num, addr_word, addr_cue, postcode, cue, native, names = cands
    found: list[Candidate] = []
    for values in (email, email_obf):
        if values:
            found.extend(_checked(text, values, lambda s, e: (("EMAIL", s, e),)))
    if ip:
        found.extend(_checked(text, ip, lambda s, e: _check_ip(text, s, e, p)))
    if iban:
        found.extend(_checked(text, iban, lambda s, e: _check_iban(text, s, e, p)))
    if card_tail:
        found.extend(_checked(text, card_tail, lambda s, e: _check_card_tail(text, s, e, p)))
    if num:  # after the values that outrank a phone, so that phones are cut around them
        before = tuple(found)
        found.extend(_checked(text, num, lambda s, e: _check_number(text, s, e, p, before)))
    for addr in (addr_num, addr_word):
        if addr:
            found.extend(_checked(text, addr, lambda s, e: _check_address(text, s, e, lower, p)))
    if addr_cue:
        found.extend(_checked(text, addr_cue, lambda s, _: _check_address_cue(text, s, lower, p)))
    if postcode:
        found.extend(_checked(text, postcode, lambda s, e: _check_postcode(text, s, e, p)))
    if lower and "names" in kinds:  # no capitals anywhere: look at the whole text, not around capitals
        if cue or native:  # no Python cue starts before the first Rust one: scan from there
            first = min(text.find(values[0]) for values in (cue, native) if values)
            for m in p.person_cue.finditer(text, first):
                found.extend(_names_after_cue(text, m, p, mixed_case=False))
        if _has_strong_name(text, p):  # a run is a name only with a strong name in it
            found.extend(_names_in(text, 0, len(text), True, p))
    else:
        for values in (cue, native):
            if values:
                found.extend(_checked(text, values, lambda s, _: _cued_names(text, s, p)))
        if names:
            found.extend(_names_near(text, names, p))
    if not found:
        return []
    protected = (
        [(m.start(), m.end()) for m in _placeholder_pattern(placeholder_format).finditer(text)]
        if _PLACEHOLDER_HINT in text or placeholder_format != DEFAULT_PLACEHOLDER
        else []
    )
    return _resolve(text, found, protected)


def _names_near(text: str, names: Sequence[str], p: _Py) -> Iterator[Candidate]:
    """Name runs around each strong-name token Rust found (within its line).

    Each hit gets a window of NAME_WINDOW characters either side, widened to whole words
    plus one more word before (a place prefix: "San | Diego"); overlapping or touching
    windows are merged, so every run is read once and whole.
    """
    windows: list[tuple[int, int]] = []
    for name in names:
        pos = text.find(name)
        while pos >= 0:
            line_start, line_end = _line_bounds(text, pos)
            lo = max(line_start, pos - NAME_WINDOW)
            for _ in range(2):  # back to a word start, then one word more
                space = text.rfind(" ", line_start, max(line_start, lo - 1))
                lo = space + 1 if space >= 0 else line_start
            hi = min(line_end, _word_end(text, pos + len(name) + NAME_WINDOW))
            windows.append((lo, hi))
            pos = text.find(name, pos + len(name))
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(windows):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    for lo, hi in merged:
        yield from _names_in(text, lo, hi, False, p)


def detect_series(
    texts: pl.Series,
    placeholder_format: str = DEFAULT_PLACEHOLDER,
    entities: Sequence[str] = ENTITY_TYPES,
) -> dict[int, list[Span]]:
    """Spans of the ``entities`` types, per row index, for the rows of ``texts`` that hold them."""
    wanted = frozenset(entities)
    kinds = detector_kinds(wanted)
    out: dict[int, list[Span]] = {}
    for item in candidate_items(texts, kinds):
        spans = [sp for sp in detect_item(item, placeholder_format, kinds) if sp.entity in wanted]
        if spans:
            out[item[0]] = spans
    return out


def find_entities(
    text: str,
    entities: Sequence[str] = ENTITY_TYPES,
    placeholder_format: str = DEFAULT_PLACEHOLDER,
) -> list[Span]:
    """Detect PII in ``text``: non-overlapping spans, sorted by position.

    Overlaps resolve the same way whatever is asked for (the name inside an e-mail
    address is part of the address): the detectors of every type that outranks an
    asked one run too (see :func:`detector_kinds`); only ``entities`` are returned.
    Existing placeholders are never part of a span.
    """
    if not text:
        return []
    return detect_series(pl.Series([text], dtype=pl.String), placeholder_format, entities).get(0, [])


def replace_spans(
    text: str, spans: Sequence[Span], placeholder_format: str = DEFAULT_PLACEHOLDER
) -> str:
    """Replace each span with its placeholder (spans sorted and non-overlapping)."""
    parts: list[str] = []
    cur = 0
    for span in spans:
        parts.append(text[cur : span.start])
        parts.append(placeholder_format.format(entity=span.entity))
        cur = span.end
    parts.append(text[cur:])
    return "".join(parts)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def without_lone_surrogates(text: str) -> str:
    """``text`` with each lone surrogate (half an emoji from a ``\\ud83d`` escape or a cut
    model answer) as U+FFFD: no UTF-8 sink (polars, a log, a JSON file, an exporter) holds one."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def scrub_text(
    text: str,
    entities: Sequence[str] = ENTITY_TYPES,
    placeholder_format: str = DEFAULT_PLACEHOLDER,
) -> tuple[str, Counter[str]]:
    """Replace PII in ``text`` with placeholders; return the new text and counts per type.

    The batch path on one text, so the two can never disagree. A lone surrogate (half
    an emoji from a JSON ``\\ud83d`` escape, a cut model answer) becomes U+FFFD first:
    no UTF-8 sink (polars, a log, an exporter) can hold it, and a scrubber that raised
    would let its callers fall back to sending the text as it was.
    """
    text = without_lone_surrogates(text)
    results = scrub_texts([text], entities, placeholder_format) if text else []
    return (results[0][1], Counter(results[0][2])) if results else (text, Counter())


_TRAILING_PUNCT = re.compile(r"[.,;:!?)\]}\"'’”»]*(?:\s|$)")
"""What may follow a value without touching the next token: closing punctuation, then a space or the end."""
_LOOSE_BEFORE = frozenset("([{\"'‘“«")


def _glued(text: str, spans: Sequence[Span]) -> bool:
    """Some span touches other text with no space between (``x@y.com192.168.0.1``, ``StMr.``, ``Priya,Apt``).

    Why it matters: every pattern reads a value's neighbours (a number glued to a letter
    is not an address), and the placeholder changes them; a glued value can then be
    found only once its neighbour is replaced, so one pass would not be idempotent.
    """
    for sp in spans:
        if not _TRAILING_PUNCT.match(text, sp.end):
            return True
        if sp.start > 0 and not (text[sp.start - 1].isspace() or text[sp.start - 1] in _LOOSE_BEFORE):
            return True
    return False


ScrubResult = tuple[int, str, dict[str, int]]
"""(position in the input, scrubbed text, placeholders per entity) for a text that changed."""


def scrub_items(
    items: Sequence[Item], entities: Sequence[str], placeholder_format: str, rescans: int = MAX_RESCANS
) -> list[ScrubResult]:
    """Scrub candidate texts (the Python half, plus the rescans of glued texts).

    A text whose spans touch other text (see :func:`_glued`) is scrubbed again, with
    the other such texts of the batch, up to ``rescans`` more times: then scrubbing is a
    fixed point, ``scrub(scrub(x)) == scrub(x)``. Rare in real text (4.5% of the
    PII-dense presidio-research texts, which glue values to punctuation).
    """
    wanted = frozenset(entities)
    kinds = detector_kinds(wanted)
    out: list[ScrubResult] = []
    glued: list[int] = []
    for item in items:
        spans = [sp for sp in detect_item(item, placeholder_format, kinds) if sp.entity in wanted]
        if spans:
            counts: dict[str, int] = {}
            for sp in spans:
                counts[sp.entity] = counts.get(sp.entity, 0) + 1
            if rescans and _glued(item[1], spans):
                glued.append(len(out))
            out.append((item[0], replace_spans(item[1], spans, placeholder_format), counts))
    if glued:
        again = scrub_texts([out[k][1] for k in glued], entities, placeholder_format, rescans=rescans - 1)
        for j, text, more in again:
            i, _, counts = out[glued[j]]
            out[glued[j]] = (i, text, {e: counts.get(e, 0) + more.get(e, 0) for e in counts.keys() | more.keys()})
    return out


def scrub_texts(
    texts: Sequence[str],
    entities: Sequence[str],
    placeholder_format: str,
    offset: int = 0,
    rescans: int = MAX_RESCANS,
) -> list[ScrubResult]:
    """Scrub a list of non-null texts: both halves of the engine; a worker's whole job.

    Returns results only for texts that changed, at their position plus ``offset``.
    """
    items = candidate_items(pl.Series(texts, dtype=pl.String), detector_kinds(frozenset(entities)))
    results = scrub_items(items, entities, placeholder_format, rescans)
    return [(i + offset, new, counts) for i, new, counts in results] if offset else results


class WorkerPool:
    """Processes that scrub shares of a batch in parallel (a context manager).

    Why processes: half of the work is pure Python, so threads would share one core.
    Each worker runs both halves of the engine on its share (polars with one thread),
    so only texts travel between processes. Workers are spawned, not forked (the parent
    runs polars threads), and load their word lists once. With ``workers <= 1``
    everything runs in the calling process.
    """

    def __init__(self, workers: int):
        self.workers = workers
        self._pool: Any = None

    def __enter__(self) -> WorkerPool:
        if self.workers > 1:
            self._pool = _spawn_pool(self.workers)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def submit(
        self, texts: Sequence[str], entities: Sequence[str], placeholder_format: str
    ) -> _Pending:
        """Start scrubbing ``texts``; ``.get()`` on the result waits for it."""
        if self._pool is None or len(texts) < PARALLEL_MIN_TEXTS:
            return _Pending(scrub_texts(texts, entities, placeholder_format))
        size = -(-len(texts) // (self.workers * CHUNKS_PER_WORKER))
        args = [
            (texts[i : i + size], list(entities), placeholder_format, i)
            for i in range(0, len(texts), size)
        ]
        return _Pending(None, self._pool.starmap_async(scrub_texts, args))


def _spawn_pool(workers: int) -> Any:
    """A spawn-context pool whose workers use one polars thread each.

    Spawned children re-import the parent's ``__main__`` unless it is hidden, and an
    unguarded entry point (``python -m pipelines``) would then run again in every
    worker; the workers only need this module, so they see an empty ``__main__``.
    """
    import multiprocessing
    import os
    import sys
    import types

    main = sys.modules["__main__"]
    threads = os.environ.get("POLARS_MAX_THREADS")
    sys.modules["__main__"] = types.ModuleType("__main__")
    os.environ["POLARS_MAX_THREADS"] = "1"
    try:
        return multiprocessing.get_context("spawn").Pool(workers, initializer=_warm_up)
    finally:
        sys.modules["__main__"] = main
        if threads is None:
            os.environ.pop("POLARS_MAX_THREADS", None)
        else:
            os.environ["POLARS_MAX_THREADS"] = threads


class _Pending:
    """Results now (in-process path) or later (worker path)."""

    def __init__(self, results: list[ScrubResult] | None, handle: Any = None):
        self._results = results
        self._handle = handle

    def get(self) -> list[ScrubResult]:
        if self._results is None:
            self._results = [r for part in self._handle.get() for r in part]
        return self._results


def _warm_up() -> None:
    """Load word lists, compile patterns and build the name set in a fresh worker.

    The loaded lists are then frozen out of the cyclic GC's sight: they live as long
    as the worker, and rescanning them on every collection costs time.
    """
    lexicon()
    _py()
    _strong_name_forms()
    gc.freeze()


def scrub_values(
    values: pl.Series,
    entities: Sequence[str] = ENTITY_TYPES,
    placeholder_format: str = DEFAULT_PLACEHOLDER,
    pool: WorkerPool | None = None,
) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Scrub distinct non-null strings; return {old: new} and the counts per changed value."""
    texts = values.to_list()
    results = (pool or WorkerPool(1)).submit(texts, entities, placeholder_format).get()
    mapping = {texts[i]: new for i, new, _ in results}
    per_value = {texts[i]: counts for i, _, counts in results}
    return mapping, per_value


def scrub_series(
    s: pl.Series,
    entities: Sequence[str] = ENTITY_TYPES,
    placeholder_format: str = DEFAULT_PLACEHOLDER,
    pool: WorkerPool | None = None,
) -> tuple[pl.Series, Counter[str]]:
    """Scrub a whole String column; nulls stay null; equals ``scrub_text`` row by row.

    Why it is fast: distinct values are scrubbed once, the Rust engine of polars finds
    candidates in all of them at once, and Python only validates those candidates.
    """
    counts: Counter[str] = Counter()
    s = s.cast(pl.String)
    if s.len() == s.null_count():
        return s, counts
    mapping, per_value = scrub_values(s.drop_nulls().unique(), entities, placeholder_format, pool)
    if not mapping:
        return s, counts
    keys = pl.Series(list(mapping), dtype=pl.String).implode()
    for value, n in s.filter(s.is_in(keys)).value_counts().iter_rows():
        for entity, k in per_value[value].items():
            counts[entity] += k * n
    return s.replace(mapping), counts
