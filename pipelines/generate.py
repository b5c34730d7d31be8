"""Seeded synthetic raw events: the bundled sample, the benchmark load and drift scenarios.

Why synthetic: real interaction logs carry personal data and cannot ship with the project,
yet every later stage needs realistic input. The generator produces traffic from several
tenants and skills spread over days with a weekday/daytime pattern; threads of 1-4 turns;
every feedback kind (accept, reject with a regenerated answer, edit, rating of one or two
outputs, comparison of two drafts); a learnable quality signal (accepted, preferred,
edited-to and high-rated answers are on-topic, specific, polite and structured; rejected
and low-rated ones are generic, curt, off-topic or contain a wrong instruction); PII planted
in free text, every value listed in ``canaries.json``; malformed lines of known kinds; and
controlled distribution shifts for the drift checks::

    python -m pipelines generate                                         # data/raw, params.yaml
    python -m pipelines generate --n-interactions 300000 --out /tmp/big  # about 1M events
    python -m pipelines generate --shift topic --out /tmp/drifted
    python -m pipelines generate --format parquet --out /tmp/pq

The same parameters (seed included) give byte-identical files. Valid events and malformed
lines come from separate random streams, so ``malformed_lines`` does not change the valid
events. Templates and PII lists live in ``pipelines/resources/generator/``.
"""

from __future__ import annotations

import bisect
import datetime as dt
import heapq
import logging
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, get_args

import orjson
import polars as pl
import yaml

from pipelines.config import Entity, Params
from pipelines.io import atomic_path, write_json_atomic, write_parquet_atomic
from pipelines.layout import Layout

log = logging.getLogger(__name__)

RESOURCE_DIR = Path(__file__).resolve().parent / "resources" / "generator"
FORMATS = ("jsonl", "parquet")
PARTITION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}\.(?:jsonl|parquet)$")
PROGRESS_EVERY = 100_000
DAY_MS = 86_400_000

# --- traffic shape -------------------------------------------------------------------------
WEEKDAY_WEIGHTS = (1.0, 1.05, 1.05, 1.0, 0.85, 0.3, 0.25)  # Monday .. Sunday
# fmt: off
HOUR_WEIGHTS = (  # UTC hour of a thread's first message: a working day with a lunch dip
    0.15, 0.1, 0.08, 0.08, 0.1, 0.2, 0.4, 0.8, 1.4, 1.9, 2.0, 1.9,
    1.5, 1.8, 1.9, 1.8, 1.6, 1.2, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2,
)
# fmt: on
TURN_WEIGHTS = (0.55, 0.25, 0.12, 0.08)  # threads of 1, 2, 3 and 4 turns
TENANT_DECAY = 0.35  # tenant i gets weight 1 / (1 + TENANT_DECAY * i): a few big customers
SKILL_DECAY = 0.25  # same for skills, rotated per tenant so each tenant has its own mix
TURN_OMITTED_SHARE = 0.05  # `turn` is optional in the contract; some clients leave it out
MODEL_VERSION_OMITTED_SHARE = 0.08
POLICIES = (  # (policy_id, model_version) serving the traffic
    ("dpo-prod", "2026.10.26"),
    ("dpo-prod", "2026.11.02"),
    ("dpo-canary", "2026.11.02-rc1"),
    ("sft-baseline", "2026.09.30"),
)
POLICY_WEIGHTS = (0.45, 0.3, 0.15, 0.1)
LATENCY_MS = (600, 9_000)  # prompt -> output
SECOND_OUTPUT_MS = (50, 1_500)  # the second draft of a comparison or rated pair
DWELL_MS = (2_000, 40_000, 600_000)  # output -> feedback: min, mean of the tail, max
EDIT_DWELL_MS = (20_000, 300_000)
TURN_GAP_MS = (15_000, 360_000)  # last event of a turn -> next prompt

# --- feedback and quality ------------------------------------------------------------------
FEEDBACK_MIX = (  # per interaction that is not a comparison
    ("accept", 0.26),
    ("reject", 0.16),
    ("edit", 0.16),
    ("rating_pair", 0.14),
    ("rating_single", 0.08),
    ("none", 0.20),
)
COMPARISON_WITHOUT_FEEDBACK = 0.08
REGENERATE_AFTER_REJECT = 0.5  # a rejected answer is regenerated ...
ACCEPT_AFTER_REGENERATE = 0.85  # ... and the new one usually accepted
TRIVIAL_EDIT_SHARE = 0.2  # edits that only fix a typo (pairs drops them by edit ratio)
LABEL_NOISE = 0.03  # users are not perfectly consistent
CONCISE_SHARE = 0.5  # good answers that are short, so length alone does not tell quality
BAD_KINDS = (("generic", 0.3), ("curt", 0.12), ("offtopic", 0.23), ("wrong", 0.35))
NONE_QUALITY = (("good", 0.5), ("mediocre", 0.2), ("bad", 0.3))
SINGLE_RATING_QUALITY = (("good", 0.45), ("mediocre", 0.25), ("bad", 0.3))
PAIR_OTHER_MEDIOCRE = 0.3  # the worse output of a rated pair or comparison is mediocre
RATINGS = {
    "good": ((5, 0.65), (4, 0.35)),
    "mediocre": ((3, 0.7), (2, 0.15), (4, 0.15)),
    "bad": ((1, 0.55), (2, 0.45)),
}
SUBJECT_SHARE = 0.7  # email drafts that start with a subject line

# --- PII -------------------------------------------------------------------------------------
ENTITIES: tuple[str, ...] = get_args(Entity)  # the scrubber's entity names
SECOND_PII_SHARE = 0.12  # a text with PII sometimes carries a second value
US_PHONE_SHARE = 0.7
US_PHONE_FORMATS = (
    "({a}) {e}-{l}",
    "{a}-{e}-{l}",
    "{a}.{e}.{l}",
    "+1 {a} {e} {l}",
    "+1-{a}-{e}-{l}",
)
IPV6_SHARE = 0.2
PUBLIC_FIRST_OCTETS = (3, 18, 34, 35, 52, 54, 81, 91, 104, 142, 151, 185, 203)
IBAN_COUNTRIES = ("DE", "GB", "FR", "NL", "ES", "IT")
ES_WEIGHTS = (1, 2, 4, 8, 5, 10, 9, 7, 3, 6)
IT_CIN_ODD = (
    1,
    0,
    5,
    7,
    9,
    13,
    15,
    17,
    19,
    21,
    2,
    4,
    18,
    20,
    11,
    3,
    6,
    8,
    12,
    14,
    16,
    10,
    22,
    25,
    24,
    23,
)
ASCII_FOLD = str.maketrans(
    {"ø": "o", "Ø": "O", "ß": "ss", "æ": "ae", "Æ": "AE", "ł": "l", "Ł": "L", "'": ""}
)

# --- shifts -----------------------------------------------------------------------------------
SHIFTS = ("none", "topic", "length", "tenant", "all")
SHIFT_TENANT = "hooli"
SHIFT_TENANT_SHARE = 0.4
TOPIC_SHIFT_SHARE = 0.7  # share of threads drawn from the Kubernetes cost/billing family
LENGTH_SHIFT_FACTOR = (2.0, 3.0)  # prompts grow to 2-3x their words
KEEP_CASE_PREFIXES = ("{service}", "{queue}", "{namespace}", "{cluster}")  # lower-case names

# --- malformed lines --------------------------------------------------------------------------
MALFORMED_KINDS_JSONL = (  # in the order lines are handed out: every kind once, then again
    "truncated_json",
    "wrong_type_rating",
    "wrong_type_ts",
    "missing_field",
    "unknown_event_type",
    "duplicate_event_id",
    "invalid_utf8",
    "orphan_feedback",
    "empty_line",
    "oversized_text",
    "bad_timestamp",
    "invalid_rating",
    "unknown_feedback_type",
    "not_an_object",
    "orphan_output",
)
TEXT_ONLY_KINDS = frozenset(  # kinds a typed Parquet column cannot hold
    {
        "truncated_json",
        "wrong_type_rating",
        "wrong_type_ts",
        "invalid_utf8",
        "empty_line",
        "not_an_object",
    }
)
MALFORMED_KINDS_PARQUET = tuple(k for k in MALFORMED_KINDS_JSONL if k not in TEXT_ONLY_KINDS)
BIG_OVERSIZE_MIN_LINES = 100  # with this many malformed lines, one oversized field is 1 MiB
BIG_OVERSIZE_CHARS = 1_048_576
MALFORMED_SEQ_BASE = 1 << 48  # malformed lines sort after valid events with the same ts
LATIN1_MARKER = "Café Lumière"  # its UTF-8 bytes are swapped for Latin-1 ones in invalid_utf8

PARQUET_SCHEMA: dict[str, Any] = {
    "event_id": pl.String,
    "event_type": pl.String,
    "ts": pl.String,
    "tenant_id": pl.String,
    "skill": pl.String,
    "thread_id": pl.String,
    "interaction_id": pl.String,
    "prompt": pl.String,
    "context": pl.String,
    "turn": pl.Int64,
    "output_id": pl.String,
    "text": pl.String,
    "policy_id": pl.String,
    "model_version": pl.String,
    "feedback_type": pl.String,
    "rating": pl.Int64,
    "edited_text": pl.String,
    "output_ids": pl.List(pl.String),
    "preferred_output_id": pl.String,
}
"""Parquet partitions hold the JSON fields as columns; ``ts`` stays an ISO-8601 string."""


