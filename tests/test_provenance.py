"""The run's label (:mod:`lsc.provenance`) read from this checkout and this machine."""

import re
import subprocess

from lsc import provenance


def test_describe_names_the_commit_cpu_and_date():
    out = provenance.describe()
    assert set(out) == {"commit", "dirty", "cpu", "date"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", out["date"])
    assert re.search(r", \d+ cores$", out["cpu"]) and len(out["cpu"]) > len(", 1 cores")
    try:
        head = subprocess.run(["git", "-C", provenance._ROOT, "rev-parse", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        assert out["commit"] == "unknown" and out["dirty"] is None
    else:
        assert out["commit"] == head and isinstance(out["dirty"], bool)


def test_outside_git_the_commit_is_unknown(monkeypatch, tmp_path):
    monkeypatch.setattr(provenance, "_ROOT", str(tmp_path))
    assert provenance.commit() == {"commit": "unknown", "dirty": None}
