"""Tokenizers with the project's conventions, and the truncation policy.

Two backends share the :class:`Tokenizer` interface:

* :class:`SentencePieceTokenizer` - a SentencePiece ``.model`` file. With T5's vocabulary (or one
  trained by :func:`train_sentencepiece`) ``pad_id = 0``, ``eos_id = 1``, ``unk_id = 2`` and no
  BOS. Llama-2-style ``tokenizer.model`` files (``unk 0, bos 1, eos 2``, no pad piece) get
  ``pad_id = 0`` (the unk piece, which real text does not produce) and a BOS on prompts.
* :class:`HFTokenizer` - a Hugging Face ``tokenizer.json`` (Llama-3-family checkpoints) through
  the ``tokenizers`` library; special ids come from the checkpoint's ``tokenizer_config.json`` /
  ``special_tokens_map.json`` / ``config.json`` when present.

:func:`load_tokenizer` picks the backend from a file or a checkpoint directory.

Unknown text: ``unk_id`` is the id a tokenizer gives text outside its vocabulary (``None`` when
it has none) and :func:`unknown_pieces` lists the pieces of a text that map to it. A
SentencePiece model always has an unknown piece (T5's and the synthetic world's: id 2; with
``byte_fallback`` unknown characters become byte pieces instead and nothing is unknown). A
``tokenizer.json`` has one when its model names one (``unk_token`` of BPE / WordPiece /
WordLevel, ``unk_id`` of Unigram); byte-level BPE tokenizers (Llama 3) have none and cannot
produce unknown tokens, but a non-byte-level BPE without ``unk_token`` silently *drops* the
characters it cannot encode, which :func:`unknown_pieces` cannot tell (it returns ``None``).

Truncation policy (lengths come from the config)
------------------------------------------------
* Prompts are **left-truncated** so the last turns survive: whole leading turns (each starting
  at ``\\n\\nHuman:``) are dropped first; if the last turn alone is still too long its leading
  tokens are dropped. A BOS, when the tokenizer adds one, stays first.
* Responses are **right-truncated**: the first ``max_len - 1`` tokens followed by EOS when the
  response plus EOS fits, otherwise the first ``max_len`` tokens and no EOS (the response did not
  end inside the window).

:class:`TruncationStats` counts truncated prompts, responses and examples; the pipelines log it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Sequence
from typing import Protocol

from lsc.data import hh_rlhf

T5_PAD_ID = 0
T5_EOS_ID = 1
T5_UNK_ID = 2


class Tokenizer(Protocol):
    """Text <-> int token ids; ``encode`` adds no special tokens; ``bos_id`` is None if unused."""

    pad_id: int
    eos_id: int
    bos_id: int | None
    vocab_size: int
    unk_id: int | None  # the id of text outside the vocabulary; None: the tokenizer has none

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, no special tokens added."""

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, stopping at the first EOS and skipping pad / BOS ids."""


# --------------------------------------------------------------------------- SentencePiece


class SentencePieceTokenizer:
    """A SentencePiece model. ``decode`` drops pad, EOS and BOS ids and stops at the first EOS."""

    def __init__(self, model_path: str, *, pad_id: int | None = None, eos_id: int | None = None,
                 add_bos: bool | None = None):
        import sentencepiece as spm

        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"{model_path}: no SentencePiece model file")
        self.path = model_path
        self._sp = spm.SentencePieceProcessor(model_file=model_path)
        self.vocab_size = int(self._sp.get_piece_size())
        sp_pad, sp_eos, sp_bos = self._sp.pad_id(), self._sp.eos_id(), self._sp.bos_id()
        if pad_id is None:
            pad_id = sp_pad if sp_pad >= 0 else max(self._sp.unk_id(), 0)
        if eos_id is None:
            if sp_eos < 0:
                raise ValueError(f"{model_path}: the model has no EOS piece; pass eos_id")
            eos_id = sp_eos
        if add_bos is None:
            add_bos = sp_bos >= 0
        if add_bos and sp_bos < 0:
            raise ValueError(f"{model_path}: add_bos=True but the model has no BOS piece")
        for name, value in (("pad_id", pad_id), ("eos_id", eos_id)):
            if not 0 <= value < self.vocab_size:
                raise ValueError(f"{model_path}: {name}={value} outside the vocabulary "
                                 f"[0, {self.vocab_size})")
        if pad_id == eos_id:
            raise ValueError(f"{model_path}: pad_id and eos_id must differ, both are {pad_id}")
        self.pad_id, self.eos_id = int(pad_id), int(eos_id)
        self.bos_id = int(sp_bos) if add_bos else None
        self.unk_id = int(self._sp.unk_id())  # every SentencePiece model has an unknown piece

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text, out_type=int))

    def unknown_pieces(self, text: str) -> list[str]:
        """The pieces of ``text`` encoded as ``unk_id`` (their text; consecutive unknown words
        of a word-level model form one piece)."""
        ids = self._sp.encode(text, out_type=int)
        if self.unk_id not in ids:
            return []
        pieces = self._sp.encode(text, out_type=str)
        return [p.replace("\u2581", " ").strip() for i, p in zip(ids, pieces) if i == self.unk_id]

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode(_strip_special(ids, self))

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(int(i))


def train_sentencepiece(texts: Iterable[str], model_prefix: str, vocab_size: int, *,
                        model_type: str = "unigram", byte_fallback: bool = False,
                        character_coverage: float = 1.0, seed_sentencepiece_size: int = 100_000,
                        user_defined_symbols: Sequence[str] = ()) -> str:
    """Trains a SentencePiece model with T5's ids (pad 0, EOS 1, unk 2, no BOS).

    ``vocab_size`` is an upper bound (``hard_vocab_limit=false``) so tiny corpora train.
    ``model_type`` is ``unigram``, ``bpe``, ``word`` or ``char``.
    Returns ``model_prefix + ".model"``.
    """
    import sentencepiece as spm

    texts = [t for t in texts if t]
    if not texts:
        raise ValueError("train_sentencepiece: no non-empty text to train on")
    if model_type in ("unigram", "bpe", "char") and character_coverage >= 1.0:
        needed = len(set("".join(texts)) - {" "}) + 4 + (256 if byte_fallback else 0)
        if vocab_size < needed:
            raise ValueError(f"vocab_size={vocab_size} is below the {needed} pieces the corpus "
                             "needs (distinct characters, special pieces and, with "
                             "byte_fallback, 256 byte pieces)")
    os.makedirs(os.path.dirname(os.path.abspath(model_prefix)), exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_prefix=model_prefix, vocab_size=vocab_size,
        model_type=model_type, pad_id=T5_PAD_ID, eos_id=T5_EOS_ID, unk_id=T5_UNK_ID, bos_id=-1,
        hard_vocab_limit=False, byte_fallback=byte_fallback,
        character_coverage=character_coverage, user_defined_symbols=list(user_defined_symbols),
        seed_sentencepiece_size=seed_sentencepiece_size, num_threads=1,
        minloglevel=2)
    return model_prefix + ".model"


# --------------------------------------------------------------------------- tokenizers (HF)


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return data if isinstance(data, dict) else {}


def _token_content(value: object) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class HFTokenizer:
    """A ``tokenizer.json`` tokenizer; ``encode`` adds no special tokens (BOS added by callers).

    Ids are resolved in order: explicit arguments, the checkpoint's tokenizer config files, then
    well-known token names (``<|end_of_text|>``, ``</s>``, ``<|finetune_right_pad_id|>``,
    ``<pad>``, ``<unk>``). A pad id that cannot be found must be passed.

    Whether prompts start with the BOS (``add_bos``, when not given) follows the checkpoint, as
    ``transformers`` does: ``add_bos_token`` of ``tokenizer_config.json`` when it has one; else,
    when ``tokenizer.json`` has a post-processor, whether that post-processor puts the BOS first
    (Llama 3 and Gemma do, Qwen does not); else whether ``tokenizer_config.json`` names a
    ``bos_token`` at all.
    """

    _EOS_NAMES = ("<|end_of_text|>", "</s>", "<|endoftext|>", "<eos>")
    _BOS_NAMES = ("<|begin_of_text|>", "<s>", "<bos>")
    _PAD_NAMES = ("<pad>", "<|finetune_right_pad_id|>", "<|pad|>", "<unk>")

    def __init__(self, tokenizer_json: str, *, pad_id: int | None = None,
                 eos_id: int | None = None, bos_id: int | None = None,
                 add_bos: bool | None = None):
        from tokenizers import Tokenizer as _Tok

        if not os.path.isfile(tokenizer_json):
            raise FileNotFoundError(f"{tokenizer_json}: no tokenizer.json")
        self.path = tokenizer_json
        self._tok = _Tok.from_file(tokenizer_json)
        self.vocab_size = int(self._tok.get_vocab_size(with_added_tokens=True))
        directory = os.path.dirname(tokenizer_json)
        cfg = _read_json(os.path.join(directory, "tokenizer_config.json"))
        cfg.update({k: v for k, v in _read_json(
            os.path.join(directory, "special_tokens_map.json")).items() if k not in cfg})
        model_cfg = _read_json(os.path.join(directory, "config.json"))

        def resolve(explicit, key, names):
            if explicit is not None:
                return explicit
            name = _token_content(cfg.get(key))
            if name is not None and self._tok.token_to_id(name) is not None:
                return self._tok.token_to_id(name)
            cfg_id = model_cfg.get(key + "_id")
            if isinstance(cfg_id, list) and cfg_id:
                cfg_id = cfg_id[0]
            if isinstance(cfg_id, int):
                return cfg_id
            for n in names:
                if self._tok.token_to_id(n) is not None:
                    return self._tok.token_to_id(n)
            return None

        eos = resolve(eos_id, "eos_token", self._EOS_NAMES)
        pad = resolve(pad_id, "pad_token", self._PAD_NAMES)
        bos = resolve(bos_id, "bos_token", self._BOS_NAMES)
        if eos is None:
            raise ValueError(f"{tokenizer_json}: cannot find an EOS token; pass eos_id")
        if pad is None:
            raise ValueError(f"{tokenizer_json}: cannot find a pad token; pass pad_id")
        if pad == eos:
            raise ValueError(f"{tokenizer_json}: pad_id and eos_id must differ (both {pad}); "
                             "masks are tokens != pad_id")
        if add_bos is None:
            add_bos = self._checkpoint_adds_bos(cfg, bos)
        if add_bos and bos is None:
            raise ValueError(f"{tokenizer_json}: add_bos=True but no BOS token; pass bos_id")
        self.pad_id, self.eos_id = int(pad), int(eos)
        self.bos_id = int(bos) if add_bos else None
        self.unk_id = self._model_unk_id()

    def _checkpoint_adds_bos(self, cfg: dict, bos: int | None) -> bool:
        """The checkpoint's own choice of a leading BOS (class docstring)."""
        flag = cfg.get("add_bos_token")
        if isinstance(flag, bool):
            return flag
        if bos is None:
            return False
        if self._tok.post_processor is not None:
            ids = self._tok.encode("a", add_special_tokens=True).ids
            return bool(ids) and ids[0] == bos
        return _token_content(cfg.get("bos_token")) is not None

    def _model_unk_id(self) -> int | None:
        """The model's unknown-token id: ``unk_token`` of BPE / WordPiece / WordLevel, ``unk_id``
        of Unigram (read from the file: the ``tokenizers`` object does not expose it); None when
        the model has none (e.g. byte-level BPE)."""
        name = getattr(self._tok.model, "unk_token", None)
        if name:
            return self._tok.token_to_id(name)
        if type(self._tok.model).__name__ == "Unigram":
            unk = _read_json(self.path).get("model", {}).get("unk_id")
            return int(unk) if isinstance(unk, int) else None
        return None

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def unknown_pieces(self, text: str) -> list[str] | None:
        """The pieces of ``text`` encoded as ``unk_id`` (their text); None when the model has no
        unknown token (see the module docstring: then it cannot tell)."""
        if self.unk_id is None:
            return None
        enc = self._tok.encode(text, add_special_tokens=False)
        return [text[start:end] for i, (start, end) in zip(enc.ids, enc.offsets)
                if i == self.unk_id]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(_strip_special(ids, self), skip_special_tokens=False)


