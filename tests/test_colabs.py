"""Every notebook in colabs/ runs top to bottom (shell/magic lines are Colab set-up and skipped)."""

import glob
import json
import os

import matplotlib
import pytest

matplotlib.use("Agg")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "colabs", "*.ipynb")))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs(path):
    import matplotlib.pyplot as plt

    with open(path, encoding="utf-8") as f:
        nb = json.load(f)
    namespace = {"__name__": "__notebook__"}
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        lines = [l for l in "".join(cell["source"]).splitlines() if not l.lstrip().startswith(("%", "!"))]
        exec(compile("\n".join(lines), f"{os.path.basename(path)}", "exec"), namespace)
    plt.close("all")
    if os.path.basename(path) == "aggregation_ablation.ipynb":  # its best-of-k table
        res = namespace["results"]
        assert res["sigma_and / oracle_median"]["AND win"] > res["sigma_and / none"]["AND win"]
        assert res["sigma_or / oracle_median"]["OR win"] > res["sigma_or / none"]["OR win"]
    if os.path.basename(path) == "transformation_ablation.ipynb":
        # Exact optima: every transform's win rate rises with the KL budget, from near 0.5.
        for name, pts in namespace["curves"].items():
            kls = [p[0] for p in pts]
            wins = [p[1] for p in pts]
            assert kls == sorted(kls) and wins == sorted(wins), name
            assert kls[0] < 0.06 and wins[0] < 0.6 and wins[-1] > 0.8, name
