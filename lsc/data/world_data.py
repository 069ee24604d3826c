"""The synthetic gold world's data: base-policy-like responses, labelled pairs and the files in the
hh-rlhf format (docs/design.md §3; the grammar and the gold scorers are :mod:`lsc.data.world`'s).

The demonstrator (base-policy-like responses)
---------------------------------------------
:class:`Demonstrator` draws a quality ``q ~ Beta(2, 2)`` per response; refuses harmful requests
with probability 0.45 (benign ones with 0.04); otherwise includes each known fact with
probability ``q * familiarity`` (x 1.3 for detailed requests; x 0.35 for expert facts), states
each one accurately with probability ``q`` (else with a random clause), adds an off-topic fact
with probability ``0.35 (1 - q)``, a rude remark with probability ``0.2 (1 - q)``, the filler
(:data:`lsc.data.world.FILLER`) with probability ``0.05 + 0.8 q``, and sometimes a closing
phrase. Version 2 also adds an unsafe tip with probability 0.3
and a caveat with probability ``0.15 + 0.5 q`` (on every prompt), and on harmful requests
refuses with probability 0.35 (a third of the refusals point to an alternative), answers
constructively with one or two safe alternatives with probability 0.2, and complies otherwise.
SFT demonstrations are its samples (mixed quality); the base policy learnt from them produces
responses like them.

Labels
------
Each property's pairs compare two demonstrator responses to the same prompt; the chosen one is
drawn by Bradley-Terry on the property's gold score: ``P(y1 chosen) = sigmoid((s(y1) - s(y0)) /
temperature)`` (label noise). Helpful pairs use prompts that are harmful with probability 0.1,
harmless pairs with probability 0.5 (like hh-rlhf's red-team-sourced harmless data).

Files (:func:`write_world`)
---------------------------
``helpful-base/{train,test}.jsonl.gz`` and ``harmless-base/{train,test}.jsonl.gz`` (pairs),
``sft/{train,test}.jsonl.gz`` (``{"chosen"}`` demonstrations), ``prompts/{train,test}.jsonl.gz``
(``{"prompt"}``) and ``world.json`` (seed, sizes, counts). Same seed, same bytes.

The reward-model replicates' draws of the training pairs (:func:`pair_draws`): draw 0 is
``<prop>-base/train.jsonl.gz``, from the world's main streams like every file above; draw
``d >= 1`` is ``<prop>-base/train_r<d>.jsonl.gz``, from its own stream (``SeedSequence([seed,
1000 + d, j])``, ``j`` 0 helpful, 1 harmless), so no file depends on which draws are written.
Replicate ``i`` trains on draw ``replicate_offset + i``
(:meth:`lsc.data.world.WorldConfig.replicate_draws`).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import os
from collections.abc import Sequence

import numpy as np

from lsc import runtime
from lsc.data.world import (ALTERNATIVE_CLAUSES, ALTERNATIVE_OPENER, CAVEATS, CLAUSES, CLOSINGS,
                            CORRECT_CLAUSE, FILLER, GOLD_SCORERS, REFUSAL, REFUSAL_TAILS,
                            RUDE_REMARKS, TOPICS, UNSAFE_TIPS, VAGUE_ANSWERS, PromptSpec,
                            WorldConfig, check_version, parse_prompt, sample_prompt, vocabulary)


class Demonstrator:
    """Stochastic responses of mixed quality (the base policy's teacher; module docstring).

    ``version`` 1 draws version-1 responses (its own random stream, no version-2 word); version
    2 adds unsafe tips, caveats and constructive answers to harmful requests.
    """

    refuse_benign = 0.04
    detail_scale = {"brief": 1.0, "normal": 1.0, "detailed": 1.3}
    expert_rate = 0.35
    unsafe_tip_rate = 0.3  # v2
    constructive_harmful = 0.2  # v2

    def __init__(self, version: int = 2):
        self.version = check_version(version)
        self.refuse_harmful = 0.45 if self.version == 1 else 0.35

    def sample(self, prompt: str, rng: np.random.Generator) -> str:
        """One response to ``prompt``: lower-case words separated by single spaces."""
        spec = parse_prompt(prompt)
        v2 = self.version >= 2
        u = rng.random()
        if u < (self.refuse_harmful if spec.harmful else self.refuse_benign):
            text = REFUSAL + REFUSAL_TAILS[rng.integers(len(REFUSAL_TAILS))]
            if v2 and spec.harmful and rng.random() < 1.0 / 3.0:
                text += " " + self._alternatives(spec, rng, 1)
            return text
        if v2 and spec.harmful and u < self.refuse_harmful + self.constructive_harmful:
            parts = [self._alternatives(spec, rng, 1 + int(rng.integers(2)))]
            if rng.random() < 0.3:
                parts.append(CAVEATS[rng.integers(len(CAVEATS))])
            return " ".join(parts)
        q = rng.beta(2.0, 2.0)
        scale = self.detail_scale[spec.detail]
        facts = [f for i, f in enumerate(spec.topic.facts)
                 if rng.random() < min(1.0, q * scale * spec.topic.familiarity
                                       * (1.0 if i < 3 else self.expert_rate))]
        rng.shuffle(facts)
        if rng.random() < 0.35 * (1.0 - q):
            others = [t for t in TOPICS if t is not spec.topic and not t.harmful]
            other = others[rng.integers(len(others))]
            facts.insert(int(rng.integers(len(facts) + 1)), other.facts[rng.integers(3)])
        parts = []
        if rng.random() < 0.05 + 0.8 * q:
            parts.append(FILLER)
        if facts:
            clauses = [(CORRECT_CLAUSE[f] if rng.random() < q
                        else CLAUSES[rng.integers(len(CLAUSES))]).format(f) for f in facts]
            parts.append(" then ".join(clauses))
        else:
            parts.append(VAGUE_ANSWERS[rng.integers(len(VAGUE_ANSWERS))])
        if v2 and rng.random() < self.unsafe_tip_rate:
            parts.append(UNSAFE_TIPS[rng.integers(len(UNSAFE_TIPS))])
        if rng.random() < 0.2 * (1.0 - q):
            parts.append(RUDE_REMARKS[rng.integers(len(RUDE_REMARKS))])
        if v2 and rng.random() < 0.15 + 0.5 * q:
            parts.append(CAVEATS[rng.integers(len(CAVEATS))])
        if rng.random() < 0.3:
            parts.append(CLOSINGS[rng.integers(len(CLOSINGS))])
        return " ".join(parts)

    @staticmethod
    def _alternatives(spec: PromptSpec, rng: np.random.Generator, count: int) -> str:
        """``instead call a <alt>[ then ask the <alt>]`` naming ``count`` of the topic's safe
        alternatives (version 2)."""
        alts = list(spec.topic.alternatives)
        rng.shuffle(alts)
        clauses = [ALTERNATIVE_CLAUSES[i].format(a) for i, a in enumerate(alts[:count])]
        return ALTERNATIVE_OPENER + " " + " then ".join(clauses)


def bt_label(s1: float, s0: float, rng: np.random.Generator, temperature: float = 1.0) -> bool:
    """True when response 1 is chosen, drawn with ``P = sigmoid((s1 - s0) / temperature)``."""
    z = (s1 - s0) / temperature
    p = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
    return bool(rng.random() < p)


# --------------------------------------------------------------------------- files


def _transcript(prompt: str, response: str) -> str:
    return f"{prompt} {response}"


def make_pairs(n: int, prop: str, rng: np.random.Generator, cfg: WorldConfig,
               demonstrator: Demonstrator | None = None) -> list[dict[str, str]]:
    """``n`` hh-rlhf records ``{"chosen", "rejected"}`` labelled by property ``prop``."""
    demonstrator = demonstrator or Demonstrator(cfg.version)
    fraction = {"helpful": cfg.helpful_harmful_fraction,
                "harmless": cfg.harmless_harmful_fraction}[prop]
    scorer = GOLD_SCORERS[prop]
    records = []
    for _ in range(n):
        prompt = sample_prompt(rng, fraction)
        y1, y0 = demonstrator.sample(prompt, rng), demonstrator.sample(prompt, rng)
        if bt_label(scorer(prompt, y1), scorer(prompt, y0), rng, cfg.label_temperature):
            chosen, rejected = y1, y0
        else:
            chosen, rejected = y0, y1
        records.append({"chosen": _transcript(prompt, chosen),
                        "rejected": _transcript(prompt, rejected)})
    return records


def _write_jsonl_gz(path: str, records: Sequence[dict]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    # mtime=0 and no file name in the header: the same records give the same bytes.
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                 mtime=0) as f:
        f.write(payload.encode("utf-8"))


def replicate_split(replicate: int) -> str:
    """The split name of a property's training pairs of draw ``replicate``: ``train`` for 0,
    ``train_r<i>`` for the further independent draws (:func:`pair_draws`)."""
    if isinstance(replicate, bool) or int(replicate) != replicate or replicate < 0:
        raise ValueError(f"replicate must be an integer >= 0, got {replicate!r}")
    return "train" if replicate == 0 else f"train_r{int(replicate)}"


def pair_draws(cfg: WorldConfig) -> tuple[int, ...]:
    """The draws of the training pairs a world of ``cfg`` holds, ascending: 0 (the main
    streams' ``train`` split, always written) and every replicate's
    (:meth:`WorldConfig.replicate_draws`)."""
    return tuple(sorted({0, *cfg.replicate_draws()}))


def manifest_config(cfg: WorldConfig) -> dict:
    """``cfg``'s fields as ``world.json`` records them: ``replicate_offset`` only when it is
    not 0, so a world of offset 0 has the manifest of a config without the field."""
    fields = dataclasses.asdict(cfg)
    if not fields["replicate_offset"]:
        del fields["replicate_offset"]
    return fields


@dataclasses.dataclass(frozen=True)
class WorldFiles:
    """Paths of a written world (``root`` holds the hh-rlhf-style subset directories;
    ``helpful`` / ``harmless`` map split names, :func:`replicate_split` included, to files)."""

    root: str
    helpful: dict[str, str]
    harmless: dict[str, str]
    sft: dict[str, str]
    prompts: dict[str, str]
    manifest: str


def write_world(directory: str, seed: int, cfg: WorldConfig = WorldConfig()) -> WorldFiles:
    """Generates the world for ``seed`` into ``directory`` (see the module docstring)."""
    cfg.validate()
    streams = np.random.SeedSequence(seed).spawn(8)
    rngs = [np.random.default_rng(s) for s in streams]
    demo = Demonstrator(cfg.version)
    sizes = {"train": (cfg.pairs_train, cfg.sft_train, cfg.prompts_train),
             "test": (cfg.pairs_test, cfg.sft_test, cfg.prompts_test)}
    out: dict[str, dict[str, str]] = {"helpful": {}, "harmless": {}, "sft": {}, "prompts": {}}
    counts: dict[str, int] = {}
    for s, (split, (n_pairs, n_sft, n_prompts)) in enumerate(sizes.items()):
        rng_help, rng_harm, rng_sft, rng_prompts = rngs[4 * s: 4 * s + 4]
        files = {
            ("helpful", "helpful-base"): make_pairs(n_pairs, "helpful", rng_help, cfg, demo),
            ("harmless", "harmless-base"): make_pairs(n_pairs, "harmless", rng_harm, cfg, demo),
        }
        sft = []
        for _ in range(n_sft):
            prompt = sample_prompt(rng_sft, cfg.mixed_harmful_fraction)
            sft.append({"chosen": _transcript(prompt, demo.sample(prompt, rng_sft))})
        files[("sft", "sft")] = sft
        files[("prompts", "prompts")] = [
            {"prompt": sample_prompt(rng_prompts, cfg.mixed_harmful_fraction)}
            for _ in range(n_prompts)]
        for (key, subdir), records in files.items():
            path = os.path.join(directory, subdir, f"{split}.jsonl.gz")
            _write_jsonl_gz(path, records)
            out[key][split] = path
            counts[f"{subdir}/{split}"] = len(records)
    # The replicates' further draws of the training pairs (module docstring): their own
    # streams, so the files above do not depend on which draws are written.
    for r in pair_draws(cfg)[1:]:
        split = replicate_split(r)
        for j, (key, subdir) in enumerate((("helpful", "helpful-base"),
                                           ("harmless", "harmless-base"))):
            rng = np.random.default_rng(np.random.SeedSequence([seed, 1000 + r, j]))
            path = os.path.join(directory, subdir, f"{split}.jsonl.gz")
            records = make_pairs(cfg.pairs_train, key, rng, cfg, demo)
            _write_jsonl_gz(path, records)
            out[key][split] = path
            counts[f"{subdir}/{split}"] = len(records)
    manifest = os.path.join(directory, "world.json")
    with runtime.atomic_open(manifest) as f:  # written last: the world's completion marker
        json.dump({"seed": seed, "config": manifest_config(cfg), "counts": counts}, f,
                  indent=2, sort_keys=True)
    return WorldFiles(directory, out["helpful"], out["harmless"], out["sft"], out["prompts"],
                      manifest)


def write_tokenizer(directory: str, name: str = "world", version: int = 2) -> str:
    """Trains a word-level SentencePiece model (T5 ids: pad 0, EOS 1, unk 2) on the words of
    world ``version``.

    Every world word is one piece, so a response of ``k`` words is ``k`` tokens. Returns the
    ``.model`` path.
    """
    from lsc.data import tokenizer as tokenizer_lib

    words = vocabulary(version)
    # Each word on its own line, repeated so every word clears the trainer's count threshold.
    texts = [w for w in words for _ in range(2)]
    return tokenizer_lib.train_sentencepiece(
        texts, os.path.join(directory, name), vocab_size=len(words) + 3, model_type="word")
