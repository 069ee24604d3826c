"""The entry point's allocator: restarted once with tcmalloc when installed (lsc.allocator)."""

import os
import subprocess
import sys

import pytest

from lsc import allocator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = '''import os
maps = open("/proc/self/maps").read()
print("tcmalloc" if "tcmalloc" in maps else "glibc", os.environ.get("LSC_ALLOCATOR_REEXEC", ""))
'''


def _run(tmp_path, **env):
    (tmp_path / "probe.py").write_text(PROBE)
    code = "import sys; from lsc import allocator; allocator.reexec_with_tcmalloc('probe', sys.argv)"
    base = {k: v for k, v in os.environ.items()
            if k not in ("LD_PRELOAD", allocator.ENV, "LSC_ALLOCATOR_REEXEC")}
    out = subprocess.run([sys.executable, "-c", code + "; import probe"], cwd=str(tmp_path),
                         env=dict(base, PYTHONPATH=f"{tmp_path}:{ROOT}", **env),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.skipif(allocator.find_tcmalloc() is None, reason="tcmalloc is not installed")
def test_restarts_once_with_tcmalloc_preloaded(tmp_path):
    assert _run(tmp_path) == ["tcmalloc", "1"]


def test_system_allocator_on_request(tmp_path):
    assert _run(tmp_path, LSC_ALLOCATOR="system") == ["glibc"]


def test_already_restarted_or_preloaded_processes_are_left_alone(monkeypatch):
    calls = []
    monkeypatch.setattr(os, "execve", lambda *a: calls.append(a))
    monkeypatch.setenv("LSC_ALLOCATOR_REEXEC", "1")
    allocator.reexec_with_tcmalloc("lsc.main", ["x"])
    monkeypatch.delenv("LSC_ALLOCATOR_REEXEC")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libtcmalloc_minimal.so.4")
    allocator.reexec_with_tcmalloc("lsc.main", ["x"])
    assert calls == []


def test_a_bad_choice_is_refused(monkeypatch):
    monkeypatch.setenv(allocator.ENV, "jemalloc")
    with pytest.raises(SystemExit, match="LSC_ALLOCATOR='jemalloc'"):
        allocator.reexec_with_tcmalloc("lsc.main", ["x"])
