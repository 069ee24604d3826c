"""Every notebook in colabs/ runs top to bottom (shell/magic lines are Colab set-up and skipped)."""

import glob
import os

import pytest

from notebooks import run_notebook

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# reload_workdir.ipynb and grpo_study.ipynb need a workdir of the main job / of the GRPO study:
# tests/repro/test_repro_end_to_end.py and tests/repro/test_grpo_study_end_to_end.py run them on
# the workdirs of their runs.
ON_A_WORKDIR = ("reload_workdir.ipynb", "grpo_study.ipynb")
ALL_NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "colabs", "*.ipynb")))
NOTEBOOKS = [p for p in ALL_NOTEBOOKS if os.path.basename(p) not in ON_A_WORKDIR]


def test_there_are_notebooks():
    names = {os.path.basename(p) for p in ALL_NOTEBOOKS}
    assert {"aggregation_ablation.ipynb", "transformation_ablation.ipynb",
            "reload_workdir.ipynb", "grpo_study.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
@pytest.mark.slow
def test_notebook_runs(path):
    namespace = run_notebook(path)
    if os.path.basename(path) == "aggregation_ablation.ipynb":  # its best-of-k table
        res = namespace["results"]
        assert res["sigma_and / median"]["AND win"] > res["sigma_and / none"]["AND win"]
        assert res["sigma_or / median"]["OR win"] > res["sigma_or / none"]["OR win"]
    if os.path.basename(path) == "transformation_ablation.ipynb":
        # Exact optima: every transform's win rate rises with the KL budget, from near 0.5 (up
        # to 0.001: near the top of the range more KL can cost a hair, as in the main job).
        for name, pts in namespace["curves"].items():
            kls = [p[0] for p in pts]
            wins = [p[1] for p in pts]
            assert kls == sorted(kls), name
            assert all(b >= a - 1e-3 for a, b in zip(wins, wins[1:])), name
            assert kls[0] < 0.06 and wins[0] < 0.6 and wins[-1] > 0.8, name
