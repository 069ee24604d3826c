"""Helpers for the data tests: hh-rlhf file writers and a word-level tokenizer."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Sequence


def transcript(*turns: str) -> str:
    """Alternating Human / Assistant turns in the published format (first turn is Human)."""
    roles = ("Human", "Assistant")
    return "".join(f"\n\n{roles[i % 2]}: {text}" for i, text in enumerate(turns))


def write_lines(path: str, lines: Sequence[bytes | str | dict]) -> str:
    """Writes one line per item (dicts as JSON, str as UTF-8, bytes as-is); gzips ``*.gz``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    payload = b""
    for line in lines:
        if isinstance(line, dict):
            line = json.dumps(line, ensure_ascii=False)
        if isinstance(line, str):
            line = line.encode("utf-8")
        payload += line + b"\n"
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(payload)
    return path


class WordTokenizer:
    """Whitespace tokenizer with a fixed vocabulary: pad 0, EOS 1, unk 2, words from 3 on."""

    def __init__(self, words: Sequence[str], bos: bool = False):
        self.words = ["<pad>", "</s>", "<unk>"] + (["<s>"] if bos else []) + list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.pad_id, self.eos_id = 0, 1
        self.bos_id = 3 if bos else None
        self.vocab_size = len(self.words)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(w, 2) for w in text.split()]

    def decode(self, ids: Sequence[int]) -> str:
        out = []
        for i in ids:
            if i == self.eos_id:
                break
            if i not in (self.pad_id, self.bos_id):
                out.append(self.words[i])
        return " ".join(out)
