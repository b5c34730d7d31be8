"""The judge's pure parts: verdict parsing, the order-swap rule, the win-rate and its interval,
position-bias statistics, settings, backoff and the gate criterion."""

from __future__ import annotations

import itertools
import math

import pytest

from pipelines import judge as J
from pipelines.config import ConfigError, JudgeParams, parse_params

# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A", "A"),
        ("B", "B"),
        ("tie", "tie"),
        ("  Tie.\n", "tie"),
        ("**B**", "B"),
        ("b", "B"),
        ("Response A", "A"),
        ('"A"', "A"),
        ("[[B]]", "B"),
        ("[[C]]", "tie"),
        ("Reasoning... [[A]] then again [[B]]", "B"),
        ('{"verdict": "B", "reason": "shorter"}', "B"),
        ('{"winner": "tie"}', "tie"),
        ('{"score": 3}', "invalid"),
        ("A. It answers the question.", "A"),
        ("B: more precise", "B"),
        ("A is better because it is precise.", "A"),
        ("Both are fine.\nVerdict: B", "B"),
        ("Verdict: A\n...on reflection, final verdict: **tie**", "tie"),
        ("The better response is B.", "B"),
        ("Response B is clearly better.", "B"),
        ("It's a tie.", "tie"),
        ("Neither is better.", "tie"),
        ("", "invalid"),
        (None, "invalid"),
        ("I cannot decide.", "invalid"),
        ("Response A is short and Response B is long.", "invalid"),
        ("A response that is concise would be better.", "invalid"),
        ('{"verdict": ', "invalid"),
    ],
)
def test_parse_verdict(text, expected):
    assert J.parse_verdict(text) == expected


# --------------------------------------------------------------------------- combination


def test_candidate_side_undoes_the_swap():
    assert J.candidate_side("A", J.CANDIDATE_FIRST) == 1
    assert J.candidate_side("B", J.CANDIDATE_FIRST) == -1
    assert J.candidate_side("A", J.CHAMPION_FIRST) == -1
    assert J.candidate_side("B", J.CHAMPION_FIRST) == 1
    assert J.candidate_side("tie", J.CHAMPION_FIRST) == 0
    assert J.candidate_side("invalid", J.CANDIDATE_FIRST) is None


COMBINE_TABLE = {
    ("A", "B"): "win",  # candidate preferred in both orders
    ("B", "A"): "loss",  # champion preferred in both orders
    ("A", "A"): "tie",  # always the first answer: position bias, no information
    ("B", "B"): "tie",  # always the second answer
    ("tie", "tie"): "tie",
    ("A", "tie"): "tie",
    ("tie", "B"): "tie",
    ("B", "tie"): "tie",
    ("tie", "A"): "tie",
    ("A", "invalid"): "tie",
    ("invalid", "B"): "tie",
    ("B", "invalid"): "tie",
    ("invalid", "A"): "tie",
    ("tie", "invalid"): "tie",
    ("invalid", "tie"): "tie",
    ("invalid", "invalid"): "invalid",
}


def test_combine_covers_every_pair_of_verdicts():
    verdicts = ("A", "B", "tie", "invalid")
    assert set(COMBINE_TABLE) == set(itertools.product(verdicts, verdicts))
    for (v1, v2), outcome in COMBINE_TABLE.items():
        assert J.combine(v1, v2) == outcome, (v1, v2)


def test_a_judge_that_always_picks_one_position_gives_only_ties():
    for letter in ("A", "B"):
        outcomes = [J.combine(letter, letter) for _ in range(30)]
        s = J.summarize(outcomes, n_boot=500)
        assert (s["wins"], s["losses"], s["ties"]) == (0, 0, 30)
        assert s["win_rate"] == 0.5
        assert s["ci_low"] <= 0.5 <= s["ci_high"]
        assert s["p_value"] == 1.0


# --------------------------------------------------------------------------- statistics


def test_summarize_counts_ties_as_half_and_leaves_invalid_out():
    outcomes = ["win"] * 6 + ["loss"] * 2 + ["tie"] * 2 + ["invalid"] * 3
    s = J.summarize(outcomes, n_boot=2000, confidence=0.95, seed=1)
    assert (s["n_items"], s["n"], s["invalid"]) == (13, 10, 3)
    assert s["win_rate"] == pytest.approx(0.7)
    assert s["ci_low"] < 0.7 < s["ci_high"]
    assert s["ci_low"] > 0.3 and s["ci_high"] <= 1.0
    # sign test on decisive prompts: P(X >= 6 | n=8, p=0.5) = 37/256
    assert s["p_value"] == pytest.approx(37 / 256)


