"""seqio Tasks over hh-rlhf (the ``seqio`` extra), and the core staying free of TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lsc.data import hh_rlhf
from lsc.data import tokenizer as tokenizer_lib

from data_fixtures import transcript, write_lines


def test_core_data_modules_do_not_import_tensorflow():
    code = ("import sys, lsc.data, lsc.data.hh_rlhf, lsc.data.tokenizer, lsc.data.pipeline, "
            "lsc.data.world, lsc.data.world_data; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'seqio')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _record(question: str, good: str, bad: str) -> dict:
    return {"chosen": transcript("Hello!", "Hi, how can I help?", question, good),
            "rejected": transcript("Hello!", "Hi, how can I help?", question, bad)}


@pytest.mark.seqio
@pytest.mark.slow
def test_hh_rlhf_seqio_tasks(tmp_path):
    seqio = pytest.importorskip("seqio")
    from lsc.data import seqio_tasks

    questions = [f"Question number {i}: how do I cook dish {i} à la française?" for i in range(12)]
    for subset in ("helpful-base", "harmless-base"):
        for split in ("train", "test"):
            records = [_record(q, f"Answer {i}: use a pan and some salt ✓.", "No.")
                       for i, q in enumerate(questions)]
            write_lines(str(tmp_path / "hh" / subset / f"{split}.jsonl.gz"), records)
    corpus = [r for q in questions for r in (q, "Answer: use a pan and some salt ✓. No. Hello! "
                                                "Hi, how can I help? Human: Assistant:")] * 5
    model = tokenizer_lib.train_sentencepiece(corpus, str(tmp_path / "spm"), 500,
                                              byte_fallback=True)
    tok = tokenizer_lib.SentencePieceTokenizer(model)
    vocab = seqio.SentencePieceVocabulary(model)
    names = seqio_tasks.register_hh_rlhf_tasks(str(tmp_path / "hh"), vocab, prefix="test_hh")
    assert names == ["test_hh_helpful_pairwise", "test_hh_helpful_prompts",
                     "test_hh_harmless_pairwise", "test_hh_harmless_prompts"]

    pairs, _ = hh_rlhf.read_pairs(hh_rlhf.subset_files(str(tmp_path / "hh"), "helpful-base"))
    lengths = {"inputs": 20, "chosen": 8, "rejected": 8}
    task = seqio.get_mixture_or_task("test_hh_helpful_pairwise")
    examples = list(task.get_dataset(lengths, split="train", shuffle=False).as_numpy_iterator())
    assert len(examples) == len(pairs)
    for ex, pair in zip(examples, pairs):
        np.testing.assert_array_equal(ex["inputs"], tok.encode(pair.prompt)[-20:])
        np.testing.assert_array_equal(ex["chosen"],
                                      tokenizer_lib.encode_response(tok, pair.chosen, 8)[0])
        np.testing.assert_array_equal(ex["rejected"],
                                      tokenizer_lib.encode_response(tok, pair.rejected, 8)[0])

    def prompts(split):
        task = seqio.get_mixture_or_task("test_hh_harmless_prompts")
        ds = task.get_dataset({"inputs": 512}, split=split, shuffle=False)
        return [tuple(ex["inputs"].tolist()) for ex in ds.as_numpy_iterator()]

    rm, align = prompts("train_rm"), prompts("train_align")
    assert not set(rm) & set(align)
    assert sorted(rm + align) == sorted(prompts("train"))
    first, _ = hh_rlhf.split_in_half(pairs)
    assert rm == [tuple(tok.encode(p.prompt)) for p in first]
    assert max(map(len, rm)) < 512