def load_tokenizer(path: str, **kwargs) -> Tokenizer:
    """A tokenizer from a ``.model`` / ``tokenizer.json`` file or a checkpoint directory.

    In a directory ``tokenizer.json`` is preferred over ``tokenizer.model`` / ``spiece.model``.
    Keyword arguments go to the backend's constructor.
    """
    if os.path.isdir(path):
        for name in ("tokenizer.json", "tokenizer.model", "spiece.model"):
            candidate = os.path.join(path, name)
            if os.path.isfile(candidate):
                return load_tokenizer(candidate, **kwargs)
        raise FileNotFoundError(f"{path}: no tokenizer.json, tokenizer.model or spiece.model")
    if path.endswith(".json"):
        return HFTokenizer(path, **kwargs)
    return SentencePieceTokenizer(path, **kwargs)


def unknown_pieces(tok: Tokenizer, text: str) -> list[str] | None:
    """The pieces of ``text`` that ``tok`` encodes as its unknown token (``[]``: none); None when
    ``tok`` cannot tell (no ``unk_id``, see the module docstring). Tokenizers other than the two
    backends are asked through their ``unknown_pieces`` method or, failing that, their
    ``unk_id`` attribute (each unknown token then reads ``'<unk>'``)."""
    method = getattr(tok, "unknown_pieces", None)
    if callable(method):
        return method(text)
    unk = getattr(tok, "unk_id", None)
    if unk is None:
        return None
    return ["<unk>" for i in tok.encode(text) if i == unk]