def test_summarize_interval_narrows_with_more_prompts_and_is_seeded():
    small = J.summarize(["win", "loss", "tie", "win"] * 5, n_boot=1000, seed=3)
    large = J.summarize(["win", "loss", "tie", "win"] * 50, n_boot=1000, seed=3)
    assert small["win_rate"] == large["win_rate"] == pytest.approx(0.625)
    assert large["ci_high"] - large["ci_low"] < small["ci_high"] - small["ci_low"]
    assert J.summarize(["win", "loss", "tie", "win"] * 5, n_boot=1000, seed=3) == small


def test_summarize_with_nothing_valid_is_not_a_number():
    s = J.summarize(["invalid", "invalid"])
    assert s["n"] == 0 and math.isnan(s["win_rate"]) and math.isnan(s["ci_low"])


def test_position_stats_expose_a_first_position_bias():
    biased = J.position_stats([("A", "A")] * 10)
    assert biased[J.CANDIDATE_FIRST]["share_a"] == 1.0
    assert biased[J.CHAMPION_FIRST]["share_a"] == 1.0
    assert biased["first_position_share"] == 1.0
    assert biased["consistency"] == 0.0
    fair = J.position_stats([("A", "B"), ("B", "A"), ("tie", "tie"), ("A", "B"), ("invalid", "A")])
    assert fair[J.CANDIDATE_FIRST]["share_a"] == pytest.approx(2 / 4)
    assert fair[J.CANDIDATE_FIRST]["invalid"] == 1
    assert fair[J.CHAMPION_FIRST]["share_a"] == pytest.approx(2 / 5)
    assert fair["consistency"] == 1.0


# --------------------------------------------------------------------------- client pieces


