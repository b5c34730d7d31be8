"""Pairwise LLM-as-judge: candidate vs champion answers, judged by a stronger model.

Why: the margin win-rate of ``evaluate`` measures what the policies *prefer* among
logged answers; a judge looks at what they *write*. Teams with a stronger model behind
an OpenAI-compatible API (OpenAI, Azure, vLLM, Ollama, LiteLLM, ...) can add its verdict
to the report and, optionally, to the gate. Off by default (``judge.enabled``).

How, for each sampled test prompt:

1. both policies answer greedily (:func:`generate_responses`, traced as generations);
2. the judge sees the two answers twice, candidate first (A = candidate, B = champion)
   and swapped. Judges favour a position; asking both ways cancels that bias;
3. the candidate **wins** the prompt when it wins in both orders, **loses** when it loses
   in both, and anything else (disagreement, a tie, one unusable answer) is a **tie**.
   A prompt with no usable answer in either order is **invalid** and left out of n;
4. win-rate = (wins + ties / 2) / n, with a percentile bootstrap interval over prompts
   (:func:`pipelines.stats.bootstrap_ci`) and a one-sided sign test of wins vs losses;
5. position bias is reported per order (share of "A" verdicts: 0.5 for a fair judge
   on balanced answers, 1.0 for one that always picks the first).

A judge that always answers "A" therefore yields all ties: win-rate exactly 0.5.

The client speaks ``POST {base_url}/chat/completions`` over httpx (the ``openai``
package is not a dependency) with temperature 0, a timeout, and retries with
exponential backoff on connection errors, 408/409/429 and 5xx (``Retry-After`` is
honoured). 401/403/404 raise :class:`JudgeConfigError` at once: a wrong key, model or URL
is a configuration error, not noise. Other failures make that call invalid. The API key
(``JUDGE_API_KEY`` or ``OPENAI_API_KEY``) is sent as a bearer token and never logged.
Texts are scrubbed (:mod:`pipelines.pii`) before they are sent to the judge or traced.

Use from ``evaluate`` and ``gate``::

    from pipelines import judge

    if params.judge.enabled:
        result = judge.run_judge(layout.candidate, ref_folder, sets["test"], params,
                                 base_fallback=layout.base_model, tracer=tracing.tracer(params))
        evaluation["judge"] = result.to_dict()            # eval.json
        headline.update(judge.headline(result))           # metrics/evaluate.json
        report_md += judge.report_markdown(result)

    # gate.decide(): a dict from eval.json is accepted as well as a JudgeResult
    if params.judge.gate:
        passed, reason = judge.gate_criterion(evaluation.get("judge"), params.judge)
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import json
import logging
import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pipelines import stats
from pipelines.config import ConfigError
from pipelines.pii import without_lone_surrogates

if TYPE_CHECKING:
    from pipelines.config import JudgeParams, Params
    from pipelines.prompts import PromptText
    from pipelines.tracing import Tracer

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- constants

A, B, TIE, INVALID = "A", "B", "tie", "invalid"
Verdict = Literal["A", "B", "tie", "invalid"]
WIN, LOSS = "win", "loss"
Outcome = Literal["win", "loss", "tie", "invalid"]
OUTCOME_SCORE = {WIN: 1.0, TIE: 0.5, LOSS: 0.0}

CANDIDATE_FIRST, CHAMPION_FIRST = "candidate_first", "champion_first"
ORDERS = (CANDIDATE_FIRST, CHAMPION_FIRST)

JUDGE_VARIABLES = ("conversation", "response_a", "response_b")
"""Variables the judge prompt must use (a Langfuse version without them is not used)."""
GENERATION_SPAN = "eval.generate"
JUDGE_RUN_SPAN = "judge.pairs"

ENV_BASE_URLS = ("JUDGE_BASE_URL", "OPENAI_BASE_URL")
ENV_MODEL = "JUDGE_MODEL"
ENV_API_KEYS = ("JUDGE_API_KEY", "OPENAI_API_KEY")
CHAT_PATH = "chat/completions"
URL_SCHEMES = ("http://", "https://")
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
CONFIG_STATUS = frozenset({401, 403, 404})
MAX_BACKOFF_S = 30.0
MAX_ERROR_CHARS = 200
MAX_RAW_CHARS = 200
"""Judge answers kept per call in the result (scrubbed), enough to audit a parse."""

_TIE_WORDS = r"tie|tied|draw|equal|equally|neither|same|c"
_BRACKET_RE = re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]", re.IGNORECASE)
_EXACT_RE = re.compile(
    rf"^(?:(?:response|assistant|answer|option|output)\s+)?(a|b|{_TIE_WORDS})$", re.IGNORECASE
)
_LABELED_RE = re.compile(
    r"\b(?:verdict|winner|better(?:\s+(?:response|answer))?|choice|decision"
    r"|final\s+answer|answer|preferred)"
    r"[\"']?\s*(?:is|:|=|-)\s*(?:\W{0,3})"
    r"(?:(?:response|assistant|answer|option|output)\s+|an?\s+(?=(?:tie|draw)\b))?"
    rf"((?-i:a)(?!\s+(?-i:[a-z]))|(?-i:A)|b|{_TIE_WORDS})\b",
    re.IGNORECASE,
)
"""A labelled verdict, also as a JSON key cut off mid-answer or in a code fence
(``"verdict": "B"``). A lowercase "a" followed by a word is the article ("Verdict: a tie",
"the answer is a good one"), not the letter."""
_LEAD_RE = re.compile(r"^[\s*_`\"'#>(\[]*(A|B)(?:\s*$|[.:)\]!,]|\s+is\b)")
_MENTION_RE = re.compile(r"\b(?:response|assistant|answer|option|output)\s+(a|b)\b", re.IGNORECASE)
_BETTER_RE = re.compile(
    r"\b(?:(?:response|assistant|answer|option|output)\s+)?(a|b)\s+(?:is|was)\s+(?:\w+\s+)?"
    r"(?:better|preferred|superior|stronger|more\s+helpful)\b",
    re.IGNORECASE,
)
_TIE_RE = re.compile(
    r"\b(?:tie|draw|neither\s+is\s+(?:clearly\s+)?better|equally\s+good)\b", re.IGNORECASE
)
_STRIP_CHARS = " \t\r\n*_`\"'#.:!;,()[]<>"
_JSON_KEYS = ("verdict", "winner", "better", "choice", "answer", "decision", "preferred")


# --------------------------------------------------------------------------- verdicts


def _letter(token: str) -> Verdict:
    t = token.strip().lower()
    if t == "a":
        return A
    if t == "b":
        return B
    return TIE


def parse_verdict(text: str | None) -> Verdict:
    """Read "A", "B" or "tie" out of a judge's answer; anything unclear is "invalid".

    Accepts the bare word (``A``, ``**B**``, ``tie.``, ``Response A``), JSON
    (``{"verdict": "A"}``), MT-bench brackets (``[[A]]``, ``[[C]]`` = tie), a labelled
    verdict after reasoning (the last ``Verdict: B`` wins), a leading ``A.``/``B:``, and
    one-sided prose (``Response A is better``). Prose naming both answers without a
    label is invalid rather than guessed.
    """
    if text is None or not text.strip():
        return INVALID
    t = text.strip()
    if t.startswith("{"):
        try:
            obj = json.loads(t)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            for key in _JSON_KEYS:
                if isinstance(obj.get(key), str):
                    return parse_verdict(obj[key])
            return INVALID
    if brackets := _BRACKET_RE.findall(t):
        return _letter(brackets[-1])
    if m := _EXACT_RE.match(t.strip(_STRIP_CHARS)):
        return _letter(m.group(1))
    first_line = t.splitlines()[0].strip(_STRIP_CHARS)
    if m := _EXACT_RE.match(first_line):
        return _letter(m.group(1))
    if labeled := _LABELED_RE.findall(t):
        return _letter(labeled[-1])
    if m := _LEAD_RE.match(t):
        return _letter(m.group(1))
    better = {x.lower() for x in _BETTER_RE.findall(t)}
    if len(better) == 1:
        return _letter(better.pop())
    mentions = {x.lower() for x in _MENTION_RE.findall(t)}
    if _TIE_RE.search(t) and not better:
        return TIE
    if len(mentions) == 1:
        return _letter(mentions.pop())
    return INVALID


def candidate_side(verdict: str, order: str) -> int | None:
    """+1 if ``verdict`` favours the candidate in ``order``, -1 the champion, 0 tie; else None."""
    if verdict == TIE:
        return 0
    if verdict not in (A, B):
        return None
    first = 1 if verdict == A else -1
    return first if order == CANDIDATE_FIRST else -first


def combine(candidate_first: str, champion_first: str) -> Outcome:
    """One prompt's outcome from the verdicts of both orders (the order swap rule)."""
    s1 = candidate_side(candidate_first, CANDIDATE_FIRST)
    s2 = candidate_side(champion_first, CHAMPION_FIRST)
    if s1 is None and s2 is None:
        return INVALID
    if s1 == 1 and s2 == 1:
        return WIN
    if s1 == -1 and s2 == -1:
        return LOSS
    return TIE


