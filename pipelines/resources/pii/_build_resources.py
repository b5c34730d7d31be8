"""Regenerate the derived word lists in this folder (a maintainer tool, never imported).

Run from the repository root::

    .venv/bin/python pipelines/resources/pii/_build_resources.py

Writes, next to this file:

- ``first_names_faker.txt`` / ``last_names_faker.txt``: the person-name lists of every
  Faker locale (MIT licence), kept when written in Latin script, transliterated when
  written in Cyrillic or Greek, plus the romanised Japanese/Chinese lists.
- ``places_faker.txt``: country names (English and a few other languages) and US states.
- ``common_words.txt``: English words that are usually written in lower case: counted on
  public English corpora in ``../shared/data`` (hh-rlhf, xstest), plus the lower-case
  entries of the system word list (Debian ``wamerican``: ``apt-get install wamerican``)
  whose capitalised form is not listed as a proper noun there ("willow", "ping" count;
  "john", "hunter" do not), spaCy's English stop words and Faker's English lorem list.
  A name that is also a common word ("Will", "Grace", "Bill") needs more evidence.

The hand-written lists (``*_curated.txt``, ``not_names.txt``) are not touched. Why a
build step: the lists are data, reviewed as text in the repository; the run-time code
only reads text files and depends on neither Faker nor the corpora.
"""

from __future__ import annotations

import csv
import gzip
import importlib
import json
import pkgutil
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED_DATA = HERE.parents[2] / ".." / "shared" / "data"

MIN_NAME_LEN = 3  # two-letter names (Al, Ed, Li, Wu) come from the curated lists only
MIN_LOWER_COUNT = 3  # a word seen this often in lower case counts as a common word
SYSTEM_WORD_LIST = Path("/usr/share/dict/american-english")

_CYRILLIC = {
    "а": "a", "б": "b", "в": "v", "г": "g", "ґ": "g", "д": "d", "е": "e", "ё": "e",
    "є": "ye", "ж": "zh", "з": "z", "и": "i", "і": "i", "ї": "yi", "й": "y", "к": "k",
    "л": "l", "м": "m", "н": "n", "о": "o", "п": "p", "р": "r", "с": "s", "т": "t",
    "у": "u", "ф": "f", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "",
    "ы": "y", "ь": "", "э": "e", "ю": "yu", "я": "ya",
}  # fmt: skip
_GREEK = {
    "α": "a", "β": "v", "γ": "g", "δ": "d", "ε": "e", "ζ": "z", "η": "i", "θ": "th",
    "ι": "i", "κ": "k", "λ": "l", "μ": "m", "ν": "n", "ξ": "x", "ο": "o", "π": "p",
    "ρ": "r", "σ": "s", "ς": "s", "τ": "t", "υ": "y", "φ": "f", "χ": "ch", "ψ": "ps",
    "ω": "o",
}  # fmt: skip


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))


def transliterate(name: str) -> str:
    """Romanise a Cyrillic or Greek name with a plain, common scheme."""
    table = {**_CYRILLIC, **_GREEK}
    out = "".join(table.get(c, c) for c in _strip_accents(name.lower()))
    return out[:1].upper() + out[1:]


def is_latin(name: str) -> bool:
    """True when every letter of ``name`` is a Latin letter."""
    return all(not c.isalpha() or "LATIN" in unicodedata.name(c, "") for c in name)


def clean_names(raw: Iterable[str]) -> set[str]:
    """Split multi-word entries, romanise Cyrillic/Greek, keep plausible single tokens."""
    out: set[str] = set()
    for entry in raw:
        for token in re.split(r"[\s]+", entry.strip()):
            token = token.strip(".,()")
            if not token:
                continue
            if not is_latin(token):
                token = transliterate(token)
                if not is_latin(token):
                    continue
            if len(token) < MIN_NAME_LEN or not token[0].isupper():
                continue
            if not all(c.isalpha() or c in "'-’" for c in token):
                continue
            out.add(token)
    return out


def faker_names() -> tuple[set[str], set[str]]:
    """First and last names from every Faker person provider."""
    import faker.providers.person as person

    first: set[str] = set()
    last: set[str] = set()
    for mod_info in pkgutil.iter_modules(person.__path__):
        provider = importlib.import_module(f"{person.__name__}.{mod_info.name}").Provider
        for attr in dir(provider):
            value = getattr(provider, attr)
            if attr.startswith("_") or callable(value) or isinstance(value, str):
                continue
            if not isinstance(value, tuple | list | dict):
                continue
            names = [v for v in value if isinstance(v, str)]
            if "first_name" in attr or "first_romanized" in attr:
                first |= clean_names(names)
            elif "last_name" in attr or "last_romanized" in attr:
                last |= clean_names(names)
    return first, last


