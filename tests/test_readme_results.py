"""The README's results tables are the renderer's output on the results files it names, verbatim
(``python -m lsc.repro.tables ... --into README.md``)."""

import os

from lsc.repro import tables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_tables_are_rendered_from_the_results_files_they_name():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        sources, body = tables.generated_block(f.read())
    assert sources and all(s.startswith("docs/results/") for s in sources)
    runs = [tables.load(os.path.join(ROOT, s)) for s in sources]
    assert body == tables.render(runs), (
        "README.md's tables differ from the renderer's output: run "
        f"python -m lsc.repro.tables {' '.join(sources)} --into README.md")