def summarize(
    outcomes: Sequence[str], *, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """Counts, win-rate = (wins + ties/2) / n over valid prompts, bootstrap interval, sign test."""
    counts = Counter(outcomes)
    scores = [OUTCOME_SCORE[o] for o in outcomes if o in OUTCOME_SCORE]
    n = len(scores)
    wins, losses = counts[WIN], counts[LOSS]
    lo, hi = stats.bootstrap_ci(scores, n_boot, confidence, seed) if n else (math.nan, math.nan)
    return {
        "n_items": len(outcomes),
        "n": n,
        "wins": wins,
        "losses": losses,
        "ties": counts[TIE],
        "invalid": counts[INVALID],
        "win_rate": sum(scores) / n if n else math.nan,
        "ci_low": lo,
        "ci_high": hi,
        "confidence": confidence,
        "p_value": stats.binom_test(wins, wins + losses, 0.5, "greater") if wins + losses else 1.0,
    }


def position_stats(verdicts: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """How much the judge favours a position, per order and overall.

    ``share_a``: share of "A" among the valid verdicts of an order (a judge that always
    picks the first answer has 1.0 in both orders). ``consistency``: share of prompts,
    both verdicts valid, whose verdicts agree once the swap is undone.
    """
    out: dict[str, Any] = {}
    firsts = valid_all = 0
    for k, order in enumerate(ORDERS):
        vs = [v[k] for v in verdicts]
        c = Counter(vs)
        valid = c[A] + c[B] + c[TIE]
        out[order] = {
            "n_valid": valid,
            "share_a": c[A] / valid if valid else math.nan,
            "share_b": c[B] / valid if valid else math.nan,
            "share_tie": c[TIE] / valid if valid else math.nan,
            "invalid": c[INVALID],
        }
        firsts += c[A]
        valid_all += valid
    both = [(v1, v2) for v1, v2 in verdicts if v1 != INVALID and v2 != INVALID]
    agree = sum(1 for v1, v2 in both if (v1, v2) in ((A, B), (B, A), (TIE, TIE)))
    out["first_position_share"] = firsts / valid_all if valid_all else math.nan
    out["consistency"] = agree / len(both) if both else math.nan
    return out


# --------------------------------------------------------------------------- result


@dataclass
class JudgeResult:
    """Everything the report and the gate need; JSON-ready through :meth:`to_dict`."""

    n_items: int
    n: int
    wins: int
    losses: int
    ties: int
    invalid: int
    win_rate: float
    ci_low: float
    ci_high: float
    confidence: float
    p_value: float
    position: dict[str, Any] = field(default_factory=dict)
    judge: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)
    items: list[dict[str, Any]] = field(default_factory=list)

    @property
    def invalid_share(self) -> float:
        return self.invalid / self.n_items if self.n_items else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "invalid_share": self.invalid_share}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JudgeResult:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def headline(result: JudgeResult) -> dict[str, Any]:
    """Flat numbers for ``metrics/evaluate.json``."""
    h = {
        "judge_n": result.n,
        "judge_win_rate": result.win_rate,
        "judge_win_rate_ci_low": result.ci_low,
        "judge_win_rate_ci_high": result.ci_high,
        "judge_wins": result.wins,
        "judge_ties": result.ties,
        "judge_losses": result.losses,
        "judge_invalid_share": result.invalid_share,
        "judge_first_position_share": result.position.get("first_position_share", math.nan),
    }
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in h.items()}


