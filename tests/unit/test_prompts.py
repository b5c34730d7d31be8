"""Prompt templates, bundled fallbacks and the no-Langfuse path (no network here)."""

from __future__ import annotations

import pytest

from pipelines import prompts as P
from pipelines.config import ConfigError, Params, parse_params
from pipelines.judge import JUDGE_VARIABLES
from pipelines.tracing import ENV_HOSTS, ENV_PUBLIC_KEY, ENV_SECRET_KEY, langfuse_settings

LANGFUSE_ENV = (*ENV_HOSTS, ENV_PUBLIC_KEY, ENV_SECRET_KEY)


@pytest.fixture(autouse=True)
def _fresh_cache():
    P.clear_cache()
    yield
    P.clear_cache()


@pytest.fixture
def no_langfuse_env(monkeypatch):
    for k in LANGFUSE_ENV:
        monkeypatch.delenv(k, raising=False)


# --------------------------------------------------------------------------- templates


def test_compile_fills_variables_and_keeps_unknown_ones_like_langfuse():
    out = P.compile_template("Hi {{ name }}, {{missing}} and {{name}}.", {"name": "Ada"})
    assert out == "Hi Ada, {{missing}} and Ada."
    assert P.compile_template("[{{x}}]", {"x": None}) == "[]"
    assert P.compile_template("{{n}}", {"n": 3}) == "3"


def test_compile_is_single_pass_so_values_cannot_inject_variables():
    out = P.compile_template("A: {{a}} B: {{b}}", {"a": "{{b}}", "b": "secret"})
    assert out == "A: {{b}} B: secret"


def test_template_variables_in_order_without_duplicates():
    assert P.template_variables("{{b}} {{a}} {{ b }}") == ["b", "a"]


def test_prompt_text_text_and_chat_forms():
    t = P.PromptText(name="t", text="Say {{x}}", version=2, source="langfuse")
    assert t.kind == "text" and t.label == "t@v2"
    assert t.compile(x="hi") == "Say hi"
    assert t.to_messages(role="system", x="hi") == [{"role": "system", "content": "Say hi"}]
    c = P.PromptText(
        name="c",
        messages=(
            {"role": "system", "content": "Be {{tone}}"},
            {"role": "user", "content": "{{q}}"},
        ),
    )
    assert c.kind == "chat" and c.label == "c@fallback"
    assert c.variables == ["tone", "q"]
    assert c.compile(tone="brief", q="why?") == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "why?"},
    ]
    assert c.missing(["q", "other"]) == ["other"]
    assert c.summary() == {"name": "c", "version": None, "source": "fallback"}


def test_prompt_text_needs_exactly_one_body():
    with pytest.raises(ValueError):
        P.PromptText(name="x")
    with pytest.raises(ValueError):
        P.PromptText(name="x", text="a", messages=({"role": "user", "content": "b"},))


# --------------------------------------------------------------------------- fallbacks


def test_bundled_judge_prompt_uses_every_judge_variable():
    p = P.load_fallback("judge_pairwise")
    assert p.source == "fallback" and p.version is None
    assert p.missing(JUDGE_VARIABLES) == []
    text = p.compile(conversation="User: hi", response_a="AAA", response_b="BBB")
    assert "### Response A\nAAA" in text and "### Response B\nBBB" in text
    assert "{{" not in text


def test_bundled_system_prompt_exists_and_has_no_variables():
    p = P.load_fallback("generation_system")
    assert p.text and p.variables == []


def test_unknown_or_unsafe_fallback_names_fail_clearly():
    with pytest.raises(FileNotFoundError, match="no_such_prompt"):
        P.load_fallback("no_such_prompt")
    with pytest.raises(ValueError, match="invalid prompt name"):
        P.load_fallback("../config")


# --------------------------------------------------------------------------- settings


