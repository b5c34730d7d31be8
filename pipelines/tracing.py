"""Langfuse tracing of evaluation generations and judge calls: a thin, fail-safe wrapper.

Why a wrapper and not the SDK directly: three promises the SDK alone does not keep.

- **Off unless configured.** Without a Langfuse host and both keys (``params.langfuse``
  and/or ``LANGFUSE_BASE_URL``/``LANGFUSE_HOST``, ``LANGFUSE_PUBLIC_KEY``,
  ``LANGFUSE_SECRET_KEY``) :func:`tracer` returns a no-op :class:`Tracer`: the same
  context managers, nothing sent, no SDK imported.
- **Only scrubbed text.** Every input, output, metadata string and error message goes
  through :func:`pipelines.pii.scrub_text` before it reaches the SDK (defence in depth:
  evaluation texts come from scrubbed data already, but generations are new text).
- **Never fails a stage.** An SDK or network error is logged and the work goes on.

The real Langfuse SDK (v5, OpenTelemetry based) does the export: spans go as OTLP/HTTP
protobuf to ``{host}/api/public/otel/v1/traces`` with basic auth (public key, secret key).
Each client gets its own OpenTelemetry ``TracerProvider`` rather than the global one, so
other OpenTelemetry users in the process (MLflow tracing, say) neither receive our spans
nor send theirs to Langfuse.

Usage::

    from pipelines.tracing import tracer

    t = tracer(params)
    with t.generation("eval.generate", model="candidate", input=messages, prompt=system) as g:
        text = ...
        g.update(output=text, usage={"input": 31, "output": 12})
    t.flush()
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.config import Params
    from pipelines.prompts import PromptText

log = logging.getLogger(__name__)

ENV_HOSTS = ("LANGFUSE_BASE_URL", "LANGFUSE_HOST")
"""Host variables, in the order the Langfuse SDK itself reads them."""
ENV_PUBLIC_KEY = "LANGFUSE_PUBLIC_KEY"
ENV_SECRET_KEY = "LANGFUSE_SECRET_KEY"

GENERATION = "generation"
SPAN = "span"
EVALUATOR = "evaluator"
JUDGE_SPAN_NAME = "judge.pairwise"
"""Name of one judge call (a generation observation of the judge model)."""

MAX_STATUS_CHARS = 500
USAGE_KEYS = ("input", "output")
"""Langfuse's usage keys for token counts; ``total`` is derived."""


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class LangfuseSettings:
    """Everything needed to reach Langfuse; hashable so clients and prompts can be cached.

    The secret key is excluded from ``repr`` so the settings can appear in logs.
    """

    host: str
    public_key: str
    secret_key: str = field(repr=False)
    label: str = "production"
    cache_ttl_s: int = 300
    timeout_s: int = 5
    prompt_retries: int = 1
    environment: str | None = None


def langfuse_settings(
    params: Params, env: Mapping[str, str] | None = None
) -> LangfuseSettings | None:
    """Resolve host and keys from ``params.langfuse`` and the environment; None = not configured.

    Params win over the environment for host and public key; the secret key is read from
    the environment only (``params.yaml`` is versioned).
    """
    env = os.environ if env is None else env
    lf = params.langfuse
    host = lf.host or next((env[k] for k in ENV_HOSTS if env.get(k)), None)
    public_key = lf.public_key or env.get(ENV_PUBLIC_KEY)
    secret_key = env.get(ENV_SECRET_KEY)
    if not (host and public_key and secret_key):
        return None
    return LangfuseSettings(
        host=host.rstrip("/"),
        public_key=public_key,
        secret_key=secret_key,
        label=lf.label,
        cache_ttl_s=lf.cache_ttl_s,
        timeout_s=lf.timeout_s,
        prompt_retries=lf.prompt_retries,
        environment=lf.environment,
    )


def langfuse_client(settings: LangfuseSettings) -> Any:
    """One Langfuse client per endpoint and keys in this process (prompts and tracing share it).

    Cached on what the SDK's own per-public-key singleton depends on (host, keys,
    timeout, environment), not on the label or cache lifetime, so two settings that
    differ only there do not make a second client the SDK would silently merge.
    """
    return _client(
        settings.host,
        settings.public_key,
        settings.secret_key,
        settings.timeout_s,
        settings.environment,
    )