def faker_places() -> set[str]:
    """Single-word country names (several languages) and US states.

    Multi-word names are left out: their words ("Lucia" of Saint Lucia, "Costa" of Costa
    Rica) are mostly names, and a place guard on them would hide real people.
    """
    import faker.providers.address as address

    words: set[str] = set()
    for locale in ("en", "en_US", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL"):
        provider = importlib.import_module(f"{address.__name__}.{locale}").Provider
        for attr in ("countries", "states"):
            for place in getattr(provider, attr, ()):
                place = place.strip()
                if (
                    len(place) >= MIN_NAME_LEN
                    and place.isalpha()
                    and place[0].isupper()
                    and is_latin(place)
                ):
                    words.add(place)
    return words


def corpus_texts() -> Iterable[str]:
    """English texts from the shared public corpora (whatever of them is present)."""
    hh = SHARED_DATA / "hh-rlhf" / "harmless-base-test.jsonl.gz"
    if hh.exists():
        seen: set[str] = set()
        with gzip.open(hh, "rt", encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                for key in ("chosen", "rejected"):
                    if row[key] not in seen:
                        seen.add(row[key])
                        yield row[key]
    for path in sorted((SHARED_DATA / "xstest").glob("*.csv")):
        with open(path, encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                yield row.get("prompt") or ""
                yield row.get("completion") or ""


def common_words() -> set[str]:
    """Words written in lower case at least as often as capitalised mid-sentence."""
    lower: Counter[str] = Counter()
    capital: Counter[str] = Counter()
    token_re = re.compile(r"(?<=[\s(\"'])[A-Za-z][a-z]+(?='s\b|[\s.,;:!?)\"'])")
    for text in corpus_texts():
        for m in token_re.finditer(text):
            word = m.group(0)
            before = text[max(0, m.start() - 3) : m.start()]
            sentence_start = not before.strip() or before.rstrip()[-1:] in ".!?:\n\"'"
            if word.islower():
                lower[word] += 1
            elif not sentence_start:
                capital[word.lower()] += 1
    words = {w for w, n in lower.items() if n >= MIN_LOWER_COUNT and n >= capital[w]}
    if SYSTEM_WORD_LIST.exists():  # chat users write names in lower case too ("kevin")
        entries = set(SYSTEM_WORD_LIST.read_text(encoding="utf-8").split())
        words &= {w for w in entries if w.islower()}
    try:
        from spacy.lang.en.stop_words import STOP_WORDS

        words |= {w for w in STOP_WORDS if w.isalpha()}
    except ImportError:
        pass
    from faker.providers.lorem.en_US import Provider as Lorem

    words |= {w for w in Lorem.word_list if w.isalpha()}
    return words | dictionary_words()


def dictionary_words() -> set[str]:
    """Lower-case entries of the system word list that are not also proper nouns there."""
    if not SYSTEM_WORD_LIST.exists():
        print(f"warning: {SYSTEM_WORD_LIST} missing (apt-get install wamerican); skipped")
        return set()
    entries = set(SYSTEM_WORD_LIST.read_text(encoding="utf-8").split())
    return {
        w
        for w in entries
        if w.isalpha() and w.islower() and w.isascii() and w.capitalize() not in entries
    }


def write_list(name: str, header: str, items: Iterable[str]) -> None:
    lines = [f"# {line}" if line else "#" for line in header.strip().splitlines()]
    body = sorted(set(items), key=lambda s: (s.casefold(), s))
    (HERE / name).write_text("\n".join([*lines, *body]) + "\n", encoding="utf-8")
    print(f"{name}: {len(body)} entries")


def main() -> None:
    first, last = faker_names()
    source = "Generated by _build_resources.py from Faker's person providers (MIT licence)."
    write_list("first_names_faker.txt", source, first)
    write_list("last_names_faker.txt", source, last)
    write_list(
        "places_faker.txt",
        "Generated by _build_resources.py: country names and US states from Faker (MIT).",
        faker_places(),
    )
    write_list(
        "common_words.txt",
        "Generated by _build_resources.py: English words usually written in lower case\n"
        "(hh-rlhf MIT and xstest CC-BY-4.0 counts; Debian wamerican (SCOWL, permissive\n"
        "licence); spaCy stop words; Faker lorem words).",
        common_words(),
    )


if __name__ == "__main__":
    main()