def test_langfuse_settings_need_host_and_both_keys(no_langfuse_env):
    assert langfuse_settings(Params(), env={}) is None
    env = {
        "LANGFUSE_HOST": "http://lf:3000/",
        "LANGFUSE_PUBLIC_KEY": "pk",
        "LANGFUSE_SECRET_KEY": "sk",
    }
    s = langfuse_settings(Params(), env=env)
    assert (s.host, s.public_key, s.secret_key) == ("http://lf:3000", "pk", "sk")
    for missing in env:
        assert (
            langfuse_settings(Params(), env={k: v for k, v in env.items() if k != missing}) is None
        )


def test_langfuse_settings_prefer_params_then_base_url_and_hide_the_secret():
    env = {
        "LANGFUSE_BASE_URL": "http://base",
        "LANGFUSE_HOST": "http://host",
        "LANGFUSE_PUBLIC_KEY": "pk-env",
        "LANGFUSE_SECRET_KEY": "sk-very-secret",
    }
    assert langfuse_settings(Params(), env=env).host == "http://base"
    p = parse_params(
        {"langfuse": {"host": "http://params", "public_key": "pk-params", "label": "staging"}}
    )
    s = langfuse_settings(p, env=env)
    assert (s.host, s.public_key, s.label) == ("http://params", "pk-params", "staging")
    assert "sk-very-secret" not in repr(s)


def test_langfuse_params_validate():
    with pytest.raises(ConfigError, match="reserved"):
        parse_params({"langfuse": {"environment": "langfuse-prod"}})
    with pytest.raises(ConfigError, match="environment"):
        parse_params({"langfuse": {"environment": "Prod"}})
    with pytest.raises(ConfigError, match="prompt_retries"):
        parse_params({"langfuse": {"prompt_retries": 9}})


# --------------------------------------------------------------------------- get_prompt


def test_get_prompt_without_langfuse_uses_the_fallback_and_caches(no_langfuse_env):
    p = P.get_prompt("judge_pairwise", Params(), required=JUDGE_VARIABLES)
    assert p.source == "fallback"
    assert P.get_prompt("judge_pairwise", Params(), required=JUDGE_VARIABLES) is p
    P.clear_cache()
    assert P.get_prompt("judge_pairwise", Params(), required=JUDGE_VARIABLES) is not p


def test_get_prompt_with_prompts_off_never_asks_langfuse(monkeypatch):
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", "sk")
    # port 9 (discard) would hang or refuse; prompts: false must not even try
    params = parse_params(
        {"langfuse": {"host": "http://127.0.0.1:9", "public_key": "pk-off", "prompts": False}}
    )
    assert P.get_prompt("generation_system", params).source == "fallback"


# --------------------------------------------------------------------------- SDK objects


def test_from_sdk_converts_real_text_and_chat_prompt_clients():
    from langfuse.api import Prompt_Chat, Prompt_Text
    from langfuse.model import ChatPromptClient, TextPromptClient

    text = TextPromptClient(
        Prompt_Text(
            name="t", version=4, prompt="Do {{x}}", config={"k": 1}, labels=["production"], tags=[]
        )
    )
    p = P.from_sdk(text)
    assert (p.text, p.version, p.source, dict(p.config)) == ("Do {{x}}", 4, "langfuse", {"k": 1})
    chat = ChatPromptClient(
        Prompt_Chat(
            name="c",
            version=2,
            config={},
            labels=[],
            tags=[],
            prompt=[{"role": "system", "content": "S {{y}}"}, {"role": "user", "content": "U"}],
        )
    )
    c = P.from_sdk(chat)
    assert c.messages == (
        {"role": "system", "content": "S {{y}}"},
        {"role": "user", "content": "U"},
    )
    with_placeholder = ChatPromptClient(
        Prompt_Chat(
            name="h",
            version=1,
            config={},
            labels=[],
            tags=[],
            prompt=[{"type": "placeholder", "name": "history"}],
        )
    )
    with pytest.raises(ValueError, match="placeholder"):
        P.from_sdk(with_placeholder)