# ============================================================================================
# Content: templates and PII lists, loaded once per process
# ============================================================================================


@dataclass(frozen=True)
class Category:
    """One scenario family of a skill: what users ask and what a good answer is made of."""

    name: str
    prompts: tuple[str, ...]
    contexts: tuple[str, ...]
    subjects: tuple[str, ...]
    opens: tuple[str, ...]
    steps: tuple[str, ...]
    wrong: tuple[str, ...]
    fixed: tuple[tuple[str, str], ...]
    followups: tuple[tuple[str, str], ...]  # the kit's follow-ups are used when empty


@dataclass(frozen=True)
class Kit:
    """Everything needed to write prompts and answers for one skill."""

    name: str
    context_rate: float
    inline_context: bool
    styles: tuple[str, ...]
    style_cum: tuple[float, ...]
    pii_entities: tuple[str, ...]
    pii_cum: tuple[float, ...]
    greet_named: tuple[str, ...]
    greet_anon: tuple[str, ...]
    sign_named: tuple[str, ...]
    sign_anon: tuple[str, ...]
    closes: tuple[str, ...]
    generic: tuple[str, ...]
    curt: tuple[str, ...]
    wrong: tuple[str, ...]
    followups: tuple[tuple[str, str], ...]
    elaborations: tuple[str, ...]
    categories: tuple[Category, ...]
    topic_categories: tuple[Category, ...]


@dataclass(frozen=True)
class PiiLists:
    """Raw material for planted PII values and the sentences that carry them."""

    first_names: tuple[str, ...]
    last_names: tuple[str, ...]
    first_ascii: tuple[str, ...]
    last_ascii: tuple[str, ...]
    email_domains: tuple[str, ...]
    us_area_codes: tuple[int, ...]
    streets: tuple[str, ...]
    street_suffixes: tuple[tuple[str, str], ...]
    cities: tuple[tuple[str, str, str], ...]
    gb_banks: tuple[str, ...]
    nl_banks: tuple[str, ...]
    sentences: dict[str, dict[str, tuple[str, ...]]]


@dataclass(frozen=True)
class Content:
    """All generator text: slot pools, one kit per known skill, PII lists."""

    pools: dict[str, tuple[str, ...]]
    kits: dict[str, Kit]
    pii: PiiLists

    def kit(self, skill: str) -> Kit:
        """The kit of ``skill``; any unknown skill name gets the generic one."""
        return self.kits.get(skill) or self.kits["generic"]


def _cumulative(weights: Sequence[float]) -> tuple[float, ...]:
    """Normalised cumulative weights for :func:`_pick` (the last one exactly 1.0)."""
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("weights must not all be zero")
    acc, out = 0.0, []
    for w in weights:
        acc += w / total
        out.append(acc)
    out[-1] = 1.0
    return tuple(out)


def _pick(rng: random.Random, items: Sequence[Any], cum: Sequence[float]) -> Any:
    """Weighted choice in O(log n); ``random.choices`` is several times slower per call."""
    return items[bisect.bisect_right(cum, rng.random())]


def _choice(rng: random.Random, seq: Sequence[Any]) -> Any:
    """Uniform choice; about 3x faster than ``Random.choice`` on CPython 3.11."""
    return seq[int(rng.random() * len(seq))]


def _randint(rng: random.Random, a: int, b: int) -> int:
    """Uniform integer in [a, b]; cheaper than ``Random.randint`` (no rejection loop)."""
    return a + int(rng.random() * (b - a + 1))


def _sample(rng: random.Random, seq: Sequence[Any], k: int) -> list[Any]:
    """``k`` distinct items in random order (a partial Fisher-Yates shuffle)."""
    pool = list(seq)
    n = len(pool)
    for i in range(min(k, n)):
        j = i + int(rng.random() * (n - i))
        pool[i], pool[j] = pool[j], pool[i]
    return pool[:k]


def _table(pairs: Sequence[tuple[Any, float]]) -> tuple[tuple[Any, ...], tuple[float, ...]]:
    """Split ``((item, weight), ...)`` into items and cumulative weights."""
    return tuple(p[0] for p in pairs), _cumulative([p[1] for p in pairs])


def _ascii_fold(name: str) -> str:
    """``José`` -> ``jose``: e-mail local parts are ASCII."""
    text = unicodedata.normalize("NFKD", name.translate(ASCII_FOLD))
    return "".join(c for c in text if not unicodedata.combining(c)).lower()


def _category(name: str, raw: dict[str, Any]) -> Category:
    def t(key: str) -> tuple[str, ...]:
        return tuple(raw.get(key) or ())

    cat = Category(
        name=name,
        prompts=t("prompts"),
        contexts=t("contexts"),
        subjects=t("subjects"),
        opens=t("opens"),
        steps=t("steps"),
        wrong=t("wrong"),
        fixed=tuple((k, str(v)) for k, v in (raw.get("fixed") or {}).items()),
        followups=tuple((f[0], f[1]) for f in raw.get("followups") or ()),
    )
    if not (cat.prompts and cat.opens and cat.steps):
        raise ValueError(f"generator category {name!r} needs prompts, opens and steps")
    return cat


def _kit(name: str, raw: dict[str, Any], topic: dict[str, Any]) -> Kit:
    def t(key: str) -> tuple[str, ...]:
        return tuple(raw.get(key) or ())

    styles = raw.get("list_style") or {"prose": 1.0}
    pii = raw.get("pii") or dict.fromkeys(ENTITIES, 1.0)
    unknown = set(pii) - set(ENTITIES)
    if unknown:
        raise ValueError(f"generator kit {name!r}: unknown PII entities {sorted(unknown)}")
    return Kit(
        name=name,
        context_rate=float(raw.get("context_rate", 0.0)),
        inline_context=name == "summarize",
        styles=tuple(styles),
        style_cum=_cumulative(list(styles.values())),
        pii_entities=tuple(pii),
        pii_cum=_cumulative(list(pii.values())),
        greet_named=t("greet_named"),
        greet_anon=t("greet_anon"),
        sign_named=t("sign_named"),
        sign_anon=t("sign_anon"),
        closes=t("closes"),
        generic=t("generic"),
        curt=t("curt"),
        wrong=t("wrong"),
        followups=tuple((f[0], f[1]) for f in raw.get("followups") or ()),
        elaborations=t("elaborations"),
        categories=tuple(_category(k, v) for k, v in raw["categories"].items()),
        topic_categories=tuple(_category(k, v) for k, v in (topic or {}).items()),
    )


@lru_cache(maxsize=4)
def load_content(resource_dir: Path = RESOURCE_DIR) -> Content:
    """Read the generator's templates and PII lists (cached: the files are static)."""
    skills = yaml.safe_load((resource_dir / "skills.yaml").read_text(encoding="utf-8"))
    pii = yaml.safe_load((resource_dir / "pii.yaml").read_text(encoding="utf-8"))
    topic = skills.get("topic_shift") or {}
    kits = {
        name: _kit(name, raw, topic.get(name) or topic.get("generic"))
        for name, raw in skills["kits"].items()
    }
    if "generic" not in kits:
        raise ValueError("generator content needs a 'generic' kit for unknown skills")
    first, last = tuple(pii["first_names"]), tuple(pii["last_names"])
    lists = PiiLists(
        first_names=first,
        last_names=last,
        first_ascii=tuple(_ascii_fold(n) for n in first),
        last_ascii=tuple(_ascii_fold(n) for n in last),
        email_domains=tuple(pii["email_domains"]),
        us_area_codes=tuple(int(a) for a in pii["us_area_codes"]),
        streets=tuple(pii["streets"]),
        street_suffixes=tuple((s[0], s[1]) for s in pii["street_suffixes"]),
        cities=tuple((c[0], c[1], str(c[2])) for c in pii["cities"]),
        gb_banks=tuple(pii["gb_banks"]),
        nl_banks=tuple(pii["nl_banks"]),
        sentences={
            e: {r: tuple(v) for r, v in roles.items()} for e, roles in pii["sentences"].items()
        },
    )
    pools = {k: tuple(str(x) for x in v) for k, v in skills["pools"].items()}
    return Content(pools=pools, kits=kits, pii=lists)


# ============================================================================================
# Slots: scenario values drawn lazily
# ============================================================================================


def _gen_amount(rng: random.Random) -> str:
    if rng.random() < 0.8:
        return f"${_randint(rng, 12, 4800):,}.{_choice(rng, ('00', '50', '99'))}"
    return f"€{_randint(rng, 12, 4800):,}"