def _fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def gate_criterion(
    result: JudgeResult | Mapping[str, Any] | None, judge: JudgeParams
) -> tuple[bool, str]:
    """The judge's line of the gate rubric: ``(passed, reason)``.

    Passes when ``judge.gate`` is off (not a criterion). With it on, it needs at least
    ``min_items`` validly judged prompts, at most ``max_invalid_share`` invalid ones, a
    win-rate of at least ``min_win_rate`` and an interval lower bound of at least
    ``min_win_rate_ci_low``. A missing result fails. ``result`` may be the dict stored in
    ``eval.json``.
    """
    if not judge.gate:
        return True, "judge passed: not a gate criterion (judge.gate is false)"
    if result is None:
        return False, "judge FAILED: judge.gate is on but the evaluation has no judge result"
    r = result if isinstance(result, JudgeResult) else JudgeResult.from_dict(result)
    problems = []
    if r.n < judge.min_items:
        problems.append(f"{r.n} validly judged prompts (required >= {judge.min_items})")
    if r.invalid_share > judge.max_invalid_share:
        problems.append(
            f"invalid share {r.invalid_share:.3f} (required <= {judge.max_invalid_share})"
        )
    if not r.win_rate >= judge.min_win_rate:  # NaN fails
        problems.append(f"win-rate {_fmt(r.win_rate)} (required >= {judge.min_win_rate})")
    if not r.ci_low >= judge.min_win_rate_ci_low:
        problems.append(f"interval low {_fmt(r.ci_low)} (required >= {judge.min_win_rate_ci_low})")
    verb = "FAILED" if problems else "passed"
    summary = (
        f"judge {verb}: win-rate {_fmt(r.win_rate)} [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}] "
        f"over {r.n} prompts ({r.wins} wins, {r.ties} ties, {r.losses} losses, {r.invalid} invalid)"
    )
    return not problems, summary + (": " + "; ".join(problems) if problems else "")