@functools.lru_cache(maxsize=8)
def _client(
    host: str, public_key: str, secret_key: str, timeout_s: int, environment: str | None
) -> Any:
    """Build the SDK client.

    ``base_url`` is passed explicitly because the SDK otherwise prefers the
    ``LANGFUSE_BASE_URL`` variable over its ``host`` argument. Tracing stays enabled in
    the SDK even when only prompts are wanted: its per-key singleton would otherwise keep
    a tracing-less setup for later tracer calls.
    """
    from langfuse import Langfuse
    from opentelemetry.sdk.trace import TracerProvider

    return Langfuse(
        public_key=public_key,
        secret_key=secret_key,
        base_url=host,
        timeout=timeout_s,
        environment=environment,
        tracer_provider=TracerProvider(),
    )


# --------------------------------------------------------------------------- scrubbing


Scrub = Callable[[str], str]


def make_scrubber(params: Params) -> Scrub:
    """``text -> scrubbed text`` with the project's entity list and placeholder format."""
    from pipelines.pii import scrub_text

    entities = tuple(params.scrub.entities)
    placeholder = params.scrub.placeholder_format

    def scrub(text: str) -> str:
        return scrub_text(text, entities, placeholder)[0]

    return scrub


def scrub_value(value: Any, scrub: Scrub) -> Any:
    """Scrub every string inside ``value`` (str, list/tuple, dict values); numbers pass."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {str(k): scrub_value(v, scrub) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_value(v, scrub) for v in value]
    return value


def usage_details(usage: Mapping[str, int] | None) -> dict[str, int] | None:
    """Langfuse usage: ``input``/``output`` token counts plus their ``total``."""
    if not usage:
        return None
    out = {k: int(usage[k]) for k in USAGE_KEYS if usage.get(k) is not None}
    if out:
        out["total"] = int(usage.get("total", sum(out.values())))
    return out or None


def prompt_metadata(prompt: PromptText | None) -> dict[str, Any]:
    """Prompt name, version and source for metadata (fallback prompts are not linked)."""
    if prompt is None:
        return {}
    return {
        "prompt_name": prompt.name,
        "prompt_version": prompt.version,
        "prompt_source": prompt.source,
    }


def sdk_prompt(prompt: PromptText | None) -> Any:
    """The SDK prompt object that links a generation to a Langfuse prompt version, or None."""
    if prompt is None or prompt.source != "langfuse" or prompt.version is None:
        return None
    from langfuse.api import Prompt_Text
    from langfuse.model import TextPromptClient

    return TextPromptClient(
        Prompt_Text(
            name=prompt.name, version=prompt.version, prompt="", config={}, labels=[], tags=[]
        )
    )


# --------------------------------------------------------------------------- tracer


class Observation:
    """What a traced block may set: output, usage, metadata, all scrubbed on the way in."""

    def __init__(self, sdk_obs: Any, scrub: Scrub) -> None:
        self._obs = sdk_obs
        self._scrub = scrub

    @property
    def recording(self) -> bool:
        return self._obs is not None

    def update(
        self,
        *,
        output: Any = None,
        usage: Mapping[str, int] | None = None,
        metadata: Mapping[str, Any] | None = None,
        model: str | None = None,
    ) -> None:
        """Record the result of the traced call; never raises."""
        if self._obs is None:
            return
        fields: dict[str, Any] = {}
        try:
            if output is not None:
                fields["output"] = scrub_value(output, self._scrub)
            if (u := usage_details(usage)) is not None:
                fields["usage_details"] = u
            if metadata:
                fields["metadata"] = scrub_value(dict(metadata), self._scrub)
        except Exception as err:  # e.g. text the scrubber cannot read: send nothing unscrubbed
            log.warning("langfuse: update dropped, scrubbing failed (%s)", type(err).__name__)
            return
        if model is not None:
            fields["model"] = model
        self._call("update", **fields)

    def _fail(self, err: BaseException) -> None:
        try:
            message = self._scrub(f"{type(err).__name__}: {err}")[:MAX_STATUS_CHARS]
        except Exception:  # the traced error must propagate, not a scrubbing one
            message = type(err).__name__
        self._call("update", level="ERROR", status_message=message)

    def _call(self, method: str, **kwargs: Any) -> None:
        try:
            getattr(self._obs, method)(**kwargs)
        except Exception as err:  # tracing must never break the traced work
            log.debug("langfuse %s failed: %s", method, err)


class Tracer:
    """Context managers for traced work; a no-op when ``client`` is None."""

    def __init__(self, client: Any | None, scrub: Scrub) -> None:
        self._client = client
        self._scrub = scrub

    @property
    def enabled(self) -> bool:
        return self._client is not None

    def generation(
        self,
        name: str,
        *,
        model: str,
        input: Any = None,
        prompt: PromptText | None = None,
        model_parameters: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> contextlib.AbstractContextManager[Observation]:
        """One model call: model, prompt name/version, input; the block adds output and usage."""
        return self._observe(
            name,
            GENERATION,
            input=input,
            metadata={**prompt_metadata(prompt), **(metadata or {})},
            model=model,
            model_parameters=dict(model_parameters) if model_parameters else None,
            prompt=prompt,
        )

    def judge_span(
        self,
        *,
        model: str,
        input: Any = None,
        prompt: PromptText | None = None,
        model_parameters: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> contextlib.AbstractContextManager[Observation]:
        """One judge call (a generation of the judge model named :data:`JUDGE_SPAN_NAME`)."""
        return self.generation(
            JUDGE_SPAN_NAME,
            model=model,
            input=input,
            prompt=prompt,
            model_parameters=model_parameters,
            metadata=metadata,
        )

    def span(
        self,
        name: str,
        *,
        input: Any = None,
        metadata: Mapping[str, Any] | None = None,
        as_type: str = SPAN,
    ) -> contextlib.AbstractContextManager[Observation]:
        """A parent observation grouping calls (e.g. one judge run over many pairs)."""
        return self._observe(name, as_type, input=input, metadata=metadata)

    @contextlib.contextmanager
    def _observe(self, name: str, as_type: str, **fields: Any) -> Iterator[Observation]:
        cm, obs = self._start(name, as_type, fields)
        handle = Observation(obs, self._scrub)
        t0 = time.perf_counter()
        try:
            yield handle
        except BaseException as err:
            handle._fail(err)
            raise
        finally:
            if cm is not None:
                handle._call(
                    "update", metadata={"latency_ms": round((time.perf_counter() - t0) * 1000, 1)}
                )
                try:
                    # No exception passed on: OpenTelemetry would record its raw message.
                    cm.__exit__(None, None, None)
                except Exception as err:
                    log.debug("langfuse: ending span %r failed: %s", name, err)

    def _start(self, name: str, as_type: str, fields: dict[str, Any]) -> tuple[Any, Any]:
        if self._client is None:
            return None, None
        try:
            kwargs = {k: v for k, v in fields.items() if v is not None and v != {}}
            if "input" in kwargs:
                kwargs["input"] = scrub_value(kwargs["input"], self._scrub)
            if "metadata" in kwargs:
                kwargs["metadata"] = scrub_value(kwargs["metadata"], self._scrub)
            if "prompt" in kwargs:
                kwargs["prompt"] = sdk_prompt(kwargs["prompt"])
                if kwargs["prompt"] is None:
                    del kwargs["prompt"]
            cm = self._client.start_as_current_observation(name=name, as_type=as_type, **kwargs)
            return cm, cm.__enter__()
        except Exception as err:
            log.warning(
                "langfuse: could not start %s %r (%s); continuing untraced", as_type, name, err
            )
            return None, None

    def flush(self) -> None:
        """Send buffered spans now (blocks for at most about the SDK timeout)."""
        if self._client is not None:
            try:
                self._client.flush()
            except Exception as err:
                log.warning("langfuse: flush failed: %s", err)

    def shutdown(self) -> None:
        """Flush and stop the SDK's background threads (at the end of a stage)."""
        if self._client is not None:
            try:
                self._client.shutdown()
            except Exception as err:
                log.warning("langfuse: shutdown failed: %s", err)


def tracer(params: Params) -> Tracer:
    """A :class:`Tracer` for ``params``: real when Langfuse is configured and tracing is on."""
    scrub = make_scrubber(params)
    settings = langfuse_settings(params) if params.langfuse.tracing else None
    if settings is None:
        return Tracer(None, scrub)
    try:
        client = langfuse_client(settings)
    except Exception as err:
        log.warning(
            "langfuse: client for %s could not be built (%s); tracing off", settings.host, err
        )
        return Tracer(None, scrub)
    log.info("langfuse: tracing to %s", settings.host)
    return Tracer(client, scrub)
