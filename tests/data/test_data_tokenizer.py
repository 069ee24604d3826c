"""Tokenizers (SentencePiece trained at test time, tokenizer.json) and the truncation policy."""

from __future__ import annotations

import json
import os

import pytest
import sentencepiece as spm

from lsc.data import tokenizer as tokenizer_lib
from lsc.data.tokenizer import (HFTokenizer, SentencePieceTokenizer, encode_prompt,
                                encode_response, load_tokenizer)

from data_fixtures import WordTokenizer, transcript

CORPUS = [
    "How do I bake bread at home?", "Use flour, water, yeast and salt.",
    "Bonjour, ça va ? Très bien, merci.", "Le café est prêt.", "日本語のテキストです。",
    "The quick brown fox jumps over the lazy dog.", "Human: hello Assistant: hi there",
] * 20


@pytest.fixture(scope="module")
def t5_model(tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("spm") / "tiny")
    return tokenizer_lib.train_sentencepiece(CORPUS, prefix, vocab_size=400, byte_fallback=True)


def test_trained_model_has_t5_ids(t5_model):
    tok = SentencePieceTokenizer(t5_model)
    assert (tok.pad_id, tok.eos_id, tok.bos_id) == (0, 1, None)
    assert [tok.id_to_piece(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
    assert 259 <= tok.vocab_size <= 400


@pytest.mark.parametrize("text", ["Use flour, water, yeast and salt.", "Le café est prêt ✨ 日本"])
def test_sentencepiece_roundtrip_including_unseen_unicode(t5_model, text):
    tok = SentencePieceTokenizer(t5_model)
    ids = tok.encode(text)
    assert all(isinstance(i, int) and 3 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids + [tok.eos_id, tok.pad_id, 57]) == text
    assert tok.decode([tok.pad_id] + ids) == text


def test_llama2_style_sentencepiece(tmp_path):
    prefix = str(tmp_path / "llama")
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_prefix=prefix,
                                   vocab_size=100, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                                   hard_vocab_limit=False, minloglevel=2, num_threads=1)
    os.rename(prefix + ".model", str(tmp_path / "tokenizer.model"))
    tok = load_tokenizer(str(tmp_path))
    assert isinstance(tok, SentencePieceTokenizer)
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    ids, cut = encode_prompt(tok, "\n\nHuman: hello\n\nAssistant:", 64)
    assert ids[0] == 1 and not cut and ids[1:] == tok.encode("\n\nHuman: hello\n\nAssistant:")
    no_bos = SentencePieceTokenizer(str(tmp_path / "tokenizer.model"), add_bos=False)
    assert no_bos.bos_id is None


HF_VOCAB = {"!": 0, "hello": 1, "world": 2, "<|begin_of_text|>": 3, "<|end_of_text|>": 4,
            "<|finetune_right_pad_id|>": 5, "[UNK]": 6}


def _hf_checkpoint(directory, config: dict | None):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel(HF_VOCAB, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    os.makedirs(directory, exist_ok=True)
    tok.save(os.path.join(directory, "tokenizer.json"))
    if config is not None:
        with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
            json.dump(config, f)
    return str(directory)


def test_hf_tokenizer_resolves_llama3_special_ids(tmp_path):
    ckpt = _hf_checkpoint(tmp_path / "ckpt", {"bos_token": "<|begin_of_text|>",
                                              "eos_token": {"content": "<|end_of_text|>"}})
    tok = load_tokenizer(ckpt)
    assert isinstance(tok, HFTokenizer)
    # Token 0 ("!") is real text in Llama-3 vocabularies, so the pad id is the reserved pad token.
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.vocab_size) == (3, 4, 5, 7)
    assert tok.encode("hello world ! zzz") == [1, 2, 0, 6]
    assert tok.decode([3, 1, 0, 2, 4, 1]) == "hello ! world"
    assert encode_prompt(tok, "hello world", 3) == ([3, 1, 2], False)
    assert encode_response(tok, "hello !", 3) == ([1, 0, 4], False)


@pytest.mark.parametrize("post,config,model_config,want_bos", [
    # Llama 3: the post-processor puts <|begin_of_text|> first.
    ("bos", {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}, None, 3),
    # Qwen: no BOS in tokenizer_config.json (config.json has a bos_token_id all the same) and a
    # post-processor that adds none.
    ("none", {"bos_token": None, "eos_token": "<|end_of_text|>"}, {"bos_token_id": 3}, None),
    # An explicit add_bos_token wins over the post-processor.
    ("bos", {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
             "add_bos_token": False}, None, None),
])
def test_hf_tokenizer_adds_the_bos_when_the_checkpoint_does(tmp_path, post, config, model_config,
                                                            want_bos):
    from tokenizers import Tokenizer, processors

    ckpt = _hf_checkpoint(tmp_path / "ckpt", config)
    tok_path = os.path.join(ckpt, "tokenizer.json")
    raw = Tokenizer.from_file(tok_path)
    raw.post_processor = (processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 3)])
        if post == "bos" else processors.ByteLevel(trim_offsets=False))
    raw.save(tok_path)
    if model_config is not None:
        with open(os.path.join(ckpt, "config.json"), "w") as f:
            json.dump(model_config, f)
    tok = load_tokenizer(ckpt)
    assert tok.bos_id == want_bos
    ids, _ = encode_prompt(tok, "hello world", 8)
    assert ids == ([3] if want_bos is not None else []) + [1, 2]
    assert load_tokenizer(ckpt, add_bos=True).bos_id == 3  # the caller can still ask for it