SLOT_GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "amount": _gen_amount,
    "order_id": lambda r: f"A-{_randint(r, 100000, 999999)}",
    "ticket_id": lambda r: f"TCK-{_randint(r, 10000, 99999)}",
    "invoice_id": lambda r: f"INV-2026-{_randint(r, 1000, 9999)}",
    "pct": lambda r: str(_randint(r, 5, 60)),
    "pct2": lambda r: str(_randint(r, 88, 99)),
    "savings": lambda r: str(_randint(r, 12, 45)),
    "n": lambda r: str(_randint(r, 2, 9)),
    "count": lambda r: str(_choice(r, (25, 40, 60, 120, 250, 400, 800, 1500, 3000))),
    "ms": lambda r: str(_randint(r, 6, 40) * 50),
    "version": lambda r: f"v{_randint(r, 1, 9)}.{_randint(r, 0, 30)}.{_randint(r, 0, 12)}",
    "time": lambda r: f"{_randint(r, 6, 22):02d}:{_choice(r, ('00', '15', '30', '45'))} UTC",
    "duration": lambda r: f"{_randint(r, 4, 95)} minutes",
    "gb": lambda r: str(_choice(r, (20, 50, 100, 200, 500))),
}
"""Slots whose values are drawn in code rather than from a pool in skills.yaml."""


class Slots(dict):
    """A scenario's slot values, drawn on first use and then fixed.

    Why lazy: ``str.format_map`` asks only for the slots a template names, so a scenario
    pays for what it uses, and every later template of the same scenario (prompt, context,
    each answer) sees the same customer, product or service. ``alt_<slot>`` is another
    value than ``<slot>``: what a wrong summary or a distractor states.
    """

    __slots__ = ("_pools", "_rng")

    def __init__(
        self,
        rng: random.Random,
        pools: dict[str, tuple[str, ...]],
        fixed: Iterable[tuple[str, str]],
    ):
        super().__init__(fixed)
        self._rng = rng
        self._pools = pools

    def __missing__(self, key: str) -> str:
        if key.startswith("alt_"):
            base = key[4:]
            current = self[base]
            value = current
            for _ in range(8):
                value = self._draw(base)
                if value != current:
                    break
        else:
            value = self._draw(key)
        self[key] = value
        return value

    def _draw(self, key: str) -> str:
        pool = self._pools.get(key)
        if pool is not None:
            return _choice(self._rng, pool)
        gen = SLOT_GENERATORS.get(key)
        if gen is None:
            raise KeyError(key)
        return gen(self._rng)


def render(template: str, slots: dict[str, str]) -> str:
    """Fill a template and capitalise its first letter (unless it starts with a code name)."""
    text = template.format_map(slots)
    if text and text[0].islower() and not template.startswith(KEEP_CASE_PREFIXES):
        text = text[0].upper() + text[1:]
    return text


# ============================================================================================
# PII values (each valid for its kind: Luhn, mod-97, SSN ranges) and the planter
# ============================================================================================


def _digits(rng: random.Random, n: int) -> str:
    return f"{rng.randrange(10**n):0{n}d}"


def luhn_check_digit(partial: str) -> str:
    """The digit that makes ``partial + digit`` pass the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(partial)):
        d = ord(ch) - 48
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def iban_check_digits(country: str, bban: str) -> str:
    """ISO 13616 check digits: 98 - (BBAN + country + '00' as a number) mod 97."""
    numeric = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    return f"{98 - int(numeric) % 97:02d}"


def _fr_rib_key(bank: str, branch: str, account: str) -> str:
    return f"{97 - (89 * int(bank) + 15 * int(branch) + 3 * int(account)) % 97:02d}"


def _es_control(digits: str) -> str:
    d = 11 - sum(int(c) * w for c, w in zip(digits, ES_WEIGHTS, strict=True)) % 11
    return str({11: 0, 10: 1}.get(d, d))


def _it_cin(body: str) -> str:
    total = 0
    for i, ch in enumerate(body):
        idx = int(ch) if ch.isdigit() else ord(ch) - 65
        total += IT_CIN_ODD[idx] if i % 2 == 0 else idx
    return chr(65 + total % 26)


def _bban(rng: random.Random, country: str, lists: PiiLists) -> str:
    if country == "DE":
        return _digits(rng, 8) + _digits(rng, 10)
    if country == "GB":
        return _choice(rng, lists.gb_banks) + _digits(rng, 6) + _digits(rng, 8)
    if country == "FR":
        bank, branch, account = _digits(rng, 5), _digits(rng, 5), _digits(rng, 11)
        return bank + branch + account + _fr_rib_key(bank, branch, account)
    if country == "NL":
        return _choice(rng, lists.nl_banks) + _digits(rng, 10)
    if country == "ES":
        bank, branch, account = _digits(rng, 4), _digits(rng, 4), _digits(rng, 10)
        return bank + branch + _es_control("00" + bank + branch) + _es_control(account) + account
    body = _digits(rng, 5) + _digits(rng, 5) + _digits(rng, 12)  # IT: CIN + ABI + CAB + account
    return _it_cin(body) + body


def make_iban(rng: random.Random, lists: PiiLists) -> str:
    """An IBAN of DE/GB/FR/NL/ES/IT with valid check digits, grouped by four half the time."""
    country = _choice(rng, IBAN_COUNTRIES)
    bban = _bban(rng, country, lists)
    iban = country + iban_check_digits(country, bban) + bban
    if rng.random() < 0.5:
        return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    return iban


def make_card(rng: random.Random, lists: PiiLists) -> str:
    """A Luhn-valid Visa, Mastercard or Amex number, with spaces, dashes or neither."""
    r = rng.random()
    if r < 0.5:
        number, groups = "4" + _digits(rng, 14), (4, 4, 4, 4)
    elif r < 0.8:
        prefix = (
            str(_randint(rng, 51, 55)) if rng.random() < 0.7 else str(_randint(rng, 2221, 2720))
        )
        number, groups = prefix + _digits(rng, 15 - len(prefix)), (4, 4, 4, 4)
    else:
        number, groups = _choice(rng, ("34", "37")) + _digits(rng, 12), (4, 6, 5)
    number += luhn_check_digit(number)
    sep = _choice(rng, (" ", "-", ""))
    if not sep:
        return number
    parts, pos = [], 0
    for g in groups:
        parts.append(number[pos : pos + g])
        pos += g
    return sep.join(parts)


def make_phone(rng: random.Random, lists: PiiLists) -> str:
    """A US number in one of five common formats, or an international one (UK/DE/FR/IN/AU/JP)."""
    if rng.random() < US_PHONE_SHARE:
        area = _choice(rng, lists.us_area_codes)
        if rng.random() < 0.4:  # 555-01xx: the range reserved for fiction
            exchange, line = 555, _randint(rng, 100, 199)
        else:
            exchange, line = _randint(rng, 201, 989), _randint(rng, 0, 9999)
            if exchange % 100 == 11:
                exchange += 1
        return _choice(rng, US_PHONE_FORMATS).format(a=area, e=exchange, l=f"{line:04d}")
    kind = rng.randrange(8)
    if kind == 0:
        return f"+44 20 7946 0{_randint(rng, 0, 999):03d}"
    if kind == 1:
        return f"+44 7700 900{_randint(rng, 0, 999):03d}"
    if kind == 2:
        return f"+49 30 {_randint(rng, 200000, 999999)}"
    if kind == 3:
        return f"+49 89 {_randint(rng, 2000000, 9999999)}"
    if kind == 4:
        return "+33 1 " + " ".join(f"{_randint(rng, 10, 99)}" for _ in range(4))
    if kind == 5:
        return f"+91 {_choice(rng, '6789')}{_digits(rng, 4)} {_digits(rng, 5)}"
    if kind == 6:
        return f"+61 2 {_randint(rng, 8000, 9999)} {_digits(rng, 4)}"
    return f"+81 3-{_randint(rng, 1000, 9999)}-{_digits(rng, 4)}"


def make_ssn(rng: random.Random, lists: PiiLists) -> str:
    """A US SSN with a valid area (001-899, not 666), group (01-99) and serial (0001-9999)."""
    area = _randint(rng, 1, 899)
    if area == 666:
        area = 667
    return f"{area:03d}-{_randint(rng, 1, 99):02d}-{_randint(rng, 1, 9999):04d}"


def make_ip(rng: random.Random, lists: PiiLists) -> str:
    """Mostly private and public IPv4; a share of IPv6 (documentation and link-local ranges)."""
    if rng.random() < IPV6_SHARE:
        h = [f"{rng.getrandbits(16):x}" for _ in range(6)]
        kind = rng.randrange(3)
        if kind == 0:
            return f"2001:db8:{h[0]}:{h[1]}::{h[2]}"
        if kind == 1:
            return f"2001:db8:{h[0]}:{h[1]}:{h[2]}:{h[3]}:{h[4]}:{h[5]}"
        return f"fe80::{h[0]}:{h[1]}:{h[2]}:{h[3]}"
    r = rng.random()
    if r < 0.35:
        first = "10." + str(_randint(rng, 0, 255))
    elif r < 0.5:
        first = f"172.{_randint(rng, 16, 31)}"
    elif r < 0.65:
        first = "192.168"
    else:
        first = f"{_choice(rng, PUBLIC_FIRST_OCTETS)}.{_randint(rng, 0, 255)}"
    return f"{first}.{_randint(rng, 0, 255)}.{_randint(rng, 1, 254)}"


def make_email(rng: random.Random, lists: PiiLists) -> str:
    """first.last@, flast@, first_last42@ ... at a consumer or business domain."""
    first, last = _choice(rng, lists.first_ascii), _choice(rng, lists.last_ascii)
    style = rng.randrange(5)
    if style == 0:
        local = f"{first}.{last}"
    elif style == 1:
        local = f"{first[0]}{last}"
    elif style == 2:
        local = f"{first}_{last}{_randint(rng, 1, 99)}"
    elif style == 3:
        local = f"{first}{last[0]}"
    else:
        local = f"{first}.{last}{_randint(rng, 70, 99)}"
    return f"{local}@{_choice(rng, lists.email_domains)}"


def make_address(rng: random.Random, lists: PiiLists) -> str:
    """A US street address: full with city/state/ZIP, or a short one with an apartment."""
    number, street = _randint(rng, 1, 9899), _choice(rng, lists.streets)
    long_suffix, short_suffix = _choice(rng, lists.street_suffixes)
    city, state, zip3 = _choice(rng, lists.cities)
    zip5 = f"{zip3}{_randint(rng, 0, 99):02d}"
    r = rng.random()
    if r < 0.45:
        return f"{number} {street} {long_suffix}, {city}, {state} {zip5}"
    if r < 0.65:
        return (
            f"{number} {street} {short_suffix} Apt {_randint(rng, 1, 30)}{_choice(rng, 'ABCDEF')}"
        )
    if r < 0.85:
        return f"{number} {street} {short_suffix}, {city}, {state} {zip5}"
    return (
        f"{number} {street} {long_suffix}, Suite {_randint(rng, 100, 999)}, {city}, {state} {zip5}"
    )


VALUE_MAKERS: dict[str, Callable[[random.Random, PiiLists], str]] = {
    "EMAIL": make_email,
    "PHONE": make_phone,
    "CREDIT_CARD": make_card,
    "IBAN": make_iban,
    "US_SSN": make_ssn,
    "IP_ADDRESS": make_ip,
    "STREET_ADDRESS": make_address,
}


class PiiPlanter:
    """Decides which free-text fields carry PII, makes the values and records each one.

    Why one recorder: ``canaries.json`` must list exactly what went into the files, so
    every value is added to ``canaries`` at the moment it is put into a text.
    """

    def __init__(
        self, rng: random.Random, lists: PiiLists, rate: float, canaries: set[tuple[str, str]]
    ):
        self.rng = rng
        self.lists = lists
        self.rate = rate
        self.canaries = canaries

    def entity(self, kit: Kit) -> str | None:
        """The entity to plant in the next field (weighted per skill), or None for no PII."""
        if self.rate <= 0.0 or self.rng.random() >= self.rate:
            return None
        return _pick(self.rng, kit.pii_entities, kit.pii_cum)

    def fill_person(self, template: str) -> str:
        """Put a (first name, full name) into ``{first}``/``{full}`` and record what was used."""
        first = _choice(self.rng, self.lists.first_names)
        full = f"{first} {_choice(self.rng, self.lists.last_names)}"
        if "{first}" in template:
            self.canaries.add(("PERSON", first))
        if "{full}" in template:
            self.canaries.add(("PERSON", full))
        return template.replace("{first}", first).replace("{full}", full)

    def value(self, entity: str) -> str:
        """A fresh value of a non-person entity, recorded as a canary."""
        value = VALUE_MAKERS[entity](self.rng, self.lists)
        self.canaries.add((entity, value))
        return value

    def sentence(self, entity: str, role: str) -> str:
        """A natural sentence carrying one value (``role``: user, context or assistant)."""
        template = _choice(self.rng, self.lists.sentences[entity][role])
        if entity == "PERSON":
            return self.fill_person(template)
        return template.replace("{v}", self.value(entity))


# ============================================================================================
# Text: prompts, contexts and answers of a given quality
# ============================================================================================


@dataclass
class Scenario:
    """What one thread is about: the skill's kit, a category and its slot values."""

    kit: Kit
    cat: Category
    slots: Slots


