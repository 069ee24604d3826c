"""Results entries: schema validation, loading and labels."""

import json

import pytest

from lsc.eval import entries as entries_lib
from eval_fixtures import entries


def test_schema_validation_errors(tmp_path):
    good = entries()
    entries_lib.validate_entries(good)
    bad = dict(good[1])
    del bad["k"]
    with pytest.raises(ValueError, match="integer k"):
        entries_lib.validate_entry(bad)
    with pytest.raises(ValueError, match="procedure"):
        entries_lib.validate_entry({**good[1], "procedure": "ppo"})
    with pytest.raises(ValueError, match="missing field 'gold'"):
        entries_lib.validate_entry({k: v for k, v in good[1].items() if k != "gold"})
    broken = json.loads(json.dumps(good[1]))
    broken["win_rate"]["and"] = {"value": 0.5, "ci_low": 0.6, "ci_high": 0.4}
    with pytest.raises(ValueError, match="win_rate.and"):
        entries_lib.validate_entry(broken)
    with pytest.raises(ValueError, match="duplicate"):
        entries_lib.validate_entries([good[1], good[1]])
    with pytest.raises(ValueError, match="rewards must be a list"):
        entries_lib.validate_entry({k: v for k, v in good[1].items() if k != "rewards"})
    with pytest.raises(ValueError, match="kl_coef"):
        entries_lib.validate_entry({**good[-1], "kl_coef": -1.0})
    p = tmp_path / "results.json"
    p.write_text(json.dumps({"entries": good}))
    assert len(entries_lib.load_entries(str(p))) == len(good)
    p.write_text(json.dumps(good))
    assert entries_lib.load_entries(str(p))[0]["name"] == "base"
    p.write_text(json.dumps({"runs": 3}))
    with pytest.raises(ValueError, match="expected a list"):
        entries_lib.load_entries(str(p))


def test_labels_and_normalisation():
    assert entries_lib.normalized({"method": "sigma_and_nocenter", "reference": "median"}) \
        == ("sigma_and", "none")
    assert entries_lib.label({"method": "sigma_or", "reference": None}) == "sigma_or"
    assert entries_lib.label({"method": "sigma_or", "reference": "predictor"}) \
        == "sigma_or_predictor"



def test_reference_labels_are_the_sources_with_quantiles_in_percent():
    from lsc.rewards import names

    assert names.reference_label("quantile", 0.5) == "median"
    assert names.reference_label("quantile", 0.85) == "p85"
    for source in ("predictor", "fixed_response", "none"):
        assert names.reference_label(source) == source
    assert names.joint_reference_label(["helpful", "harmless"], ["p85", "fixed_response"]) \
        == "helpful:p85+harmless:fixed_response"
    assert [names.result_method("raw", n) for n in (1, 2)] == ["raw", "raw_sum"]
    assert [names.result_method("lsc", n) for n in (1, 2)] == ["lsc", "lsc_sum"]
