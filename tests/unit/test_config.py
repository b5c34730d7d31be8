"""params.yaml is validated by one typed model; errors name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines.config import (
    ConfigError,
    Params,
    apply_overrides,
    load_params,
    parse_override,
    parse_params,
)

ROOT = Path(__file__).resolve().parents[2]


def test_repo_params_yaml_validates_and_has_every_section():
    params = load_params(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(raw) == set(Params.model_fields) - {"validate_"} | {"validate"}
    assert params.pairs.split.train + params.pairs.split.val + params.pairs.split.test == pytest.approx(1)


def test_unknown_key_is_an_error_naming_it(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("pairs:\n  min_edit_ration: 0.2\n")
    with pytest.raises(ConfigError, match=r"pairs\.min_edit_ration"):
        load_params(p)


def test_out_of_range_value_is_an_error(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("pairs:\n  split: {train: 0.9, val: 0.2, test: 0.1}\n")
    with pytest.raises(ConfigError, match="sum to 1"):
        load_params(p)


def test_overrides_are_validated_like_the_file(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("seed: 1\n")
    assert load_params(p, {"pairs.min_edit_ratio": 0.3}).pairs.min_edit_ratio == 0.3
    with pytest.raises(ConfigError, match="min_edit_ratio"):
        load_params(p, {"pairs.min_edit_ratio": 3})


def test_parse_override_reads_yaml_values():
    assert parse_override("pairs.split.train=0.7") == ("pairs.split.train", 0.7)
    assert parse_override("scrub.entities=[EMAIL, PHONE]") == ("scrub.entities", ["EMAIL", "PHONE"])
    with pytest.raises(ConfigError):
        parse_override("no-equals-sign")


def test_apply_overrides_does_not_mutate_input():
    data = {"pairs": {"min_edit_ratio": 0.1}}
    out = apply_overrides(data, {"pairs.min_edit_ratio": 0.5, "seed": 3})
    assert data == {"pairs": {"min_edit_ratio": 0.1}}
    assert out == {"pairs": {"min_edit_ratio": 0.5}, "seed": 3}


def test_missing_file_means_defaults(tmp_path):
    assert load_params(tmp_path / "nope.yaml") == Params()


def test_top_level_must_be_a_mapping(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_params(p)


def test_an_unknown_dpo_loss_type_is_a_config_error_naming_the_choices():
    for bad in ("sigmod", ["sigmoid", "sfft"], []):
        with pytest.raises(ConfigError, match="unknown loss_type") as err:
            parse_params({"train": {"dpo": {"loss_type": bad}}})
        assert "sigmoid_norm" in str(err.value)


def test_our_dpo_loss_list_is_trls():
    """TRL keeps no constant: its config help lists the losses; a TRL upgrade that adds one fails here."""
    import re

    from trl import DPOConfig

    from pipelines.config import DPO_LOSS_TYPES

    help_text = DPOConfig.__dataclass_fields__["loss_type"].metadata["help"]
    listed = re.findall(r"`'(\w+)'`", help_text.split("If multiple")[0])
    assert sorted(listed) == sorted(DPO_LOSS_TYPES)


def test_dpo_loss_type_may_be_a_weighted_list_rpo():
    """``[sigmoid, sft]`` with weights is RPO; TRL gets the list, and weights must match it."""
    from pipelines.config import DPOPhaseParams

    assert DPOPhaseParams().loss_types == ["sigmoid"]
    rpo = DPOPhaseParams(loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5])
    assert rpo.loss_types == ["sigmoid", "sft"] and rpo.loss_weights == [1.0, 0.5]
    with pytest.raises(ValueError, match="one weight per loss_type"):
        DPOPhaseParams(loss_type=["sigmoid", "sft"], loss_weights=[1.0])


def test_unquoted_yaml_dates_are_read_as_iso_text(tmp_path):
    """YAML turns ``2026-11-02`` into a date object; the date fields hold ISO text."""
    p = tmp_path / "params.yaml"
    p.write_text("generate:\n  start_date: 2026-11-02\n")
    assert load_params(p).generate.start_date == "2026-11-02"
    overrides = dict(parse_override(o) for o in (
        "drift.reference=dates", "drift.reference_start=2026-11-02", "drift.reference_end=2026-11-09 12:00:00"))
    d = load_params(p, overrides).drift
    assert (d.reference_start, d.reference_end) == ("2026-11-02", "2026-11-09T12:00:00")
    with pytest.raises(ConfigError, match="reference_end must be after"):
        load_params(p, {**overrides, "drift.reference_end": yaml.safe_load("2026-11-01")})


def test_seed_and_generate_start_date_fail_at_validation_not_mid_run():
    """numpy/transformers refuse a seed past 2**32 - 1 (base_model failed after the data
    stages); a bad start_date gave a traceback in the middle of generation."""
    assert parse_params({"seed": 2**32 - 1}).seed == 2**32 - 1
    with pytest.raises(ConfigError, match="seed"):
        parse_params({"seed": 2**32})
    with pytest.raises(ConfigError, match="not an ISO date"):
        parse_params({"generate": {"start_date": "2026-13-45"}})