TYPO_WORD_RE = re.compile(r"(?<![\w@.\-/])[a-z]{5,}(?![\w@.\-/])")


class Composer:
    """Writes the free text of a thread. Quality is explicit so feedback can follow it.

    A good answer greets, opens on the user's actual topic, gives concrete steps that name
    the scenario's product/service/dates, closes and signs off. Bad answers are generic,
    curt, about another scenario, or structured like a good one but with a wrong
    instruction. Good answers are sometimes concise and bad ones sometimes long, so that
    length alone does not predict preference.
    """

    def __init__(
        self, rng: random.Random, content: Content, planter: PiiPlanter, length_shift: bool
    ):
        self.rng = rng
        self.content = content
        self.planter = planter
        self.length_shift = length_shift
        self._bad_kinds = _table(BAD_KINDS)
        self._other_kits = tuple(content.kits.values())

    # --- scenarios -------------------------------------------------------------------------
    def scenario(self, kit: Kit, tenant: str, topic: bool) -> Scenario:
        """A fresh scenario; ``topic`` draws from the Kubernetes cost/billing family."""
        cats = kit.topic_categories if topic and kit.topic_categories else kit.categories
        cat = _choice(self.rng, cats)
        fixed = (("tenant_title", tenant.title()), *cat.fixed)
        return Scenario(kit, cat, Slots(self.rng, self.content.pools, fixed))

    def other_scenario(self, sc: Scenario) -> Scenario:
        """A scenario on another topic: what an off-topic answer answers."""
        rng = self.rng
        if len(sc.kit.categories) > 1 and rng.random() < 0.5:
            kit = sc.kit
            cat = _choice(rng, [c for c in kit.categories if c is not sc.cat])
        else:
            kit = _choice(rng, [k for k in self._other_kits if k is not sc.kit])
            cat = _choice(rng, kit.categories)
        fixed = (("tenant_title", sc.slots["tenant_title"]), *cat.fixed)
        return Scenario(kit, cat, Slots(rng, self.content.pools, fixed))

    # --- user side -------------------------------------------------------------------------
    def prompt(
        self, sc: Scenario, followup: tuple[str, str] | None, inline_doc: bool = False
    ) -> str:
        """The user's message; turn 1 states the task, later turns a follow-up request."""
        rng = self.rng
        text = render(followup[0] if followup else _choice(rng, sc.cat.prompts), sc.slots)
        if self.length_shift:
            text = self._elaborate(sc, text)
        if inline_doc and sc.cat.contexts:
            text = text + "\n\n" + render(_choice(rng, sc.cat.contexts), sc.slots)
        return self._plant(sc, text, "user")

    def context(self, sc: Scenario) -> str | None:
        """The material the user attached (incoming email, ticket, alert, document), if any."""
        if not sc.cat.contexts or self.rng.random() >= sc.kit.context_rate:
            return None
        return self._plant(sc, render(_choice(self.rng, sc.cat.contexts), sc.slots), "context")

    def _elaborate(self, sc: Scenario, text: str) -> str:
        """Grow a prompt to 2-3x its words with background sentences (the `length` shift)."""
        pool = list(sc.kit.elaborations)
        if not pool:
            return text
        self.rng.shuffle(pool)
        words = text.count(" ") + 1
        target = words * self.rng.uniform(*LENGTH_SHIFT_FACTOR)
        extra, i = [], 0
        while words < target:
            sentence = render(pool[i % len(pool)], sc.slots)
            extra.append(sentence)
            words += sentence.count(" ") + 1
            i += 1
        return text + " " + " ".join(extra)

    def _plant(self, sc: Scenario, text: str, role: str) -> str:
        """Embed 0, 1 or 2 PII sentences in a user or context text."""
        entity = self.planter.entity(sc.kit)
        while entity is not None:
            sentence = self.planter.sentence(entity, role)
            sep = "\n" if role == "context" else " "
            text = sentence + sep + text if self.rng.random() < 0.3 else text + sep + sentence
            entity = self.planter.entity(sc.kit) if self.rng.random() < SECOND_PII_SHARE else None
        return text

    # --- assistant side --------------------------------------------------------------------
    def good(self, sc: Scenario, add: str | None = None, concise: bool | None = None) -> str:
        """A preferred answer: on topic, specific steps, polite, greeting and sign-off."""
        rng, cat, slots = self.rng, sc.cat, sc.slots
        if concise is None:
            concise = rng.random() < CONCISE_SHARE
        n = _randint(rng, 1, 2) if concise else _randint(rng, 2, 4)
        steps = [render(s, slots) for s in _sample(rng, cat.steps, n)]
        lead = [render(_choice(rng, cat.opens), slots)]
        if add:
            lead.append(render(add, slots))
        tail = (
            [] if concise and rng.random() < 0.7 else [render(_choice(rng, sc.kit.closes), slots)]
        )
        return self._compose(
            sc, lead, steps, tail, greet=True, sign=True, subject=self._subject(sc)
        )

    def mediocre(self, sc: Scenario, add: str | None = None) -> str:
        """A middling answer: on topic but thin (no steps or no structure), rated about 3."""
        rng, slots = self.rng, sc.slots
        lead = [render(_choice(rng, sc.cat.opens), slots)]
        if rng.random() < 0.5:
            steps = [render(s, slots) for s in _sample(rng, sc.cat.steps, _randint(rng, 1, 2))]
            return self._compose(sc, lead, steps, [], greet=False, sign=False, subject=None)
        lead += [render(g, slots) for g in _sample(rng, sc.kit.generic, _randint(rng, 1, 3))]
        return self._compose(sc, lead, [], [], greet=True, sign=True, subject=None)

    def bad(self, sc: Scenario, kind: str | None = None) -> str:
        """A rejected answer: generic, curt, off-topic, or with a wrong instruction."""
        rng, kit, slots = self.rng, sc.kit, sc.slots
        kind = kind or _pick(rng, *self._bad_kinds)
        if kind == "generic":
            lead = [render(s, slots) for s in _sample(rng, kit.generic, _randint(rng, 3, 7))]
            tail = [render(_choice(rng, kit.closes), slots)] if rng.random() < 0.5 else []
            return self._compose(
                sc, lead, [], tail, greet=rng.random() < 0.6, sign=rng.random() < 0.6, subject=None
            )
        if kind == "curt":
            lead = [
                render(s, slots) for s in _sample(rng, kit.curt, 1 if rng.random() < 0.7 else 2)
            ]
            return self._compose(sc, lead, [], [], greet=False, sign=False, subject=None)
        if kind == "offtopic":
            return self.good(self.other_scenario(sc))
        wrong_pool = sc.cat.wrong if sc.cat.wrong and rng.random() < 0.7 else kit.wrong
        steps = [render(s, slots) for s in _sample(rng, sc.cat.steps, _randint(rng, 2, 4))]
        steps.insert(_randint(rng, 0, len(steps)), render(_choice(rng, wrong_pool), slots))
        lead = [render(_choice(rng, sc.cat.opens), slots)]
        tail = [render(_choice(rng, kit.closes), slots)] if rng.random() < 0.5 else []
        return self._compose(
            sc, lead, steps, tail, greet=True, sign=rng.random() < 0.5, subject=self._subject(sc)
        )

    def of_quality(self, sc: Scenario, quality: str, add: str | None) -> str:
        """An answer of ``good``, ``mediocre`` or ``bad`` quality."""
        if quality == "good":
            return self.good(sc, add)
        if quality == "mediocre":
            return self.mediocre(sc, add)
        return self.bad(sc)

    def typo(self, text: str) -> str | None:
        """``text`` with one adjacent-letter swap in a lower-case word (never inside PII)."""
        words = [m for m in TYPO_WORD_RE.finditer(text) if len(set(m.group())) > 2]
        if not words:
            return None
        m = _choice(self.rng, words)
        w = m.group()
        for _ in range(4):
            i = _randint(self.rng, 1, len(w) - 2)
            if w[i] != w[i + 1]:
                w = w[:i] + w[i + 1] + w[i] + w[i + 2 :]
                return text[: m.start()] + w + text[m.end() :]
        return None

    def _subject(self, sc: Scenario) -> str | None:
        if sc.cat.subjects and self.rng.random() < SUBJECT_SHARE:
            return "Subject: " + render(_choice(self.rng, sc.cat.subjects), sc.slots)
        return None

    def _compose(
        self,
        sc: Scenario,
        lead: list[str],
        steps: list[str],
        tail: list[str],
        greet: bool,
        sign: bool,
        subject: str | None,
    ) -> str:
        """Lay out an answer (subject, greeting, body, sign-off) and plant PII in it."""
        rng, kit, slots, planter = self.rng, sc.kit, sc.slots, self.planter
        named_greet = named_sign = False
        entity = planter.entity(kit)
        while entity is not None:
            if (
                entity == "PERSON"
                and greet
                and kit.greet_named
                and not named_greet
                and (not sign or rng.random() < 0.5)
            ):
                named_greet = True
            elif entity == "PERSON" and sign and kit.sign_named and not named_sign:
                named_sign = True
            else:
                tail = [*tail, planter.sentence(entity, "assistant")]
            entity = planter.entity(kit) if rng.random() < SECOND_PII_SHARE else None
        parts: list[str] = [subject] if subject else []
        if greet:
            if named_greet:
                parts.append(render(planter.fill_person(_choice(rng, kit.greet_named)), slots))
            else:
                parts.append(render(_choice(rng, kit.greet_anon), slots))
        style = _pick(rng, kit.styles, kit.style_cum) if steps else "prose"
        if style == "prose":
            parts.append(" ".join(lead + steps + tail))
        else:
            marks = (
                ["-"] * len(steps)
                if style == "bullets"
                else [f"{i}." for i in range(1, len(steps) + 1)]
            )
            lines = [" ".join(lead)] if lead else []
            lines += [f"{m} {s}" for m, s in zip(marks, steps, strict=True)]
            if tail:
                lines.append(" ".join(tail))
            parts.append("\n".join(lines))
        if sign:
            if named_sign:
                parts.append(render(planter.fill_person(_choice(rng, kit.sign_named)), slots))
            else:
                parts.append(render(_choice(rng, kit.sign_anon), slots))
        return "\n\n".join(parts)


