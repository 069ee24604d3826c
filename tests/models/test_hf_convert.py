"""``python -m lsc.models.hf_convert``: its help names the tokenizer files it copies, and exactly
those are copied (no PyTorch needed)."""

import os
import re
import subprocess
import sys

from lsc.models import hf_convert

# The tokenizer files of a save_pretrained directory that a converted run directory keeps.
COPIED = ["tokenizer.json", "tokenizer_config.json", "tokenizer.model", "spiece.model",
          "added_tokens.json", "special_tokens_map.json", "vocab.json", "merges.txt",
          "chat_template.jinja"]


def _help_text() -> str:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-m", "lsc.models.hf_convert", "--help"], cwd=root,
                         env=env, capture_output=True, text=True, check=True, timeout=300)
    return " ".join(out.stdout.split())


def test_help_says_which_tokenizer_files_are_copied_and_where():
    text = _help_text()
    assert "python -m lsc.models.hf_convert" in text
    listed = re.search(r"copies into WORKDIR/tokenizer/ those of the tokenizer files (.*?) that "
                       r"CHECKPOINT has \(no other file\)", text)
    assert listed, text
    assert listed.group(1).split(", ") == COPIED


def test_exactly_the_listed_tokenizer_files_are_copied(tmp_path):
    ckpt, workdir = tmp_path / "ckpt", tmp_path / "run"
    ckpt.mkdir()
    others = ["config.json", "model.safetensors", "generation_config.json", "pytorch_model.bin"]
    present = COPIED[::2]  # tokenizer.json, tokenizer.model, added_tokens.json, vocab.json, ...
    for name in present + others:
        (ckpt / name).write_text(f"contents of {name}")
    assert hf_convert.copy_tokenizer_files(str(ckpt), str(workdir)) == present
    assert sorted(os.listdir(workdir / "tokenizer")) == sorted(present)
    for name in present:
        assert (workdir / "tokenizer" / name).read_text() == f"contents of {name}"


def test_no_tokenizer_directory_without_tokenizer_files(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    assert hf_convert.copy_tokenizer_files(str(tmp_path / "ckpt"), str(tmp_path / "run")) == []
    assert not os.path.exists(tmp_path / "run" / "tokenizer")
