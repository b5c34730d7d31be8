"""The tracer's promises without a server: only scrubbed text is sent and tracing never
breaks the traced work, even when the scrubber itself fails."""

from __future__ import annotations

import pytest

from pipelines import tracing as T


class FakeObs:
    """An SDK observation that records what would be sent to Langfuse."""

    def __init__(self) -> None:
        self.sent: list[dict] = []

    def update(self, **fields) -> None:
        self.sent.append(fields)


class FakeCM:
    def __init__(self, obs: FakeObs) -> None:
        self.obs = obs

    def __enter__(self) -> FakeObs:
        return self.obs

    def __exit__(self, *exc) -> None:
        return None


class FakeClient:
    def __init__(self) -> None:
        self.obs = FakeObs()

    def start_as_current_observation(self, **kwargs) -> FakeCM:
        return FakeCM(self.obs)


def picky_scrub(text: str) -> str:
    """Like the real scrubber on a lone surrogate: it cannot encode the text."""
    text.encode("utf-8")
    return text.replace("secret@example.org", "<EMAIL>")


def test_update_scrubs_and_never_raises_when_scrubbing_fails():
    obs = FakeObs()
    handle = T.Observation(obs, picky_scrub)
    handle.update(output="mail secret@example.org", usage={"input": 3, "output": 1})
    assert obs.sent[-1]["output"] == "mail <EMAIL>"
    handle.update(output="A \ud83d", metadata={"verdict": "A"})  # used to raise UnicodeEncodeError
    assert len(obs.sent) == 1  # dropped, not sent unscrubbed


def test_an_error_in_a_traced_block_propagates_even_if_its_message_cannot_be_scrubbed():
    client = FakeClient()
    t = T.Tracer(client, picky_scrub)
    with pytest.raises(ValueError), t.span("judge.pairs"):
        raise ValueError("\ud83d")
    assert client.obs.sent[0] == {"level": "ERROR", "status_message": "ValueError"}
