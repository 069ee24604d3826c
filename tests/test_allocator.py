"""The entry point's allocator (lsc.allocator): which library ``LSC_ALLOCATOR`` picks, how it goes
into ``LD_PRELOAD``, and the restart under it with the real libraries."""

import json
import os
import subprocess
import sys

import pytest

from lsc import allocator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TC, MI = "libtcmalloc_minimal.so.4", "/site/cmeel.prefix/lib/libmimalloc.so.3"


@pytest.fixture
def found(monkeypatch):
    """Sets which allocators the lookups find: ``found(tcmalloc=..., mimalloc=...)``."""
    def set_found(tcmalloc=True, mimalloc=True):
        monkeypatch.setitem(allocator.FINDERS, "tcmalloc", lambda: TC if tcmalloc else None)
        monkeypatch.setitem(allocator.FINDERS, "mimalloc", lambda: MI if mimalloc else None)
    set_found()
    return set_found


def test_auto_picks_tcmalloc_when_installed_else_mimalloc(found):
    assert allocator.with_allocator({}) == {"LD_PRELOAD": TC}
    found(tcmalloc=False)
    assert allocator.with_allocator({"HOME": "/h"}) == {"HOME": "/h", "LD_PRELOAD": MI,
                                                         **allocator.MIMALLOC_OPTIONS}
    found(tcmalloc=False, mimalloc=False)
    assert allocator.with_allocator({"LD_PRELOAD": "/a/libx.so"}) == {"LD_PRELOAD": "/a/libx.so"}


def test_the_environment_variable_or_the_argument_chooses(found):
    assert allocator.with_allocator({"LSC_ALLOCATOR": "mimalloc"})["LD_PRELOAD"] == MI
    assert allocator.with_allocator({"LSC_ALLOCATOR": "tcmalloc"})["LD_PRELOAD"] == TC
    assert allocator.with_allocator({"LSC_ALLOCATOR": "system"}) == {"LSC_ALLOCATOR": "system"}
    # the argument wins over the variable and is written to it, for entry points started later
    assert allocator.with_allocator({"LSC_ALLOCATOR": "tcmalloc"}, "mimalloc") == {
        "LSC_ALLOCATOR": "mimalloc", "LD_PRELOAD": MI, **allocator.MIMALLOC_OPTIONS}
    assert allocator.with_allocator({}, "system") == {"LSC_ALLOCATOR": "system"}


def test_ld_preload_keeps_the_other_entries_and_drops_other_allocators(found):
    env = {"LD_PRELOAD": "/a/libx.so:/b/liby.so"}
    assert allocator.with_allocator(env)["LD_PRELOAD"] == f"{TC} /a/libx.so /b/liby.so"
    env = {"LD_PRELOAD": "/a/libx.so /usr/lib/libtcmalloc_minimal.so.4",
           "LSC_ALLOCATOR": "mimalloc"}
    assert allocator.with_allocator(env)["LD_PRELOAD"] == f"{MI} /a/libx.so"
    env["LSC_ALLOCATOR"] = "system"
    assert allocator.with_allocator(env)["LD_PRELOAD"] == "/a/libx.so"


def test_mimalloc_keeps_its_pages_unless_the_environment_says_otherwise(found):
    env = allocator.with_allocator({"LSC_ALLOCATOR": "mimalloc"})
    assert env["MIMALLOC_PURGE_DELAY"] == "-1"
    env = allocator.with_allocator({"LSC_ALLOCATOR": "mimalloc", "MIMALLOC_PURGE_DELAY": "10"})
    assert env["MIMALLOC_PURGE_DELAY"] == "10"
    assert "MIMALLOC_PURGE_DELAY" not in allocator.with_allocator({"LSC_ALLOCATOR": "tcmalloc"})


def test_an_allocator_already_preloaded_is_kept(found):
    env = {"LD_PRELOAD": "/opt/libmimalloc.so.2 /a/libx.so"}
    assert allocator.preloaded(env) == "mimalloc"
    assert allocator.with_allocator(env) == env  # auto keeps it
    assert allocator.with_allocator(dict(env, LSC_ALLOCATOR="mimalloc")) == dict(
        env, LSC_ALLOCATOR="mimalloc")
    assert allocator.preloaded({"LD_PRELOAD": "/a/libx.so"}) is None


def test_a_bad_or_missing_choice_is_refused(found):
    with pytest.raises(SystemExit, match="LSC_ALLOCATOR='jemalloc'; use one of tcmalloc, mimalloc"):
        allocator.with_allocator({"LSC_ALLOCATOR": "jemalloc"})
    with pytest.raises(SystemExit, match="LSC_ALLOCATOR='glibc'"):
        allocator.with_allocator({}, "glibc")
    found(tcmalloc=False)
    with pytest.raises(SystemExit, match="tcmalloc is not installed"):
        allocator.with_allocator({"LSC_ALLOCATOR": "tcmalloc"})


