"""The base model helpers: device plan, tokenizer + chat template, prompt fitting, scoring.

Everything here uses a tiny model (a few thousand parameters) built from a config.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest

from pipelines import model as M
from pipelines.config import Params, TrainParams, parse_params
from pipelines.layout import Layout
from pipelines.schemas import PAIR_SCHEMA
from pipelines.train import flatten, last_complete_checkpoint, run_key

CORPUS = [
    "Thanks for reaching out about the invoice, it is paid now.",
    "Not my problem.",
    "Hi, I cannot log in since this morning. Can you help?",
    "The deploy failed with a disk alert on node three.",
    "Sure, here is the summary of the meeting notes.",
] * 20


@pytest.fixture(scope="module")
def tok():
    return M.train_tokenizer(CORPUS, vocab_size=400, min_frequency=2)


@pytest.fixture(scope="module")
def tiny_model(tok):
    params = parse_params({"model": {"builtin": {"hidden_size": 16, "num_layers": 1, "num_heads": 2,
                                                 "intermediate_size": 32, "max_position_embeddings": 128}}})
    m = M.build_builtin_model(params, tok)
    m.eval()
    return m


# --------------------------------------------------------------------------- device plan


def test_device_plan_cpu_is_fp32_and_never_4bit():
    plan = M.plan_device(TrainParams(), builtin=False, cuda=False)
    assert plan == M.DevicePlan("cpu", bf16=False, load_in_4bit=False)


def test_device_plan_cuda_uses_bf16_and_qlora_when_available():
    t = TrainParams()
    assert M.plan_device(t, builtin=False, cuda=True, bf16_supported=True, bnb_available=True) == M.DevicePlan(
        "cuda", bf16=True, load_in_4bit=True)
    assert not M.plan_device(t, builtin=False, cuda=True, bf16_supported=True, bnb_available=False).load_in_4bit
    assert not M.plan_device(t, builtin=True, cuda=True, bf16_supported=True, bnb_available=True).load_in_4bit
    assert not M.plan_device(t, builtin=False, cuda=True, bf16_supported=False, bnb_available=False).bf16
    fp32 = TrainParams(precision="fp32", load_in_4bit="never")
    assert M.plan_device(fp32, builtin=False, cuda=True, bf16_supported=True, bnb_available=True) == M.DevicePlan(
        "cuda", bf16=False, load_in_4bit=False)


@pytest.mark.parametrize(("device", "source", "checkpointing"), [
    ("cpu", "org/model", False), ("cuda", "builtin", False), ("cuda", "org/model", True)])
def test_trainer_args_checkpoint_activations_only_for_a_hub_model_on_a_gpu(device, source, checkpointing):
    """Under the current name: the deprecated ``gradient_checkpointing`` warned on every run."""
    import warnings

    from trl import DPOConfig

    from pipelines.train import _common_args

    params = parse_params({"model": {"source": source}})
    plan = M.DevicePlan(device, bf16=False, load_in_4bit=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        args = DPOConfig(**_common_args(params, plan, Path("/tmp/unused"), 5, 1e-4))
    assert args.activation_checkpointing is checkpointing
    assert args.use_cpu is (device == "cpu")


# --------------------------------------------------------------------------- tokenizer and prompts


def test_tokenizer_has_specials_and_prompt_is_a_prefix_of_the_conversation(tok):
    assert tok.pad_token == M.PAD and tok.eos_token == M.EOS
    prompt = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Help me?"}]
    p_ids = M.chat_ids(tok, prompt, add_generation_prompt=True)
    for response in ("Sure.", " leading space", "\n\nnewlines first", "", "émoji 🙂 ok"):
        f_ids = M.chat_ids(tok, [*prompt, {"role": "assistant", "content": response}])
        assert f_ids[: len(p_ids)] == p_ids, response
        assert f_ids[-1] == tok.eos_token_id
        assert tok.decode(f_ids[len(p_ids): -1]) == response


def test_chat_template_rejects_unknown_roles(tok):
    with pytest.raises(Exception, match="unknown role"):
        M.chat_ids(tok, [{"role": "tool", "content": "x"}])


def test_fit_prompt_drops_oldest_turns_then_cuts_from_the_left(tok):
    long_turns = [{"role": "user", "content": f"turn {i} " + "blah " * 30} for i in range(4)]
    fitted = M.fit_prompt(tok, long_turns, 60)
    assert len(M.chat_ids(tok, fitted, add_generation_prompt=True)) <= 60
    assert len(fitted) == 1
    assert fitted[0]["content"].endswith("blah ")  # the end of the last turn is kept
    short = [{"role": "user", "content": "hi"}]
    assert M.fit_prompt(tok, short, 60) == short


def test_encode_response_marks_the_response_and_truncates(tok):
    prompt = [{"role": "user", "content": "Can you help?"}]
    ids, start = M.encode_response(tok, prompt, "Sure, here is the summary.", 200, 50)
    assert tok.decode(ids[start:]) == "Sure, here is the summary." + M.EOS
    cut, start2 = M.encode_response(tok, prompt, "Sure, here is the summary. " * 20, start + 5, 50)
    assert len(cut) == start + 5 and start2 == start


def test_response_logprobs_match_a_manual_computation_and_ignore_batching(tok, tiny_model):
    import torch

    prompts = [[{"role": "user", "content": "Hi, I cannot log in."}], [{"role": "user", "content": "Summary?"}]]
    responses = ["Thanks for reaching out.", "Sure, here is the summary of the meeting notes."]
    s1, n1 = M.response_logprobs(tiny_model, tok, prompts, responses, max_length=128, max_prompt_length=64,
                                 batch_size=1)
    s2, n2 = M.response_logprobs(tiny_model, tok, prompts, responses, max_length=128, max_prompt_length=64,
                                 batch_size=2)
    assert n1.tolist() == n2.tolist()
    assert s1 == pytest.approx(s2, abs=1e-4)
    ids, start = M.encode_response(tok, prompts[0], responses[0], 128, 64)
    with torch.no_grad():
        logp = torch.log_softmax(tiny_model(torch.tensor([ids])).logits[0].float(), -1)
    manual = sum(float(logp[i - 1, ids[i]]) for i in range(start, len(ids)))
    assert s1[0] == pytest.approx(manual, abs=1e-4)
    assert n1[0] == len(ids) - start


# --------------------------------------------------------------------------- files


def test_atomic_dir_swaps_whole_folders_and_keeps_the_old_one_on_error(tmp_path):
    dest = tmp_path / "m"
    with M.atomic_dir(dest) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(RuntimeError), M.atomic_dir(dest) as tmp:
        (tmp / "a.txt").write_text("2")
        raise RuntimeError("crash mid-write")
    assert (dest / "a.txt").read_text() == "1"
    with M.atomic_dir(dest) as tmp:
        (tmp / "b.txt").write_text("3")
    assert sorted(p.name for p in dest.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temp or old folders left


def test_candidate_fingerprint_ignores_the_manifest(tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "w.bin").write_bytes(b"abc")
    (tmp_path / M.MANIFEST).write_text(json.dumps({"mlflow_run_id": "1"}))
    fp = M.candidate_fingerprint(tmp_path)
    (tmp_path / M.MANIFEST).write_text(json.dumps({"mlflow_run_id": "2"}))
    assert M.candidate_fingerprint(tmp_path) == fp
    (tmp_path / "adapter" / "w.bin").write_bytes(b"abd")
    assert M.candidate_fingerprint(tmp_path) != fp


# --------------------------------------------------------------------------- the stage


def _pairs(n: int) -> pl.DataFrame:
    rows = [{
        "pair_id": f"p{i}", "prompt": [{"role": "user", "content": f"Question {i % 7}: can you help?"}],
        "chosen": CORPUS[i % 5], "rejected": CORPUS[(i + 1) % 5], "pair_type": "comparison", "source": "events",
        "tenant_id": "acme", "skill": "email_draft", "thread_id": f"t{i}", "source_event_ids": [f"e{i}"],
        "split": "train",
    } for i in range(n)]
    return pl.DataFrame(rows, schema=PAIR_SCHEMA)


def test_builtin_base_model_stage_writes_a_loadable_folder(tmp_path):
    layout = Layout(tmp_path)
    layout.pairs_dir.mkdir(parents=True)
    _pairs(30).write_parquet(layout.pairs_split("train"))
    params = parse_params({"seed": 3, "model": {
        "builtin": {"vocab_size": 320, "hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32,
                    "max_position_embeddings": 128},
        "warmup": {"max_steps": 8, "batch_size": 4, "max_length": 64}}})
    metrics = M.run(params, layout)
    assert metrics["warmup_steps"] == 8 and metrics["warmup_loss_last"] < metrics["warmup_loss_first"]
    assert json.loads(layout.metrics("base_model").read_text())["fingerprint"] == metrics["fingerprint"]
    model, tok = M.load_model_and_tokenizer(layout.base_model)
    assert tok.chat_template == M.BUILTIN_CHAT_TEMPLATE and tok.pad_token == M.PAD
    assert model.config.vocab_size == len(tok)
    # seeded: the same inputs give the same weights
    first = metrics["fingerprint"]
    assert M.run(params, layout)["fingerprint"] == first


# --------------------------------------------------------------------------- train helpers


def test_last_complete_checkpoint_skips_a_checkpoint_cut_short(tmp_path):
    assert last_complete_checkpoint(tmp_path / "none") is None
    for step, complete in ((10, True), (20, True), (30, False)):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        if complete:
            (d / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-40").mkdir()
    (tmp_path / "checkpoint-40" / "trainer_state.json").write_text("{trunc")
    assert last_complete_checkpoint(tmp_path).name == "checkpoint-20"


def test_run_key_changes_with_any_training_input():
    p = Params()
    k = run_key(p, "base", {"train": "x"})
    assert run_key(p, "base", {"train": "x"}) == k
    assert run_key(p, "other", {"train": "x"}) != k
    assert run_key(p, "base", {"train": "y"}) != k
    q = p.model_copy(deep=True)
    q.train.dpo.beta = 0.5
    assert run_key(q, "base", {"train": "x"}) != k


def test_flatten_makes_mlflow_params():
    assert flatten("", {"a": {"b": 1, "c": [1, 2]}, "d": "x"}) == {"a.b": 1, "a.c": "[1, 2]", "d": "x"}


def test_apply_runtime_sets_threads_only_when_asked():
    import torch

    before = torch.get_num_threads()
    try:
        M.apply_runtime(Params())  # 0 = leave PyTorch's default alone
        assert torch.get_num_threads() == before
        M.apply_runtime(parse_params({"runtime": {"cpu_threads": 1}}))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- registered pyfunc


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("[URGENT] the deploy failed", [{"role": "user", "content": "[URGENT] the deploy failed"}]),
        ("[1, 2] are the ids", [{"role": "user", "content": "[1, 2] are the ids"}]),
        ('[{"role": "user", "content": "hi"}]', [{"role": "user", "content": "hi"}]),
        ([{"role": "user", "content": None}], [{"role": "user", "content": ""}]),
        ("plain text", [{"role": "user", "content": "plain text"}]),
    ],
)
def test_policy_model_prompt_cells_plain_text_may_start_with_a_bracket(cell, expected):
    from pipelines.policy_model import PolicyModel

    assert PolicyModel._messages(cell) == expected


def test_policy_model_reads_prompt_cells_as_pandas_reads_them_from_parquet(tmp_path):
    """pandas gives a list-of-structs cell as a numpy array of dicts, not a list."""
    from pipelines.policy_model import PolicyModel

    _pairs(1).write_parquet(tmp_path / "p.parquet")
    cell = pl.read_parquet(tmp_path / "p.parquet").to_pandas()["prompt"].iloc[0]
    assert PolicyModel._messages(cell) == [{"role": "user", "content": "Question 0: can you help?"}]


# --------------------------------------------------------------------------- resumed training


def test_train_loss_of_a_resumed_run_covers_every_logged_step():
    from pipelines.train import train_loss

    history = [{"loss": 0.7, "step": 2}, {"eval_loss": 0.5, "step": 2}, {"loss": 0.5, "step": 4}]
    assert train_loss(0.61, history, resumed=False) == 0.61  # a fresh run: the Trainer's own mean
    # resumed from the final checkpoint: the Trainer trained no step and reports 0.0
    assert train_loss(0.0, history, resumed=True) == pytest.approx(0.6)
    assert math.isnan(train_loss(0.0, [], resumed=True))


def test_a_second_train_run_with_the_same_inputs_stops_while_the_first_holds_the_lock(tmp_path, monkeypatch):
    """Two manual runs would write the same checkpoints; the second stops, naming the folder."""
    from pipelines import train
    from pipelines.io import exclusive_lock

    layout = Layout(tmp_path)
    layout.pairs_dir.mkdir(parents=True)
    _pairs(10).write_parquet(layout.pairs_split("train"))
    layout.base_model.mkdir(parents=True)
    (layout.base_model / "config.json").write_text("{}")
    monkeypatch.setattr(train, "run_key", lambda *a: "samekey")
    work = train.checkpoint_root(layout) / "samekey"
    other = train.checkpoint_root(layout) / "otherkey"
    other.mkdir(parents=True)
    with exclusive_lock(work / train.RUN_LOCK) as mine, exclusive_lock(other / train.RUN_LOCK):
        assert mine
        with pytest.raises(train.TrainingInProgress, match="same inputs is running") as err:
            train.run(Params(), layout)
        assert str(work) in str(err.value)
    assert other.exists()  # a run of other inputs still going: its checkpoints were not touched


def test_checkpoints_of_other_inputs_go_unless_their_run_is_alive(tmp_path):
    from pipelines import train
    from pipelines.io import exclusive_lock

    root = tmp_path / "train"
    for name in ("keep", "dead", "alive"):
        (root / name / "dpo").mkdir(parents=True)
    (root / "dead" / train.RUN_LOCK).write_text("")  # a killed run: its lock file stays, its flock went with it
    with exclusive_lock(root / "alive" / train.RUN_LOCK):
        train._drop_stale_checkpoints(root, keep="keep")
    assert sorted(p.name for p in root.iterdir()) == ["alive", "keep"]
