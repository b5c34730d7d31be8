"""Prompts from Langfuse prompt management, with bundled fallback files.

Why: a prompt hard-coded in a string cannot be versioned, reviewed or rolled back apart
from the code. Langfuse holds the judge prompt and the generation system prompt; the
label (``production`` by default) says which version a run uses, and that version is
recorded with every traced generation and in the evaluation report.

:func:`get_prompt` asks Langfuse only when it is configured (see
:func:`pipelines.tracing.langfuse_settings`) and ``langfuse.prompts`` is on. Any failure
(host unreachable, bad keys, unknown prompt, a served prompt lacking a variable the
caller needs, the SDK raising on missing keys even when given a fallback) logs a warning
and returns the bundled file ``pipelines/resources/prompts/<name>.txt``; nothing fails.

Caching is two-level: the SDK caches for ``langfuse.cache_ttl_s``, and this module keeps
the first answer for the life of the process, so every call of one stage run uses the
same prompt version (a judge run must not change its prompt halfway) and a dead host is
asked once, not once per pair. :func:`clear_cache` forgets.

Templates use Langfuse's ``{{variable}}`` syntax; :meth:`PromptText.compile` fills them
in one pass, so a value that itself contains ``{{...}}`` is never expanded.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pipelines.config import Params
    from pipelines.tracing import LangfuseSettings

log = logging.getLogger(__name__)

FALLBACK_DIR = ("resources", "prompts")
"""Bundled prompt files, relative to the ``pipelines`` package."""
FALLBACK_SUFFIX = ".txt"
VARIABLE_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}\}")
SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$")
MAX_ERROR_CHARS = 200
PROMPT_CACHE_SIZE = 64

Source = Literal["langfuse", "fallback"]
Message = dict[str, str]


def compile_template(template: str, variables: Mapping[str, Any]) -> str:
    """Fill ``{{name}}`` placeholders in one pass; unknown names stay as written (like Langfuse).

    ``None`` becomes the empty string. Substituted text is not scanned again, so user or
    model text containing ``{{...}}`` cannot inject a variable.
    """

    def fill(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in variables:
            return m.group(0)
        value = variables[name]
        return "" if value is None else str(value)

    return VARIABLE_RE.sub(fill, template)


def template_variables(template: str) -> list[str]:
    """Variable names in order of first appearance."""
    return list(dict.fromkeys(VARIABLE_RE.findall(template)))


@dataclass(frozen=True)
class PromptText:
    """A resolved prompt: a text template or chat messages, its version and where it came from.

    ``version`` is Langfuse's version number, or None for a bundled fallback.
    """

    name: str
    text: str | None = None
    messages: tuple[Message, ...] | None = None
    version: int | None = None
    source: Source = "fallback"
    config: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.text is None) == (self.messages is None):
            raise ValueError("a prompt has either text or messages")

    @property
    def kind(self) -> Literal["text", "chat"]:
        return "text" if self.text is not None else "chat"

    @property
    def label(self) -> str:
        """``name@v3`` or ``name@fallback``: short, for logs and reports."""
        return (
            f"{self.name}@v{self.version}"
            if self.version is not None
            else f"{self.name}@{self.source}"
        )

    @property
    def variables(self) -> list[str]:
        parts = (
            [self.text] if self.text is not None else [m["content"] for m in self.messages or ()]
        )
        return list(dict.fromkeys(v for p in parts for v in template_variables(p)))

    def missing(self, required: Sequence[str]) -> list[str]:
        """Required variables the template does not use."""
        have = set(self.variables)
        return [v for v in required if v not in have]

    def compile(self, **variables: Any) -> str | list[Message]:
        """The filled template: a string for a text prompt, messages for a chat prompt."""
        if self.text is not None:
            return compile_template(self.text, variables)
        return [
            {"role": m["role"], "content": compile_template(m["content"], variables)}
            for m in self.messages or ()
        ]

    def to_messages(self, role: str = "user", **variables: Any) -> list[Message]:
        """Chat messages either way: a text prompt becomes one message of ``role``."""
        out = self.compile(**variables)
        return [{"role": role, "content": out}] if isinstance(out, str) else out

    def summary(self) -> dict[str, Any]:
        """Name, version and source, for reports and metadata."""
        return {"name": self.name, "version": self.version, "source": self.source}


# --------------------------------------------------------------------------- fallback


def fallback_path(name: str) -> Any:
    """The bundled file of prompt ``name`` (folder names ``a/b`` map to ``a__b``)."""
    if not SAFE_NAME_RE.match(name):
        raise ValueError(f"invalid prompt name {name!r}")
    folder = resources.files("pipelines").joinpath(*FALLBACK_DIR)
    return folder / (name.replace("/", "__") + FALLBACK_SUFFIX)


def load_fallback(name: str) -> PromptText:
    """The bundled prompt ``name`` as a text prompt (trailing newline dropped)."""
    path = fallback_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"no bundled fallback for prompt {name!r} (expected {path})")
    return PromptText(
        name=name, text=path.read_text(encoding="utf-8").rstrip("\n"), source="fallback"
    )


# --------------------------------------------------------------------------- langfuse


def from_sdk(client: Any) -> PromptText:
    """Convert an SDK prompt client (text or chat) to a :class:`PromptText`.

    Chat placeholders (slots for message history) are not used by this project; a
    prompt that has one is rejected so that the fallback is used instead.
    """
    body = client.prompt
    common = {
        "name": client.name,
        "version": int(client.version),
        "source": "langfuse",
        "config": dict(client.config or {}),
    }
    if isinstance(body, str):
        return PromptText(text=body, **common)
    messages: list[Message] = []
    for m in body:
        if m.get("type") == "placeholder":
            raise ValueError(
                f"chat prompt {client.name!r} has a placeholder, which is not supported"
            )
        messages.append({"role": str(m["role"]), "content": str(m["content"])})
    return PromptText(messages=tuple(messages), **common)


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err)[:MAX_ERROR_CHARS]}"


def fetch_prompt(name: str, settings: LangfuseSettings) -> PromptText:
    """Ask Langfuse for ``name`` at ``settings.label`` through the SDK (raises on any failure)."""
    from pipelines.tracing import langfuse_client

    client = langfuse_client(settings).get_prompt(
        name,
        label=settings.label,
        cache_ttl_seconds=settings.cache_ttl_s,
        max_retries=settings.prompt_retries,
        fetch_timeout_seconds=settings.timeout_s,
    )
    return from_sdk(client)


@functools.lru_cache(maxsize=PROMPT_CACHE_SIZE)
def _resolve(name: str, settings: LangfuseSettings | None, required: tuple[str, ...]) -> PromptText:
    if settings is None:
        return load_fallback(name)
    try:
        prompt = fetch_prompt(name, settings)
    except Exception as err:  # any failure: the bundled file, never a crash
        log.warning(
            "prompt %r: Langfuse at %s failed (%s); using the bundled fallback",
            name,
            settings.host,
            _describe(err),
        )
        return load_fallback(name)
    if missing := prompt.missing(required):
        log.warning(
            "prompt %r v%s from Langfuse lacks variables %s; using the bundled fallback",
            name,
            prompt.version,
            missing,
        )
        return load_fallback(name)
    log.info("prompt %s from Langfuse (%s)", prompt.label, settings.label)
    return prompt


def get_prompt(name: str, params: Params, *, required: Sequence[str] = ()) -> PromptText:
    """Prompt ``name``: Langfuse's ``langfuse.label`` version when reachable, else the bundled file.

    Args:
        name: prompt name in Langfuse and of the bundled file (``resources/prompts/<name>.txt``).
        params: project parameters (``params.langfuse``; keys may come from the environment).
        required: variables the caller fills; a served prompt without one of them is not used.

    Returns:
        A :class:`PromptText` with ``source`` ``"langfuse"`` (and its version) or ``"fallback"``.
    """
    from pipelines.tracing import langfuse_settings

    settings = langfuse_settings(params) if params.langfuse.prompts else None
    return _resolve(name, settings, tuple(required))


def clear_cache() -> None:
    """Forget resolved prompts (the SDK's own cache keeps its TTL)."""
    _resolve.cache_clear()