def test_restarts_once_and_only_when_the_preload_changes(found, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "execve", lambda *a: calls.append(a))
    for name in ("LD_PRELOAD", allocator.ENV, allocator.MARK):
        monkeypatch.delenv(name, raising=False)
    allocator.reexec_with_allocator("lsc.main", ["main.py", "--config=c.py"])
    ((exe, argv, env),) = calls
    assert argv == [sys.executable, "-m", "lsc.main", "--config=c.py"]
    assert env["LD_PRELOAD"] == TC and env[allocator.MARK] == "tcmalloc"
    calls.clear()
    monkeypatch.setenv(allocator.MARK, "tcmalloc")  # already restarted
    allocator.reexec_with_allocator("lsc.main", ["x"])
    monkeypatch.delenv(allocator.MARK)
    monkeypatch.setenv("LD_PRELOAD", MI)  # already under an allocator
    allocator.reexec_with_allocator("lsc.main", ["x"])
    monkeypatch.setenv(allocator.ENV, "system")  # nothing to change
    monkeypatch.delenv("LD_PRELOAD")
    allocator.reexec_with_allocator("lsc.main", ["x"])
    assert calls == []


def test_the_pip_mimalloc_is_found_and_loads():
    path = allocator.find_mimalloc()
    assert path is not None, "pip install cmeel-mimalloc (a core dependency)"
    assert os.path.isabs(path) and os.path.basename(path).startswith("libmimalloc.so")
    code = "import ctypes, sys; print(ctypes.CDLL(sys.argv[1]).mi_version())"
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "LD_PRELOAD"})
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) > 0


# Imported at the start of every Python process (the one started and the one that replaces it):
# hides tcmalloc when asked, and at exit prints the allocator of the process that ran to the end.
SITECUSTOMIZE = '''import atexit, json, os
if os.environ.get("PROBE_HIDE_TCMALLOC"):
    from lsc import allocator
    allocator.FINDERS["tcmalloc"] = lambda: None
def _report():
    maps = open("/proc/self/maps").read()
    print(json.dumps({"mark": os.environ.get("LSC_ALLOCATOR_REEXEC", ""),
                      "preload": os.environ.get("LD_PRELOAD", ""),
                      "mapped": [n for n in ("tcmalloc", "mimalloc") if n in maps]}))
atexit.register(_report)
'''
PROBE = ("import sys\nfrom lsc import allocator\n"
         "allocator.reexec_with_allocator('probe', sys.argv)\n")


def _run(tmp_path, args, rc=0, **env):
    """``python <args>`` from a clean allocator environment: the probe's report."""
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    (tmp_path / "probe.py").write_text(PROBE)
    base = {k: v for k, v in os.environ.items()
            if k not in ("LD_PRELOAD", allocator.ENV, allocator.MARK)}
    out = subprocess.run([sys.executable, *args], cwd=str(tmp_path), capture_output=True,
                         text=True, timeout=300,
                         env=dict(base, PYTHONPATH=f"{tmp_path}:{ROOT}", **env))
    assert out.returncode == rc, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_entry_point_restarts_under_the_pip_mimalloc_without_tcmalloc(tmp_path):
    # absl's --help exits with status 1
    report = _run(tmp_path, ["-m", "lsc.main", "--help"], rc=1, PROBE_HIDE_TCMALLOC="1")
    assert report == {"mark": "mimalloc", "preload": allocator.find_mimalloc(),
                      "mapped": ["mimalloc"]}


@pytest.mark.skipif(allocator.find_tcmalloc() is None, reason="tcmalloc is not installed")
def test_auto_restarts_under_tcmalloc_when_installed(tmp_path):
    assert _run(tmp_path, ["-m", "probe"]) == {
        "mark": "tcmalloc", "preload": allocator.find_tcmalloc(), "mapped": ["tcmalloc"]}


def test_system_allocator_on_request(tmp_path):
    report = _run(tmp_path, ["-m", "probe"], LSC_ALLOCATOR="system")
    assert report == {"mark": "", "preload": "", "mapped": []}


def test_the_test_session_starts_its_processes_under_the_entry_points_allocator():
    # tests/conftest.py: the xdist workers and every subprocess inherit this LD_PRELOAD
    name = allocator.chosen({k: v for k, v in os.environ.items() if k != "LD_PRELOAD"})
    assert allocator.preloaded(os.environ) == (None if name == "system" else name)