def report_markdown(result: JudgeResult) -> str:
    """A section for ``report.md``: verdict counts, win-rate, position bias, judge and prompt."""
    p, j, r = result.position, result.judge, result
    prompt = j.get("prompt", {})
    version = f"v{prompt['version']}" if prompt.get("version") is not None else prompt.get("source")
    share_a_cf = _fmt(p.get(CANDIDATE_FIRST, {}).get("share_a", math.nan))
    share_a_chf = _fmt(p.get(CHAMPION_FIRST, {}).get("share_a", math.nan))
    rows = [
        "## LLM-as-judge (pairwise, order-swapped)",
        "",
        f"Judge `{j.get('model')}`, prompt `{prompt.get('name')}` ({version}).",
        "",
        "| prompts | wins | ties | losses | invalid | win-rate | interval | sign test p |",
        "|---|---|---|---|---|---|---|---|",
        f"| {r.n} | {r.wins} | {r.ties} | {r.losses} | {r.invalid} | {_fmt(r.win_rate)} | "
        f"[{_fmt(r.ci_low)}, {_fmt(r.ci_high)}] | {_fmt(r.p_value)} |",
        "",
        f'Position bias: share of "A" verdicts {share_a_cf} (candidate shown first) and '
        f"{share_a_chf} (champion shown first); verdicts consistent across the swap for "
        f"{_fmt(p.get('consistency', math.nan))} of prompts. "
        "A fair judge is near 0.5 in both orders.",
        "",
    ]
    return "\n".join(rows)


# --------------------------------------------------------------------------- client


class JudgeError(RuntimeError):
    """A judge call failed (after retries); the call counts as invalid."""


class JudgeConfigError(JudgeError, ConfigError):
    """The judge cannot work as configured (no URL/model, 401/403/404); raised, not counted.

    A :class:`~pipelines.config.ConfigError` too, so the CLI reports it like any other
    setting that does not work: one line, exit 2.
    """


def public_url(url: str) -> str:
    """``url`` as it may be shown or stored: no ``user:password@``, no query, no fragment.

    Why: a base URL can carry credentials (``https://user:token@host/v1``,
    ``...?api-key=...``); it goes into ``eval.json``, the report and error messages.
    """
    try:
        parts = urlsplit(url)
        return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment=""))
    except ValueError:  # e.g. a malformed IPv6 host: show nothing of it
        return "<unparseable URL>"


@dataclass(frozen=True)
class JudgeSettings:
    """Endpoint, model and call policy; the key and the URL (it may hold credentials) are not in ``repr``."""

    base_url: str = field(repr=False)
    model: str
    api_key: str | None = field(default=None, repr=False)
    temperature: float = 0.0
    max_tokens: int = 16
    timeout_s: float = 60.0
    max_retries: int = 3
    backoff_s: float = 1.0

    @property
    def endpoint(self) -> str:
        """The base URL without credentials: what reports and errors show."""
        return public_url(self.base_url)


def judge_settings(judge: JudgeParams, env: Mapping[str, str] | None = None) -> JudgeSettings:
    """Resolve URL, model and key from ``params.judge`` and the environment."""
    env = os.environ if env is None else env
    base_url = judge.base_url or next((env[k] for k in ENV_BASE_URLS if env.get(k)), None)
    model = judge.model or env.get(ENV_MODEL)
    if not base_url or not model:
        raise JudgeConfigError(
            "the judge needs a base URL (judge.base_url, JUDGE_BASE_URL or OPENAI_BASE_URL) "
            "and a model (judge.model or JUDGE_MODEL)"
        )
    if not base_url.lower().startswith(URL_SCHEMES):  # else every call fails, retried, as noise
        raise JudgeConfigError(
            "the judge base URL must start with http:// or https:// (e.g. https://host/v1); "
            "the value given is not shown: it may hold a credential"
        )
    return JudgeSettings(
        base_url=base_url.rstrip("/"),
        model=model,
        api_key=next((env[k] for k in ENV_API_KEYS if env.get(k)), None),
        temperature=judge.temperature,
        max_tokens=judge.max_tokens,
        timeout_s=judge.timeout_s,
        max_retries=judge.max_retries,
        backoff_s=judge.backoff_s,
    )


