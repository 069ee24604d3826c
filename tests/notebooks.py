"""Runs a notebook's code cells top to bottom in one namespace (shell/magic lines are Colab
set-up and skipped); shared by the notebook tests."""

import json
import os


def run_notebook(path: str) -> dict:
    """Executes ``path``'s code cells; returns the namespace (closes its matplotlib figures)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(path, encoding="utf-8") as f:
        nb = json.load(f)
    namespace = {"__name__": "__notebook__"}
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        lines = [l for l in "".join(cell["source"]).splitlines()
                 if not l.lstrip().startswith(("%", "!"))]
        exec(compile("\n".join(lines), os.path.basename(path), "exec"), namespace)
    plt.close("all")
    return namespace