# ============================================================================================
# Traffic: threads, interactions, outputs and feedback, one day at a time
# ============================================================================================


Payload = dict[str, Any] | bytes
"""An event as a dict, or a ready line of bytes (serialised early to bound memory)."""
OUTPUT_REF_FIELDS = ("tenant_id", "skill", "thread_id", "interaction_id", "output_id")


@dataclass
class DayBatch:
    """The valid events of one day, sorted by ts, and its outputs (for malformed lines)."""

    index: int
    date: str
    day_start: dt.datetime
    events: list[tuple[int, int, Payload]]  # (ms of day, sequence, event or its JSON line)
    outputs: list[tuple[int, dict[str, str]]]  # (ms of day, the ids of an output)


def format_ts(date: str, ms_of_day: int) -> str:
    """ISO-8601 in UTC with milliseconds, e.g. ``2026-11-02T09:15:23.412Z``."""
    s, milli = divmod(ms_of_day, 1000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return f"{date}T{h:02d}:{m:02d}:{s:02d}.{milli:03d}Z"


def allocate(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` into integer parts proportional to ``weights`` (largest remainder).

    Why not random: the daily volume is then the same for every seed, so the `none`
    scenario is stationary.
    """
    s = float(sum(weights))
    raw = [total * w / s for w in weights]
    parts = [int(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (parts[i] - raw[i], i))
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


def tenant_mix(
    tenants: Sequence[str], shift_tenant: bool
) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """Tenant names and weights: a few big customers; under the tenant shift a new one takes 40%."""
    names = list(dict.fromkeys(tenants))
    weights = [1.0 / (1.0 + TENANT_DECAY * i) for i in range(len(names))]
    if shift_tenant:
        if SHIFT_TENANT in names:
            weights[names.index(SHIFT_TENANT)] = 0.0
        else:
            names.append(SHIFT_TENANT)
            weights.append(0.0)
        total = sum(weights)
        weights = [w / total * (1.0 - SHIFT_TENANT_SHARE) for w in weights]
        weights[names.index(SHIFT_TENANT)] = SHIFT_TENANT_SHARE
    return tuple(names), tuple(weights)


def skill_mix(skills: Sequence[str], tenant_index: int) -> tuple[float, ...]:
    """Skill weights for one tenant: the same decay, rotated so tenants differ."""
    n = len(skills)
    return tuple(1.0 / (1.0 + SKILL_DECAY * ((j + tenant_index) % n)) for j in range(n))


def _hex_id(rng: random.Random, prefix: str) -> str:
    return f"{prefix}{rng.getrandbits(64):016x}"


def _event_id(rng: random.Random) -> str:
    return f"evt_{rng.getrandbits(96):024x}"


class Traffic:
    """Generates the valid events, one :class:`DayBatch` per day, from one random stream."""

    def __init__(
        self,
        params: Params,
        content: Content,
        canaries: set[tuple[str, str]],
        serialize: bool = False,
    ):
        g = params.generate
        self.serialize = serialize  # hold each day as JSON lines instead of dicts
        if g.shift not in SHIFTS:
            raise ValueError(f"unknown shift {g.shift!r}; expected one of {SHIFTS}")
        self.g = g
        self.content = content
        self.rng = random.Random(f"{params.seed}:traffic")
        self.planter = PiiPlanter(self.rng, content.pii, g.pii_rate, canaries)
        self.topic_shift = g.shift in ("topic", "all")
        self.composer = Composer(
            self.rng, content, self.planter, length_shift=g.shift in ("length", "all")
        )
        self.tenants, tenant_weights = tenant_mix(g.tenants, g.shift in ("tenant", "all"))
        self.tenant_cum = _cumulative(tenant_weights)
        self.skills = tuple(dict.fromkeys(g.skills))
        self.skill_cums = tuple(
            _cumulative(skill_mix(self.skills, i)) for i in range(len(self.tenants))
        )
        self.turns_cum = _cumulative(TURN_WEIGHTS)
        self.hour_cum = _cumulative(HOUR_WEIGHTS)
        self.policy_cum = _cumulative(POLICY_WEIGHTS)
        self.feedback_mix = _table(FEEDBACK_MIX)
        self.none_quality = _table(NONE_QUALITY)
        self.single_quality = _table(SINGLE_RATING_QUALITY)
        self.ratings = {q: _table(v) for q, v in RATINGS.items()}
        start = dt.date.fromisoformat(g.start_date)
        self.dates = [start + dt.timedelta(days=i) for i in range(g.days)]
        self.quotas = allocate(g.n_interactions, [WEEKDAY_WEIGHTS[d.weekday()] for d in self.dates])
        self.counts: Counter[str] = Counter()
        self.feedback: Counter[str] = Counter()
        self.flows: Counter[str] = Counter()
        self.by_tenant: Counter[str] = Counter()
        self.by_skill: Counter[str] = Counter()
        self.threads = 0
        self.done = 0
        self._seq = 0
        self._next_log = PROGRESS_EVERY

    @property
    def active_days(self) -> list[int]:
        """Indexes of days that receive at least one interaction."""
        return [i for i, q in enumerate(self.quotas) if q > 0]

    def days(self) -> Iterator[DayBatch]:
        """Yield each day's events (sorted by ts); only one day is held in memory."""
        for i, (date, quota) in enumerate(zip(self.dates, self.quotas, strict=True)):
            yield self._day(i, date, quota)
        log.info(
            "generated %d interactions in %d threads over %d days",
            self.done,
            self.threads,
            len(self.dates),
        )

    # --- one day ---------------------------------------------------------------------------
    def _day(self, index: int, date: dt.date, quota: int) -> DayBatch:
        rng = self.rng
        date_s = date.isoformat()
        events: list[tuple[int, int, Payload]] = []
        outputs: list[tuple[int, dict[str, str]]] = []
        dumps, opt, serialize = orjson.dumps, orjson.OPT_APPEND_NEWLINE, self.serialize
        remaining = quota
        while remaining > 0:
            n_turns = min(_pick(rng, (1, 2, 3, 4), self.turns_cum), remaining)
            thread = self._thread(n_turns)
            span = max(t for t, _ in thread)
            start = _pick(rng, range(24), self.hour_cum) * 3_600_000 + int(rng.random() * 3_600_000)
            if start + span >= DAY_MS:
                start = max(0, DAY_MS - 1 - span)
            for t, ev in thread:
                key = start + t
                ev["ts"] = format_ts(date_s, key)
                if ev["event_type"] == "output":
                    outputs.append((key, {k: ev[k] for k in OUTPUT_REF_FIELDS}))
                # orjson hands back bytes in an oversized buffer; an exact copy keeps a
                # day of lines at its real size (about 5x less memory)
                line = memoryview(dumps(ev, option=opt)).tobytes() if serialize else ev
                events.append((key, self._seq, line))
                self._seq += 1
            remaining -= n_turns
            self.done += n_turns
            if self.done >= self._next_log:
                log.info("generated %d/%d interactions", self.done, self.g.n_interactions)
                self._next_log += PROGRESS_EVERY
        events.sort()
        day_start = dt.datetime(date.year, date.month, date.day, tzinfo=dt.UTC)
        return DayBatch(index, date_s, day_start, events, outputs)

    def _thread(self, n_turns: int) -> list[tuple[int, dict[str, Any]]]:
        """One conversation: the same tenant, skill and scenario over 1-4 turns."""
        rng = self.rng
        ti = _pick(rng, range(len(self.tenants)), self.tenant_cum)
        tenant = self.tenants[ti]
        skill = _pick(rng, self.skills, self.skill_cums[ti])
        kit = self.content.kit(skill)
        topic = self.topic_shift and rng.random() < TOPIC_SHIFT_SHARE
        sc = self.composer.scenario(kit, tenant, topic)
        followups = _sample(rng, sc.cat.followups or kit.followups, n_turns - 1)
        thread_id = _hex_id(rng, "thr_")
        self.threads += 1
        self.by_tenant[tenant] += n_turns
        self.by_skill[skill] += n_turns
        out: list[tuple[int, dict[str, Any]]] = []
        t = 0
        for turn in range(1, n_turns + 1):
            followup = followups[turn - 2] if 1 < turn <= len(followups) + 1 else None
            base = (tenant, skill, thread_id, _hex_id(rng, "int_"))
            t = self._interaction(out, sc, base, turn, followup, t)
            t += _randint(rng, *TURN_GAP_MS)
        return out

    # --- one interaction -------------------------------------------------------------------
    def _event(self, etype: str, base: tuple[str, str, str, str]) -> dict[str, Any]:
        self.counts[etype] += 1
        return {
            "event_id": _event_id(self.rng),
            "event_type": etype,
            "ts": "",
            "tenant_id": base[0],
            "skill": base[1],
            "thread_id": base[2],
            "interaction_id": base[3],
        }

    def _output(self, out: list, base: tuple, t: int, text: str, policy: tuple[str, str]) -> str:
        ev = self._event("output", base)
        oid = _hex_id(self.rng, "out_")
        ev["output_id"] = oid
        ev["text"] = text
        ev["policy_id"] = policy[0]
        if self.rng.random() >= MODEL_VERSION_OMITTED_SHARE:
            ev["model_version"] = policy[1]
        out.append((t, ev))
        return oid

    def _feedback(self, out: list, base: tuple, t: int, kind: str, **fields: Any) -> None:
        ev = self._event("feedback", base)
        ev["feedback_type"] = kind
        ev.update(fields)
        out.append((t, ev))
        self.feedback[kind] += 1

    def _policy(self) -> tuple[str, str]:
        return _pick(self.rng, POLICIES, self.policy_cum)

    def _two_policies(self) -> tuple[tuple[str, str], tuple[str, str]]:
        a = self._policy()
        b = self._policy()
        while b == a:
            b = self._policy()
        return a, b

    def _dwell(self) -> int:
        lo, mean, hi = DWELL_MS
        return min(hi, lo + int(self.rng.expovariate(1.0 / mean)))

    def _rating(self, quality: str) -> int:
        if self.rng.random() < LABEL_NOISE:
            return _randint(self.rng, 1, 5)
        return _pick(self.rng, *self.ratings[quality])

    def _interaction(
        self,
        out: list,
        sc: Scenario,
        base: tuple[str, str, str, str],
        turn: int,
        followup: tuple[str, str] | None,
        t0: int,
    ) -> int:
        """Append one prompt, its output(s) and feedback; return the time of the last event."""
        rng, c = self.rng, self.composer
        ev = self._event("interaction", base)
        context = c.context(sc) if turn == 1 else None
        ev["prompt"] = c.prompt(
            sc, followup, inline_doc=turn == 1 and context is None and sc.kit.inline_context
        )
        if context is not None:
            ev["context"] = context
        if rng.random() >= TURN_OMITTED_SHARE:
            ev["turn"] = turn
        out.append((t0, ev))
        add = followup[1] if followup else None
        t = t0 + _randint(rng, *LATENCY_MS)
        if rng.random() < self.g.comparison_share:
            mode = "comparison"
        else:
            mode = _pick(rng, *self.feedback_mix)
        self.flows[mode] += 1
        return getattr(self, "_flow_" + mode)(out, sc, base, add, t)

    # --- one method per feedback flow: (out, scenario, ids, follow-up add, t) -> last t ----
    def _flow_comparison(
        self, out: list, sc: Scenario, base: tuple, add: str | None, t: int
    ) -> int:
        """Two drafts side by side (different policies); the user picks the better one."""
        rng, c = self.rng, self.composer
        worse = c.mediocre(sc, add) if rng.random() < PAIR_OTHER_MEDIOCRE else c.bad(sc)
        pa, pb = self._two_policies()
        drafts = [(c.good(sc, add), pa, True), (worse, pb, False)]
        rng.shuffle(drafts)
        ids, good_id, worse_id = [], "", ""
        for k, (text, policy, is_good) in enumerate(drafts):
            oid = self._output(out, base, t + k * _randint(rng, *SECOND_OUTPUT_MS), text, policy)
            ids.append(oid)
            good_id, worse_id = (oid, worse_id) if is_good else (good_id, oid)
        t += SECOND_OUTPUT_MS[1]
        if rng.random() < COMPARISON_WITHOUT_FEEDBACK:
            return t
        preferred = good_id if rng.random() >= LABEL_NOISE else worse_id
        t += self._dwell()
        self._feedback(out, base, t, "comparison", output_ids=ids, preferred_output_id=preferred)
        return t

    def _flow_accept(self, out: list, sc: Scenario, base: tuple, add: str | None, t: int) -> int:
        good = self.rng.random() >= LABEL_NOISE
        text = self.composer.good(sc, add) if good else self.composer.mediocre(sc, add)
        oid = self._output(out, base, t, text, self._policy())
        t += self._dwell()
        self._feedback(out, base, t, "accept", output_id=oid)
        return t

    def _flow_reject(self, out: list, sc: Scenario, base: tuple, add: str | None, t: int) -> int:
        """A bad answer is rejected; often it is regenerated and the new one accepted."""
        rng, c, policy = self.rng, self.composer, self._policy()
        text = c.bad(sc) if rng.random() >= LABEL_NOISE else c.good(sc, add)
        oid = self._output(out, base, t, text, policy)
        t += self._dwell()
        self._feedback(out, base, t, "reject", output_id=oid)
        if rng.random() < REGENERATE_AFTER_REJECT:
            self.flows["regenerate"] += 1
            t += _randint(rng, *LATENCY_MS)
            oid = self._output(out, base, t, c.good(sc, add), policy)
            if rng.random() < ACCEPT_AFTER_REGENERATE:
                t += self._dwell()
                self._feedback(out, base, t, "accept", output_id=oid)
        return t

    def _flow_edit(self, out: list, sc: Scenario, base: tuple, add: str | None, t: int) -> int:
        """The user rewrites a weak answer into a good one, or only fixes a typo."""
        rng, c = self.rng, self.composer
        edited = c.good(sc, add)
        trivial = c.typo(edited) if rng.random() < TRIVIAL_EDIT_SHARE else None
        if trivial is not None:
            self.flows["edit_trivial"] += 1
            text = trivial
        else:
            text = c.mediocre(sc, add) if rng.random() < 0.4 else c.bad(sc)
        oid = self._output(out, base, t, text, self._policy())
        t += _randint(rng, *EDIT_DWELL_MS)
        self._feedback(out, base, t, "edit", output_id=oid, edited_text=edited)
        return t

    def _flow_rating_pair(
        self, out: list, sc: Scenario, base: tuple, add: str | None, t: int
    ) -> int:
        """Two answers to the same prompt, both rated: higher vs lower makes a pair."""
        rng, c = self.rng, self.composer
        worse = "mediocre" if rng.random() < PAIR_OTHER_MEDIOCRE else "bad"
        policy = self._policy()
        pa, pb = self._two_policies() if rng.random() < 0.5 else (policy, policy)
        drafts = [("good", c.good(sc, add), pa), (worse, c.of_quality(sc, worse, add), pb)]
        rng.shuffle(drafts)
        rated = []
        for k, (quality, text, pol) in enumerate(drafts):
            t_out = t + k * _randint(rng, *SECOND_OUTPUT_MS)
            rated.append((quality, self._output(out, base, t_out, text, pol)))
        t += SECOND_OUTPUT_MS[1]
        for quality, oid in rated:
            t += self._dwell() // 4 + 500
            self._feedback(out, base, t, "rating", output_id=oid, rating=self._rating(quality))
        return t

    def _flow_rating_single(
        self, out: list, sc: Scenario, base: tuple, add: str | None, t: int
    ) -> int:
        quality = _pick(self.rng, *self.single_quality)
        text = self.composer.of_quality(sc, quality, add)
        oid = self._output(out, base, t, text, self._policy())
        t += self._dwell()
        self._feedback(out, base, t, "rating", output_id=oid, rating=self._rating(quality))
        return t

    def _flow_none(self, out: list, sc: Scenario, base: tuple, add: str | None, t: int) -> int:
        """An answer the user never reacted to."""
        quality = _pick(self.rng, *self.none_quality)
        self._output(out, base, t, self.composer.of_quality(sc, quality, add), self._policy())
        return t


# ============================================================================================
# Malformed lines: one problem each, so every reject reason is exercised on its own
# ============================================================================================


class Malformed:
    """Builds the deliberately broken lines, from a random stream of their own.

    Each line has exactly one problem: feedback with a wrong type points at a real output,
    a standalone interaction is not an orphan, an orphan is otherwise well formed. Lines that
    are cut or oversized carry no PII (a cut could split a value); the others may, and what
    they carry is recorded like any other planted value.
    """

    def __init__(
        self,
        params: Params,
        content: Content,
        canaries: set[tuple[str, str]],
        fmt: str,
        active_days: Sequence[int],
    ):
        g = params.generate
        self.rng = random.Random(f"{params.seed}:malformed")
        self.planter = PiiPlanter(self.rng, content.pii, g.pii_rate, canaries)
        self.composer = Composer(self.rng, content, self.planter, length_shift=False)
        self.content = content
        self.max_text_chars = params.ingest.max_text_chars
        self.big_oversize = g.malformed_lines >= BIG_OVERSIZE_MIN_LINES
        kinds = MALFORMED_KINDS_PARQUET if fmt == "parquet" else MALFORMED_KINDS_JSONL
        self.by_day: dict[int, list[str]] = {}
        for i in range(g.malformed_lines):
            day = _choice(self.rng, active_days)
            self.by_day.setdefault(day, []).append(kinds[i % len(kinds)])
        self.counts: Counter[str] = Counter()
        self._seq = MALFORMED_SEQ_BASE

    def for_day(self, batch: DayBatch) -> list[tuple[int, int, Payload]]:
        """The malformed lines of one day as ``(ms of day, sequence, payload)``, sorted."""
        lines = []
        for kind in self.by_day.get(batch.index, ()):
            key, payload = getattr(self, "_" + kind)(batch)
            lines.append((key, self._seq, payload))
            self._seq += 1
            self.counts[kind] += 1
        lines.sort(key=lambda x: (x[0], x[1]))
        return lines

    # --- building blocks -------------------------------------------------------------------
    def _ms(self) -> int:
        return self.rng.randrange(DAY_MS)

    def _after(self, key: int) -> int:
        return min(DAY_MS - 1, key + _randint(self.rng, 1_000, 600_000))

    def _interaction(self, batch: DayBatch, key: int, pii: bool = True) -> dict[str, Any]:
        """A well-formed interaction with new ids (it needs nothing else to be valid)."""
        rng = self.rng
        _, ref = _choice(rng, batch.outputs)
        kit = self.content.kit(ref["skill"])
        rate = self.planter.rate
        self.planter.rate = rate if pii else 0.0
        try:
            sc = self.composer.scenario(kit, ref["tenant_id"], topic=False)
            prompt = self.composer.prompt(sc, None)
        finally:
            self.planter.rate = rate
        return {
            "event_id": _event_id(rng),
            "event_type": "interaction",
            "ts": format_ts(batch.date, key),
            "tenant_id": ref["tenant_id"],
            "skill": ref["skill"],
            "thread_id": _hex_id(rng, "thr_"),
            "interaction_id": _hex_id(rng, "int_"),
            "prompt": prompt,
            "turn": 1,
        }

    def _feedback_on_real_output(
        self, batch: DayBatch, kind: str, **fields: Any
    ) -> tuple[int, dict[str, Any]]:
        """Feedback on an output that exists, so its only problem is the one we put in."""
        key, ref = _choice(self.rng, batch.outputs)
        key = self._after(key)
        ev = {
            "event_id": _event_id(self.rng),
            "event_type": "feedback",
            "ts": format_ts(batch.date, key),
            "tenant_id": ref["tenant_id"],
            "skill": ref["skill"],
            "thread_id": ref["thread_id"],
            "interaction_id": ref["interaction_id"],
            "feedback_type": kind,
            "output_id": ref["output_id"],
        }
        ev.update(fields)
        return key, ev

    # --- one builder per kind --------------------------------------------------------------
    def _truncated_json(self, batch: DayBatch) -> tuple[int, Payload]:
        key = self._ms()
        raw = orjson.dumps(self._interaction(batch, key, pii=False))
        cut = _randint(self.rng, len(raw) // 3, 2 * len(raw) // 3)
        while cut > 1 and (raw[cut] & 0xC0) == 0x80:  # never split a UTF-8 character
            cut -= 1
        return key, raw[:cut]

    def _wrong_type_rating(self, batch: DayBatch) -> tuple[int, Payload]:
        return self._feedback_on_real_output(
            batch, "rating", rating=_choice(self.rng, ("five", "four", "4 stars", "excellent"))
        )

    def _wrong_type_ts(self, batch: DayBatch) -> tuple[int, Payload]:
        key = self._ms()
        ev = self._interaction(batch, key)
        epoch_ms = int(batch.day_start.timestamp() * 1000) + key
        ev["ts"] = epoch_ms if self.rng.random() < 0.5 else epoch_ms // 1000
        return key, ev

    def _missing_field(self, batch: DayBatch) -> tuple[int, Payload]:
        variant = self.rng.randrange(4)
        if variant == 0:  # interaction without its prompt
            key = self._ms()
            ev = self._interaction(batch, key, pii=False)
            del ev["prompt"]
            return key, ev
        if variant == 1:  # interaction without a common field
            key = self._ms()
            ev = self._interaction(batch, key)
            del ev[_choice(self.rng, ("tenant_id", "thread_id", "event_id"))]
            return key, ev
        if variant == 2:  # rating without the rating
            return self._feedback_on_real_output(batch, "rating")
        key, ref = _choice(
            self.rng, batch.outputs
        )  # output without its text, for a real interaction
        key = self._after(key)
        ev = {k: ref[k] for k in ("tenant_id", "skill", "thread_id", "interaction_id")}
        return key, {
            "event_id": _event_id(self.rng),
            "event_type": "output",
            "ts": format_ts(batch.date, key),
            **ev,
            "output_id": _hex_id(self.rng, "out_"),
            "policy_id": POLICIES[0][0],
        }

    def _unknown_event_type(self, batch: DayBatch) -> tuple[int, Payload]:
        key = self._ms()
        ev = self._interaction(batch, key, pii=False)  # its prompt is dropped
        ev["event_type"] = _choice(self.rng, ("click", "impression", "session_start", "page_view"))
        del ev["prompt"]
        ev["target"] = _choice(self.rng, ("copy_button", "draft_panel", "settings"))
        return key, ev

    def _duplicate_event_id(self, batch: DayBatch) -> tuple[int, Payload]:
        """An exact replay of an earlier valid line, later in the same file."""
        key, _, ev = _choice(self.rng, batch.events)
        return self._after(key), ev

    def _invalid_utf8(self, batch: DayBatch) -> tuple[int, Payload]:
        key = self._ms()
        ev = self._interaction(batch, key)
        ev["prompt"] = f"Order from {LATIN1_MARKER}: " + ev["prompt"]
        raw = orjson.dumps(ev)
        return key, raw.replace(LATIN1_MARKER.encode("utf-8"), LATIN1_MARKER.encode("latin-1"), 1)

    def _orphan_feedback(self, batch: DayBatch) -> tuple[int, Payload]:
        """Feedback whose interaction and output never arrive."""
        key, ev = self._feedback_on_real_output(batch, "accept")
        ev["thread_id"] = _hex_id(self.rng, "thr_")
        ev["interaction_id"] = _hex_id(self.rng, "int_")
        ev["output_id"] = _hex_id(self.rng, "out_")
        return key, ev

    def _orphan_output(self, batch: DayBatch) -> tuple[int, Payload]:
        """An output whose interaction never arrives."""
        key = self._ms()
        base = self._interaction(batch, key, pii=False)  # only its ids are kept
        sc = self.composer.scenario(self.content.kit(base["skill"]), base["tenant_id"], topic=False)
        ev = {
            k: base[k]
            for k in (
                "event_id",
                "event_type",
                "ts",
                "tenant_id",
                "skill",
                "thread_id",
                "interaction_id",
            )
        }
        ev["event_type"] = "output"
        ev.update(
            output_id=_hex_id(self.rng, "out_"),
            text=self.composer.good(sc),
            policy_id=POLICIES[0][0],
        )
        return key, ev

    def _empty_line(self, batch: DayBatch) -> tuple[int, Payload]:
        return self._ms(), b""

    def _oversized_text(self, batch: DayBatch) -> tuple[int, Payload]:
        """A prompt far over ``ingest.max_text_chars``: someone pasted a whole log."""
        key = self._ms()
        ev = self._interaction(batch, key, pii=False)
        size = max(self.max_text_chars + 1, 2 * self.max_text_chars)
        if self.big_oversize:
            size, self.big_oversize = max(size, BIG_OVERSIZE_CHARS), False
        line = f"{format_ts(batch.date, key)} INFO worker-3 request handled in 12 ms status=200\n"
        ev["prompt"] = ("Why is this slow? Full log:\n" + line * (size // len(line) + 1))[:size]
        return key, ev

    def _bad_timestamp(self, batch: DayBatch) -> tuple[int, Payload]:
        key = self._ms()
        ev = self._interaction(batch, key)
        ev["ts"] = _choice(
            self.rng, ("yesterday at 5pm", "2026-13-45T25:61:00Z", "11/02/2026 09:15", "not-a-date")
        )
        return key, ev

    def _invalid_rating(self, batch: DayBatch) -> tuple[int, Payload]:
        return self._feedback_on_real_output(
            batch, "rating", rating=_choice(self.rng, (0, 6, 7, 10, -1))
        )

    def _unknown_feedback_type(self, batch: DayBatch) -> tuple[int, Payload]:
        return self._feedback_on_real_output(
            batch, _choice(self.rng, ("thumbs_up", "flag", "copy", "share"))
        )

    def _not_an_object(self, batch: DayBatch) -> tuple[int, Payload]:
        key = self._ms()
        choice = self.rng.randrange(3)
        if choice == 0:
            return key, orjson.dumps(
                [
                    "interaction",
                    format_ts(batch.date, key),
                    _choice(self.rng, batch.outputs)[1]["tenant_id"],
                ]
            )
        return key, b'"interaction"' if choice == 1 else b"42"


# ============================================================================================
# Writers and the public entry points
# ============================================================================================


def _jsonl_line(payload: Payload) -> bytes:
    """One line of a JSONL file; raw malformed bytes get their newline here."""
    if isinstance(payload, bytes):
        return payload if payload.endswith(b"\n") else payload + b"\n"
    return orjson.dumps(payload, option=orjson.OPT_APPEND_NEWLINE)


def _write_jsonl(
    path: Path, valid: list[tuple[int, int, Payload]], extra: list[tuple[int, int, Payload]]
) -> int:
    """Write one day's lines in ts order, in binary mode (some malformed lines are not UTF-8)."""
    size = 0
    with atomic_path(path, suffix=".jsonl") as tmp, open(tmp, "wb", buffering=1 << 20) as fh:
        for _, _, payload in heapq.merge(valid, extra, key=lambda x: (x[0], x[1])):
            line = _jsonl_line(payload)
            fh.write(line)
            size += len(line)
    return size


def _write_parquet(
    path: Path, valid: list[tuple[int, int, Payload]], extra: list[tuple[int, int, Payload]]
) -> int:
    """Write one day as a Parquet partition with the JSON fields as typed columns."""
    cols: dict[str, list[Any]] = {c: [] for c in PARQUET_SCHEMA}
    for _, _, ev in heapq.merge(valid, extra, key=lambda x: (x[0], x[1])):
        assert isinstance(ev, dict), "byte-level malformed lines have no Parquet form"
        for c, values in cols.items():
            values.append(ev.get(c))
    write_parquet_atomic(pl.DataFrame(cols, schema=PARQUET_SCHEMA), path)
    return path.stat().st_size


def _remove_stale(folder: Path, keep: set[str]) -> None:
    """Drop day partitions of an earlier run that this run did not write (another window)."""
    for p in folder.iterdir():
        if PARTITION_RE.match(p.name) and p.name not in keep:
            p.unlink()


def generate_events(params: Params) -> Iterator[dict[str, Any]]:
    """Yield the valid events (no malformed lines) day by day, in ts order.

    The same events that :func:`generate_to` writes; handy in notebooks and tests.
    """
    traffic = Traffic(params, load_content(), set())
    for batch in traffic.days():
        for _, _, ev in batch.events:
            assert isinstance(ev, dict)
            yield ev


def generate_to(params: Params, out: Path, fmt: str = "jsonl") -> dict[str, Any]:
    """Write ``out/events/YYYY-MM-DD.{jsonl|parquet}`` and ``out/canaries.json``; return stats."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    out = Path(out)
    events_dir = out / "events"
    events_dir.mkdir(parents=True, exist_ok=True)
    content = load_content()
    canaries: set[tuple[str, str]] = set()
    traffic = Traffic(params, content, canaries, serialize=fmt == "jsonl")
    malformed = Malformed(params, content, canaries, fmt, traffic.active_days)
    writer = _write_jsonl if fmt == "jsonl" else _write_parquet
    files: list[str] = []
    total_bytes = 0
    for batch in traffic.days():
        name = f"{batch.date}.{fmt}"
        total_bytes += writer(events_dir / name, batch.events, malformed.for_day(batch))
        files.append(name)
    _remove_stale(events_dir, set(files))
    ordered = sorted(canaries, key=lambda c: (c[0], c[1]))
    write_json_atomic(out / "canaries.json", [{"entity": e, "value": v} for e, v in ordered])
    valid_total = sum(traffic.counts.values())
    stats = {
        "format": fmt,
        "seed": params.seed,
        "shift": params.generate.shift,
        "days": len(files),
        "n_interactions": traffic.done,
        "n_threads": traffic.threads,
        "events": {k: traffic.counts[k] for k in ("interaction", "output", "feedback")},
        "events_total": valid_total,
        "feedback": {
            k: traffic.feedback[k] for k in ("accept", "reject", "edit", "rating", "comparison")
        },
        "flows": dict(sorted(traffic.flows.items())),
        "tenants": dict(sorted(traffic.by_tenant.items())),
        "skills": dict(sorted(traffic.by_skill.items())),
        "malformed": dict(sorted(malformed.counts.items())),
        "malformed_total": sum(malformed.counts.values()),
        "lines_total": valid_total + sum(malformed.counts.values()),
        "canaries": {e: n for e in ENTITIES if (n := sum(1 for c in ordered if c[0] == e))},
        "canaries_total": len(ordered),
        "files": [f"events/{f}" for f in files] + ["canaries.json"],
        "bytes": total_bytes,
    }
    log.info(
        "wrote %d events + %d malformed lines to %s (%d files, %.1f MB)",
        valid_total,
        stats["malformed_total"],
        events_dir,
        len(files),
        total_bytes / 1e6,
    )
    return stats


def run(params: Params, layout: Layout) -> dict[str, Any]:
    """Stage entry point: write the raw sample under ``data/raw``."""
    return generate_to(params, layout.raw_dir.parent)