@dataclass(frozen=True)
class ChatReply:
    text: str
    usage: dict[str, int]
    latency_s: float
    attempts: int


def backoff_delay(attempt: int, base_s: float, retry_after: str | None = None) -> float:
    """Delay before retry ``attempt`` (from 0): ``Retry-After`` if given, else base * 2**attempt."""
    if retry_after:
        try:
            seconds = float(retry_after)
        except ValueError:
            seconds = math.nan  # an HTTP date: fall back to our own schedule
        if math.isfinite(seconds):  # "nan" would make time.sleep raise
            return min(max(seconds, 0.0), MAX_BACKOFF_S)
    return min(base_s * (2**attempt), MAX_BACKOFF_S)


def parse_reply(body: Any) -> tuple[str, dict[str, int]]:
    """Text and token usage of a chat-completions response body (raises JudgeError if malformed)."""
    try:
        message = body["choices"][0]["message"]
        text = message.get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError) as err:
        raise JudgeError(f"malformed chat completion ({type(err).__name__})") from None
    if not isinstance(text, str):
        raise JudgeError("malformed chat completion (content is not text)")
    # JSON may carry lone surrogates ("\\ud83d", an emoji cut at max_tokens) that no scrubber,
    # log or exporter can encode as UTF-8
    text = without_lone_surrogates(text)
    return text, _token_usage(body.get("usage"))