def _strip_special(ids: Sequence[int], tok: Tokenizer) -> list[int]:
    out = []
    for i in ids:
        i = int(i)
        if i == tok.eos_id:
            break
        if i == tok.pad_id or (tok.bos_id is not None and i == tok.bos_id):
            continue
        out.append(i)
    return out


# --------------------------------------------------------------------------- truncation


@dataclasses.dataclass
class TruncationStats:
    """How many prompts / responses / examples were truncated, out of ``examples``."""

    examples: int = 0
    prompts_truncated: int = 0
    responses_truncated: int = 0
    examples_truncated: int = 0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def encode_prompt(tok: Tokenizer, prompt: str, max_len: int) -> tuple[list[int], bool]:
    """Token ids of ``prompt`` (BOS first when the tokenizer adds one), at most ``max_len``.

    Returns ``(ids, truncated)``; see the module docstring for the left-truncation policy.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    bos = [tok.bos_id] if tok.bos_id is not None else []
    budget = max_len - len(bos)
    if budget < 1:
        raise ValueError(f"max_len={max_len} leaves no room for prompt tokens after BOS")
    ids = tok.encode(prompt)
    if len(ids) <= budget:
        return bos + ids, False
    for start in hh_rlhf.turn_starts(prompt)[1:]:
        suffix = tok.encode(prompt[start:])
        if len(suffix) <= budget:
            return bos + suffix, True
    return bos + ids[-budget:], True


def encode_response(tok: Tokenizer, response: str, max_len: int) -> tuple[list[int], bool]:
    """Token ids of ``response`` then EOS, right-truncated to ``max_len``; ``(ids, truncated)``."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    ids = tok.encode(response)
    if len(ids) + 1 <= max_len:
        return ids + [tok.eos_id], False
    return ids[:max_len], True