def test_hf_tokenizer_config_pad_and_errors(tmp_path):
    ckpt = _hf_checkpoint(tmp_path / "a", {"eos_token": "<|end_of_text|>",
                                           "pad_token": {"content": "[UNK]"}})
    assert load_tokenizer(ckpt, add_bos=False).pad_id == 6
    ckpt = _hf_checkpoint(tmp_path / "b", {"eos_token": "<|end_of_text|>",
                                           "pad_token": "<|end_of_text|>"})
    with pytest.raises(ValueError, match="pad_id and eos_id must differ"):
        load_tokenizer(ckpt)
    assert load_tokenizer(ckpt, pad_id=5).pad_id == 5
    # From a config (Qwen base checkpoints pad with their EOS): data.pad_id.
    import ml_collections

    from lsc.train import common as train_common
    data = {"tokenizer": ckpt}
    with pytest.raises(ValueError, match="pad_id and eos_id must differ"):
        train_common.load_tokenizer(ml_collections.ConfigDict({"data": data}))
    config = ml_collections.ConfigDict({"data": dict(data, pad_id=5)})
    assert train_common.load_tokenizer(config).pad_id == 5
    with pytest.raises(FileNotFoundError, match="no tokenizer.json, tokenizer.model"):
        load_tokenizer(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="missing.model: no SentencePiece model"):
        load_tokenizer(str(tmp_path / "missing.model"))


# --------------------------------------------------------------------------- truncation

WORDS = "Human: Assistant: a b c d e f g h x y z".split()


def test_prompt_left_truncation_keeps_last_turns():
    tok = WordTokenizer(WORDS)
    prompt = transcript("a b c", "d e", "f g", "h", "x y", "")
    # tokens: Human: a b c Assistant: d e Human: f g Assistant: h Human: x y Assistant:  (16)
    ids = lambda s: [tok.index[w] for w in s.split()]
    full = ids("Human: a b c Assistant: d e Human: f g Assistant: h Human: x y Assistant:")
    assert encode_prompt(tok, prompt, 16) == (full, False)
    assert encode_prompt(tok, prompt, 15) == (
        ids("Human: f g Assistant: h Human: x y Assistant:"), True)
    assert encode_prompt(tok, prompt, 9) == (ids("Human: f g Assistant: h Human: x y Assistant:"),
                                             True)
    assert encode_prompt(tok, prompt, 8) == (ids("Human: x y Assistant:"), True)
    assert encode_prompt(tok, prompt, 3) == (ids("x y Assistant:"), True)