def test_backoff_doubles_is_capped_and_honours_retry_after():
    assert [J.backoff_delay(i, 0.5) for i in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert J.backoff_delay(20, 1.0) == J.MAX_BACKOFF_S
    assert J.backoff_delay(0, 1.0, "3") == 3.0
    assert J.backoff_delay(0, 1.0, "9999") == J.MAX_BACKOFF_S
    assert J.backoff_delay(1, 1.0, "Wed, 21 Oct 2015 07:28:00 GMT") == 2.0


def test_parse_reply_reads_text_and_usage_and_rejects_malformed_bodies():
    body = {
        "choices": [{"message": {"role": "assistant", "content": "A"}}],
        "usage": {"prompt_tokens": 40, "completion_tokens": 1, "total_tokens": 41},
    }
    assert J.parse_reply(body) == ("A", {"input": 40, "output": 1})
    assert J.parse_reply({"choices": [{"message": {"content": None}}]}) == ("", {})
    for bad in (
        {},
        {"choices": []},
        {"choices": [{"text": "A"}]},
        [1, 2],
        {"choices": [{"message": {"content": 5}}]},
    ):
        with pytest.raises(J.JudgeError):
            J.parse_reply(bad)


def test_judge_settings_from_params_and_env_without_leaking_the_key():
    env = {
        "JUDGE_BASE_URL": "http://judge/v1/",
        "JUDGE_MODEL": "big",
        "OPENAI_API_KEY": "sk-openai",
        "JUDGE_API_KEY": "sk-judge-secret",
    }
    s = J.judge_settings(JudgeParams(), env=env)
    assert (s.base_url, s.model, s.api_key) == ("http://judge/v1", "big", "sk-judge-secret")
    assert "sk-judge-secret" not in repr(s)
    s = J.judge_settings(JudgeParams(base_url="http://p/v1", model="m", temperature=0.0), env={})
    assert (s.base_url, s.model, s.api_key, s.temperature) == ("http://p/v1", "m", None, 0.0)
    with pytest.raises(J.JudgeConfigError, match="base URL"):
        J.judge_settings(JudgeParams(model="m"), env={})


def test_render_conversation_and_iter_pairs():
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert J.render_conversation(msgs) == "System: Be brief.\n\nUser: Hi"
    assert J.iter_pairs([{"prompt": msgs}]) == [{"prompt": msgs}]


# --------------------------------------------------------------------------- gate


def _result(**kw) -> J.JudgeResult:
    base = dict(
        n_items=40,
        n=40,
        wins=20,
        losses=10,
        ties=10,
        invalid=0,
        win_rate=0.625,
        ci_low=0.53,
        ci_high=0.72,
        confidence=0.95,
        p_value=0.05,
    )
    base.update(kw)
    return J.JudgeResult(**base)


def test_gate_criterion_off_passes_and_missing_result_fails():
    assert J.gate_criterion(None, JudgeParams())[0] is True
    passed, reason = J.gate_criterion(None, JudgeParams(enabled=True, gate=True))
    assert not passed and "no judge result" in reason


def test_gate_criterion_checks_each_threshold_and_says_why():
    jp = JudgeParams(
        enabled=True,
        gate=True,
        min_items=20,
        min_win_rate=0.55,
        min_win_rate_ci_low=0.5,
        max_invalid_share=0.2,
    )
    passed, reason = J.gate_criterion(_result(), jp)
    assert passed and reason.startswith(
        "judge passed: win-rate 0.625 [0.530, 0.720] over 40 prompts"
    )
    for kw, words in [
        ({"n": 10, "n_items": 10}, "validly judged"),
        ({"invalid": 12, "n": 28}, "invalid share"),
        ({"win_rate": 0.5}, "win-rate 0.500"),
        ({"ci_low": 0.45}, "interval low 0.450"),
        ({"win_rate": float("nan"), "ci_low": float("nan"), "n": 0, "invalid": 40}, "n/a"),
    ]:
        passed, reason = J.gate_criterion(_result(**kw), jp)
        assert not passed and "FAILED" in reason and words in reason, (kw, reason)


def test_gate_criterion_accepts_the_dict_stored_in_eval_json():
    r = _result()
    d = r.to_dict()
    assert d["invalid_share"] == 0.0
    assert J.JudgeResult.from_dict(d) == r
    assert J.gate_criterion(d, JudgeParams(enabled=True, gate=True)) == J.gate_criterion(
        r, JudgeParams(enabled=True, gate=True)
    )


def test_judge_gate_needs_the_judge_enabled():
    with pytest.raises(ConfigError, match=r"judge\.gate needs judge\.enabled"):
        parse_params({"judge": {"gate": True}})


def test_headline_and_report_show_the_numbers():
    r = _result(
        position={
            J.CANDIDATE_FIRST: {"share_a": 0.6},
            J.CHAMPION_FIRST: {"share_a": 0.4},
            "consistency": 0.8,
            "first_position_share": 0.5,
        },
        judge={
            "model": "big",
            "prompt": {"name": "judge_pairwise", "version": 3, "source": "langfuse"},
        },
    )
    h = J.headline(r)
    assert h["judge_win_rate"] == 0.625 and h["judge_first_position_share"] == 0.5
    md = J.report_markdown(r)
    assert "`big`" in md and "v3" in md and "| 40 | 20 | 10 | 10 | 0 | 0.625 | [0.530, 0.720]" in md
    assert "0.600" in md and "0.400" in md


# --------------------------------------------------------------------------- robustness


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Verdict: a tie", "tie"),  # the article, not the letter A
        ("My decision is a tie.", "tie"),
        ("Verdict: a draw", "tie"),
        ("B, since its answer is a complete one", "B"),
        ("Verdict: A because it is shorter", "A"),
        ("verdict: a.", "A"),
        ('```json\n{"verdict": "B"}\n```', "B"),  # fenced JSON
        ('{"verdict": "B", "reason": "B is more', "B"),  # JSON cut at max_tokens
        ('{"verdict": "A"', "A"),
    ],
)
def test_parse_verdict_reads_articles_and_cut_or_fenced_json(text, expected):
    assert J.parse_verdict(text) == expected


def test_backoff_ignores_a_retry_after_that_is_not_a_finite_number():
    # time.sleep(nan) raises ValueError, which used to crash the whole judge run
    assert J.backoff_delay(1, 1.0, "nan") == 2.0
    assert J.backoff_delay(0, 1.0, "inf") == 1.0
    assert J.backoff_delay(0, 1.0, "-5") == 0.0


