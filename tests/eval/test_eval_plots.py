"""Every figure writes a non-empty PNG from plain data (and from results entries)."""

import numpy as np
import pytest

from lsc.eval import diagnostics, plots
from eval_fixtures import entries

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    with open(path, "rb") as f:
        head = f.read(8)
    return head == PNG_MAGIC and len(open(path, "rb").read()) > 5000


def test_win_rate_vs_kl(tmp_path):
    series = plots.win_rate_vs_kl_series(entries(), "helpful", methods=["raw", "lsc_p85"])
    assert list(series) == ["raw", "lsc_p85"]
    assert series["raw"]["kl"] == [0.5, 1.5, 4.0]
    path = plots.plot_win_rate_vs_kl(series, str(tmp_path / "figs" / "wr_kl.png"),
                                     metric="helpfulness win rate", title="raw vs LSC")
    assert _is_png(path)
    with pytest.raises(ValueError):
        plots.plot_win_rate_vs_kl({}, str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="expected 2"):
        plots.plot_win_rate_vs_kl({"a": {"kl": [0, 1], "value": [0.5], "ci_low": [0.4, 0.5],
                                         "ci_high": [0.6, 0.7]}}, str(tmp_path / "x.png"))


def test_and_or_bars(tmp_path):
    data = plots.and_or_bars_data(entries(), k=16)
    assert "sigma_and_median" in data and "raw_sum" in data
    assert _is_png(plots.plot_and_or_bars(data, str(tmp_path / "bars.png"), title="k = 16"))
    with pytest.raises(ValueError, match="missing"):
        plots.plot_and_or_bars({"x": {"and": data["raw_sum"]["and"]}}, str(tmp_path / "y.png"))


def test_underfitting_plot(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.normal(size=400)
    data = {m: diagnostics.gold_improvement_by_group(base + s * (1 - base) +
                                                     rng.normal(0, .3, 400), base)
            for m, s in (("raw", 0.1), ("lsc", 0.4))}
    assert _is_png(plots.plot_underfitting(data, str(tmp_path / "under.png"),
                                           title="helpfulness"))


def test_reward_hacking_plot(tmp_path):
    data = {e["method"]: e["curve"] for e in entries()
            if e["procedure"] == "rlhf" and e["kl_coef"] == 0.03}
    peaks = {m: diagnostics.reward_hacking(c["step"], c["proxy"], c["gold"])["peak_step"]
             for m, c in data.items()}
    assert _is_png(plots.plot_reward_hacking(data, str(tmp_path / "hack.png"), peaks=peaks))