def _token_usage(usage: Any) -> dict[str, int]:
    """Token counts of a reply; a malformed ``usage`` is ignored (the verdict still counts)."""
    if not isinstance(usage, Mapping):
        return {}
    tokens = {"input": usage.get("prompt_tokens"), "output": usage.get("completion_tokens")}
    return {
        k: int(v)
        for k, v in tokens.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


class _SocketDeadline:
    """Shuts down one call's socket when its time is up (httpcore's ``trace`` hands it over).

    Why shutdown, not close: a thread blocked in ``recv`` wakes up on shutdown; a close
    from another thread leaves it waiting.
    """

    def __init__(self, timeout_s: float) -> None:
        import threading

        self.fired = False
        self._sock: Any = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(timeout_s, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def trace(self, event: str, info: Mapping[str, Any]) -> None:
        if event == "connection.connect_tcp.complete":
            stream = info.get("return_value")
            with self._lock:
                self._sock = stream.get_extra_info("socket") if stream is not None else None
                if self.fired:
                    self._shutdown()

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            self._shutdown()

    def _shutdown(self) -> None:
        import socket

        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


class ChatClient:
    """Minimal OpenAI-compatible chat-completions client with retries (thread-safe)."""

    def __init__(
        self, settings: JudgeSettings, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        import httpx

        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if settings.api_key:
            headers["Authorization"] = f"Bearer {settings.api_key}"
        self.settings = settings
        self._sleep = sleep
        # a fresh connection per call: the deadline below shuts down the call's own socket,
        # which it can only catch as it connects (a judge call takes seconds; a handshake does not)
        self._http = httpx.Client(
            base_url=settings.base_url + "/", timeout=settings.timeout_s, headers=headers,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _post(self, body: Mapping[str, Any]) -> tuple[int, Any, bytes]:
        """POST ``body``: status, headers, and the body of a 2xx answer (others are not read).

        Why a deadline of our own: httpx's timeout bounds each read, so a server that
        trickles its answer (headers or body) a byte at a time would hold the call for
        ever. Here the whole answer must arrive within ``timeout_s``, else
        :class:`httpx.ReadTimeout` (retried like any): the body is checked as it streams,
        and a timer shuts the call's socket down, which also ends a read stuck in the headers.
        """
        import httpx

        timeout_s = self.settings.timeout_s
        deadline = time.perf_counter() + timeout_s
        guard = _SocketDeadline(timeout_s)

        def too_late(request: Any) -> httpx.ReadTimeout:
            return httpx.ReadTimeout(f"answer not complete after {timeout_s}s", request=request)

        try:
            with self._http.stream("POST", CHAT_PATH, json=body, extensions={"trace": guard.trace}) as resp:
                content = bytearray()
                if resp.status_code < 300:
                    for chunk in resp.iter_bytes():
                        content += chunk
                        if time.perf_counter() > deadline:
                            raise too_late(resp.request)
                return resp.status_code, resp.headers, bytes(content)
        except httpx.TransportError as err:
            if guard.fired:  # our shutdown broke the read: say why
                raise too_late(err.request) from None
            raise
        finally:
            guard.cancel()

    def complete(self, messages: Sequence[Mapping[str, str]]) -> ChatReply:
        """One chat completion (``settings.temperature``); transient failures are retried."""
        import httpx

        s = self.settings
        body = {
            "model": s.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "temperature": s.temperature,
            "max_tokens": s.max_tokens,
        }
        t0 = time.perf_counter()
        last = ""
        for attempt in range(s.max_retries + 1):
            retry_after = None
            try:
                status, headers, content = self._post(body)
            # connect/read errors, timeouts, a body that does not decode (bad gzip)
            except (httpx.TransportError, httpx.DecodingError) as err:
                last = f"{type(err).__name__}"
            else:
                if status in CONFIG_STATUS:
                    raise JudgeConfigError(
                        f"judge endpoint {s.endpoint} answered HTTP {status} "
                        f"(check the URL, model {s.model!r} and API key)"
                    )
                if status < 300:
                    try:
                        text, usage = parse_reply(json.loads(content))
                    except ValueError:
                        raise JudgeError("judge answered with a body that is not JSON") from None
                    return ChatReply(text, usage, time.perf_counter() - t0, attempt + 1)
                last = f"HTTP {status}"
                if status not in RETRY_STATUS:
                    break
                retry_after = headers.get("retry-after")
            if attempt < s.max_retries:
                delay = backoff_delay(attempt, s.backoff_s, retry_after)
                log.debug("judge: %s, retry %d in %.2fs", last, attempt + 1, delay)
                self._sleep(delay)
        raise JudgeError(f"judge call failed after {attempt + 1} attempt(s): {last}")


# --------------------------------------------------------------------------- judging


def render_conversation(messages: Iterable[Mapping[str, Any]]) -> str:
    """Chat messages as ``Role: text`` paragraphs for the judge prompt."""
    return "\n\n".join(f"{str(m['role']).capitalize()}: {m.get('content') or ''}" for m in messages)


def iter_pairs(pairs: Any) -> list[Mapping[str, Any]]:
    """Rows of a polars DataFrame (``iter_rows(named=True)``) or a sequence of mappings."""
    if hasattr(pairs, "iter_rows"):
        return list(pairs.iter_rows(named=True))
    return list(pairs)


@dataclass(frozen=True)
class JudgeCall:
    verdict: Verdict
    raw: str = ""
    usage: dict[str, int] = field(default_factory=dict)
    latency_s: float = 0.0
    error: str | None = None


def judge_once(
    client: ChatClient,
    prompt: PromptText,
    conversation: str,
    response_a: str,
    response_b: str,
    *,
    tracer: Tracer,
    metadata: Mapping[str, Any],
    scrub: Callable[[str], str],
) -> JudgeCall:
    """One judge call in one order, traced; transient failures become an invalid verdict."""
    messages = prompt.to_messages(
        conversation=conversation, response_a=response_a, response_b=response_b
    )
    s = client.settings
    with tracer.judge_span(
        model=s.model,
        input=messages,
        prompt=prompt,
        metadata=metadata,
        model_parameters={"temperature": s.temperature, "max_tokens": s.max_tokens},
    ) as obs:
        try:
            reply = client.complete(messages)
        except JudgeConfigError:
            raise
        except JudgeError as err:
            msg = str(err)[:MAX_ERROR_CHARS]
            obs.update(metadata={"verdict": INVALID, "error": msg})
            return JudgeCall(INVALID, error=msg)
        verdict = parse_verdict(reply.text)
        obs.update(
            output=reply.text,
            usage=reply.usage,
            metadata={"verdict": verdict, "attempts": reply.attempts},
        )
    return JudgeCall(verdict, scrub(reply.text[:MAX_RAW_CHARS]), reply.usage, reply.latency_s)


def judge_pairs(
    pairs: Any,
    candidate_texts: Sequence[str],
    champion_texts: Sequence[str],
    params: Params,
    tracer: Tracer | None = None,
    *,
    client: ChatClient | None = None,
) -> JudgeResult:
    """Judge candidate vs champion answers to the same prompts, each prompt in both orders.

    Args:
        pairs: the judged prompts: a DataFrame or mappings with ``prompt`` (chat messages)
            and optionally ``pair_id``; one row per answer pair.
        candidate_texts, champion_texts: the two policies' answers, aligned with ``pairs``.
        params: project parameters (``judge``, ``langfuse``, ``scrub``, ``evaluate``, ``seed``).
        tracer: a :class:`pipelines.tracing.Tracer` (no tracing when None).
        client: a :class:`ChatClient` to reuse (built from ``params.judge`` when None).

    Returns:
        A :class:`JudgeResult`. Raises :class:`JudgeConfigError` when the endpoint is
        not configured or refuses the credentials/model.
    """
    from pipelines.prompts import get_prompt
    from pipelines.tracing import Tracer, make_scrubber

    rows = iter_pairs(pairs)
    if not len(rows) == len(candidate_texts) == len(champion_texts):
        raise ValueError(
            f"{len(rows)} prompts but {len(candidate_texts)} candidate and "
            f"{len(champion_texts)} champion answers"
        )
    scrub = make_scrubber(params)
    tracer = tracer or Tracer(None, scrub)
    prompt = get_prompt(params.judge.prompt, params, required=JUDGE_VARIABLES)
    own_client = client is None
    client = client or ChatClient(judge_settings(params.judge))
    ids = [str(r.get("pair_id") or i) for i, r in enumerate(rows)]
    convs = [scrub(render_conversation(r["prompt"])) for r in rows]
    cand = [scrub(t or "") for t in candidate_texts]
    champ = [scrub(t or "") for t in champion_texts]
    calls: dict[tuple[int, str], JudgeCall] = {}
    t0 = time.perf_counter()
    try:
        with (
            tracer.span(
                JUDGE_RUN_SPAN,
                as_type="evaluator",
                metadata={
                    "n_items": len(rows),
                    "judge_model": client.settings.model,
                    "prompt": prompt.label,
                },
            ) as run_obs,
            ThreadPoolExecutor(max_workers=params.judge.concurrency) as pool,
        ):
            futures = {}
            for i in range(len(rows)):
                for order in ORDERS:
                    a, b = (cand[i], champ[i]) if order == CANDIDATE_FIRST else (champ[i], cand[i])
                    meta = {"item": ids[i], "order": order}
                    # each task runs in a copy of this context, so its span nests under the run
                    fut = pool.submit(
                        contextvars.copy_context().run,
                        judge_once,
                        client,
                        prompt,
                        convs[i],
                        a,
                        b,
                        tracer=tracer,
                        metadata=meta,
                        scrub=scrub,
                    )
                    futures[fut] = (i, order)
            try:
                for fut in as_completed(futures):
                    calls[futures[fut]] = fut.result()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            result = _result(rows, ids, calls, prompt, client.settings, params)
            result.usage["seconds"] = round(time.perf_counter() - t0, 3)
            run_obs.update(
                output={k: v for k, v in result.to_dict().items() if k not in ("items", "position")}
            )
    finally:
        if own_client:
            client.close()
    log.info(
        "judge: win-rate %.3f [%.3f, %.3f] over %d prompts (%d invalid), %s",
        result.win_rate,
        result.ci_low,
        result.ci_high,
        result.n,
        result.invalid,
        prompt.label,
    )
    return result


def _result(
    rows: Sequence[Mapping[str, Any]],
    ids: Sequence[str],
    calls: Mapping[tuple[int, str], JudgeCall],
    prompt: PromptText,
    settings: JudgeSettings,
    params: Params,
) -> JudgeResult:
    verdicts = [
        (calls[(i, CANDIDATE_FIRST)].verdict, calls[(i, CHAMPION_FIRST)].verdict)
        for i in range(len(rows))
    ]
    outcomes = [combine(v1, v2) for v1, v2 in verdicts]
    e = params.evaluate
    summary = summarize(
        outcomes, n_boot=e.bootstrap_samples, confidence=e.confidence, seed=params.seed
    )
    all_calls = list(calls.values())
    items = [
        {
            "item_id": ids[i],
            "verdict_candidate_first": v1,
            "verdict_champion_first": v2,
            "outcome": outcomes[i],
            "raw_candidate_first": calls[(i, CANDIDATE_FIRST)].raw,
            "raw_champion_first": calls[(i, CHAMPION_FIRST)].raw,
        }
        for i, (v1, v2) in enumerate(verdicts)
    ]
    usage = {
        "calls": len(all_calls),
        "errors": sum(1 for c in all_calls if c.error),
        "input_tokens": sum(c.usage.get("input", 0) for c in all_calls),
        "output_tokens": sum(c.usage.get("output", 0) for c in all_calls),
        "mean_latency_s": round(sum(c.latency_s for c in all_calls) / max(len(all_calls), 1), 4),
    }
    judge = {
        "model": settings.model,
        "endpoint": settings.endpoint,
        "prompt": prompt.summary(),
        "temperature": settings.temperature,
    }
    return JudgeResult(
        **summary, position=position_stats(verdicts), judge=judge, usage=usage, items=items
    )


# --------------------------------------------------------------------------- generation


def generate_responses(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[Mapping[str, Any]]],
    params: Params,
    tracer: Tracer | None = None,
    *,
    model_name: str = "policy",
    base_fallback: Path | None = None,
) -> list[str]:
    """Greedy answers of one policy to chat prompts, each traced as a generation.

    ``model`` is a loaded causal LM (with ``tokenizer``) or a policy folder (plain model
    or candidate; loaded with :func:`pipelines.model.load_policy`, tokenizer ignored).
    The system prompt ``params.judge.system_prompt`` (from Langfuse or its fallback) is
    put first when a conversation has none; prompts are cut from the left exactly as in
    training; at most ``params.judge.max_new_tokens`` new tokens, no sampling.
    """
    import torch

    from pipelines.model import fit_prompt, load_policy, pair_messages, plan_device
    from pipelines.prompts import get_prompt
    from pipelines.tracing import Tracer, make_scrubber

    tracer = tracer or Tracer(None, make_scrubber(params))
    if isinstance(model, str | Path):
        plan = plan_device(params.train, builtin=params.model.source == "builtin")
        model, tokenizer = load_policy(
            model, device=plan.device, dtype=plan.dtype_name, base_fallback=base_fallback
        )
    if tokenizer is None:
        raise ValueError("a loaded model needs its tokenizer")
    model.eval()
    system = get_prompt(params.judge.system_prompt, params) if params.judge.system_prompt else None
    system_msgs = system.to_messages(role="system") if system else []
    device = next(model.parameters()).device
    max_new = params.judge.max_new_tokens
    out: list[str] = []
    for prompt in prompts:
        msgs = pair_messages(prompt)
        if system_msgs and not any(m["role"] == "system" for m in msgs):
            msgs = [*system_msgs, *msgs]
        msgs = fit_prompt(tokenizer, msgs, params.train.max_prompt_length)
        enc = tokenizer.apply_chat_template(
            msgs, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        enc = {k: v.to(device) for k, v in enc.items()}
        n_in = int(enc["input_ids"].shape[1])
        with tracer.generation(
            GENERATION_SPAN,
            model=model_name,
            input=msgs,
            prompt=system,
            model_parameters={"max_new_tokens": max_new, "do_sample": False},
        ) as obs:
            with torch.inference_mode():
                gen = model.generate(
                    **enc,
                    max_new_tokens=max_new,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                )
            new_ids = gen[0, n_in:]
            text = tokenizer.decode(new_ids, skip_special_tokens=True).strip()
            obs.update(output=text, usage={"input": n_in, "output": int(new_ids.numel())})
        out.append(text)
    return out


def sample_pairs(pairs: Any, n: int, seed: int) -> Any:
    """A seeded sample of ``n`` test pairs with distinct prompts (all of them when fewer)."""
    import polars as pl

    df = pairs.sort("pair_id")
    convs = pl.Series(
        "_conv", [render_conversation(p) for p in df["prompt"].to_list()], dtype=pl.String
    )
    df = (
        df.with_columns(convs)
        .unique(subset="_conv", keep="first", maintain_order=True)
        .drop("_conv")
    )
    return df.sample(n=n, seed=seed).sort("pair_id") if df.height > n else df


def run_judge(
    candidate: Path,
    reference: Path,
    pairs: Any,
    params: Params,
    *,
    base_fallback: Path | None = None,
    tracer: Tracer | None = None,
    client: ChatClient | None = None,
) -> JudgeResult:
    """The whole judge step of ``evaluate``: sample test prompts, let both policies answer, judge.

    Checks the judge's configuration before spending time on generation. One policy is
    in memory at a time.
    """
    from pipelines.model import pair_messages

    if client is None:
        judge_settings(params.judge)  # fail fast on a missing URL or model
    sample = sample_pairs(pairs, params.judge.sample_size, params.seed)
    prompts = [pair_messages(p) for p in sample["prompt"].to_list()]
    answers = {}
    for name, folder in (("candidate", candidate), ("champion", reference)):
        answers[name] = generate_responses(
            folder, None, prompts, params, tracer, model_name=name, base_fallback=base_fallback
        )
        gc.collect()
    return judge_pairs(
        sample, answers["candidate"], answers["champion"], params, tracer, client=client
    )