def test_parse_reply_ignores_malformed_usage_and_replaces_lone_surrogates():
    ok = {"choices": [{"message": {"content": "A"}}]}
    for usage in ("n/a", [1], {"prompt_tokens": math.inf}, {"prompt_tokens": math.nan}):
        assert J.parse_reply({**ok, "usage": usage}) == ("A", {}), usage
    assert J.parse_reply({**ok, "usage": {"prompt_tokens": True, "completion_tokens": 2}}) == (
        "A",
        {"output": 2},
    )
    # '"A \ud83d"' in JSON: half an emoji, which UTF-8 (scrubber, exporters) cannot encode
    text, _ = J.parse_reply({"choices": [{"message": {"content": "A \ud83d"}}]})
    assert text == "A \ufffd"
    text.encode("utf-8")


def _mock_client(handler, **settings) -> J.ChatClient:
    import httpx

    s = J.JudgeSettings(
        base_url="http://judge.test/v1", model="m", max_retries=1, backoff_s=0.0, **settings
    )
    client = J.ChatClient(s, sleep=lambda _: None)
    client._http = httpx.Client(
        base_url=s.base_url + "/", transport=httpx.MockTransport(handler), timeout=s.timeout_s
    )
    return client


def test_chat_client_counts_a_body_that_does_not_decode_as_a_failed_call():
    import httpx

    calls = []

    def corrupt_gzip(request):
        calls.append(request)
        return httpx.Response(200, content=b"not gzip", headers={"Content-Encoding": "gzip"})

    with pytest.raises(J.JudgeError, match="DecodingError"):
        _mock_client(corrupt_gzip).complete([{"role": "user", "content": "x"}])
    assert len(calls) == 2  # retried like a transport error


def test_chat_client_bounds_a_trickled_answer_by_timeout():
    import time

    import httpx

    def trickle():
        for byte in b'{"choices": [{"message": {"content": "A"}}]}':
            time.sleep(0.02)  # each read is quick, so httpx's per-read timeout never fires
            yield bytes([byte])

    client = _mock_client(lambda r: httpx.Response(200, content=trickle()), timeout_s=0.2)
    t0 = time.perf_counter()
    with pytest.raises(J.JudgeError, match="ReadTimeout"):
        client.complete([{"role": "user", "content": "x"}])
    assert time.perf_counter() - t0 < 1.0  # two attempts of ~0.2 s, not 2 x 0.9 s
    fast = _mock_client(lambda r: httpx.Response(200, json={"choices": [{"message": {"content": "B"}}]}))
    assert fast.complete([{"role": "user", "content": "x"}]).text == "B"


def test_judge_pairs_survives_odd_replies_of_a_misbehaving_endpoint(monkeypatch):
    import httpx

    for k in ("LANGFUSE_HOST", "LANGFUSE_BASE_URL", "LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY"):
        monkeypatch.delenv(k, raising=False)
    replies = iter(
        [
            b'{"choices": [{"message": {"content": "A"}}], "usage": "n/a"}',
            b'{"choices": [{"message": {"content": "A \\ud83d"}}]}',
        ]
    )
    client = _mock_client(lambda r: httpx.Response(200, content=next(replies)))
    pairs = [{"pair_id": "p1", "prompt": [{"role": "user", "content": "hi"}]}]
    params = parse_params({"judge": {"concurrency": 1}, "evaluate": {"bootstrap_samples": 100}})
    r = J.judge_pairs(pairs, ["x"], ["y"], params, client=client)
    assert (r.n_items, r.usage["calls"], r.usage["errors"]) == (1, 2, 0)
    assert r.wins + r.ties + r.losses + r.invalid == 1


def test_judge_settings_reject_a_base_url_without_http_scheme():
    for url in ("localhost:8000/v1", "judge.internal/v1", "ftp://judge/v1"):
        with pytest.raises(J.JudgeConfigError, match="http:// or https://"):
            J.judge_settings(JudgeParams(base_url=url, model="m"), env={})
    assert J.judge_settings(JudgeParams(base_url="HTTPS://j/v1", model="m"), env={}).base_url


def test_credentials_in_the_judge_url_never_reach_reports_or_errors():
    """A base URL may carry a token (user:token@host, ?api-key=...); eval.json, errors and repr show none."""
    secret = "s3cr3t-token"
    s = J.JudgeSettings(base_url=f"https://user:{secret}@judge.example/v1?api-key={secret}", model="m")
    assert s.endpoint == "https://judge.example/v1"
    assert secret not in repr(s)
    with pytest.raises(J.JudgeConfigError) as err:
        J.judge_settings(JudgeParams(base_url=f"user:{secret}@judge.example/v1", model="m"), env={})
    assert secret not in str(err.value)