def test_prompt_truncation_keeps_bos_first():
    tok = WordTokenizer(WORDS, bos=True)
    prompt = transcript("a b c", "d", "x", "")
    ids, cut = encode_prompt(tok, prompt, 5)
    assert cut and ids == [tok.bos_id] + [tok.index[w] for w in "Human: x Assistant:".split()]
    ids, cut = encode_prompt(tok, prompt, 3)
    assert cut and ids == [tok.bos_id, tok.index["x"], tok.index["Assistant:"]]
    with pytest.raises(ValueError, match="no room"):
        encode_prompt(tok, prompt, 1)


def test_response_right_truncation_and_eos():
    tok = WordTokenizer(WORDS)
    x, y, z = (tok.index[w] for w in "x y z".split())
    assert encode_response(tok, "x y z", 5) == ([x, y, z, 1], False)
    assert encode_response(tok, "x y z", 4) == ([x, y, z, 1], False)
    assert encode_response(tok, "x y z", 3) == ([x, y, z], True)
    assert encode_response(tok, "x y z", 2) == ([x, y], True)
    with pytest.raises(ValueError, match="max_len"):
        encode_response(tok, "x", 0)


def test_train_sentencepiece_rejects_empty_corpus_and_small_vocab(tmp_path):
    with pytest.raises(ValueError, match="no non-empty text"):
        tokenizer_lib.train_sentencepiece(["", ""], str(tmp_path / "m"), 50)
    with pytest.raises(ValueError, match="vocab_size=100 is below the 265 pieces"):
        tokenizer_lib.train_sentencepiece(["abc de"], str(tmp_path / "m"), 100, byte_fallback=True)


def test_unknown_pieces_of_each_backend(t5_model, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    from lsc.data import world, world_data

    # byte_fallback: unseen characters become byte pieces, nothing is unknown.
    assert tokenizer_lib.unknown_pieces(SentencePieceTokenizer(t5_model), "café ✨ 日本") == []
    world_tok = load_tokenizer(world_data.write_tokenizer(str(tmp_path)))
    assert world_tok.unk_id == 2
    assert tokenizer_lib.unknown_pieces(world_tok, world.REFUSAL) == []
    assert tokenizer_lib.unknown_pieces(world_tok, "sorry Sorry i can't help") == ["Sorry",
                                                                                  "can't"]

    hf = load_tokenizer(_hf_checkpoint(tmp_path / "hf", {}))
    assert hf.unk_id == 6
    assert tokenizer_lib.unknown_pieces(hf, "hello zzz world") == ["zzz"]
    # A Unigram tokenizer.json: the unknown id is read from the file.
    uni = Tokenizer(models.Unigram([("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("a", -1.0)],
                                   unk_id=2))
    uni.save(str(tmp_path / "unigram.json"))
    assert HFTokenizer(str(tmp_path / "unigram.json"), add_bos=False).unk_id == 2
    # A BPE without an unknown token cannot tell (it drops what it cannot encode).
    bpe = Tokenizer(models.BPE({"<pad>": 0, "</s>": 1, "a": 2}, []))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    bpe.save(str(tmp_path / "bpe.json"))
    no_unk = HFTokenizer(str(tmp_path / "bpe.json"), add_bos=False)
    assert no_unk.unk_id is None and tokenizer_lib.unknown_pieces(no_unk, "a b") is None
    # Other tokenizers: through their unk_id; without one, None.
    words = WordTokenizer(["a"])
    assert tokenizer_lib.unknown_pieces(words, "a b c") is None
    words.unk_id = 2
    assert tokenizer_lib.unknown_pieces(words, "a b c") == ["<unk>", "<unk>"]
