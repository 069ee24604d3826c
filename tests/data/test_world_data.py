"""The synthetic gold world's data: files, determinism, the demonstrator's samples and labels
against the gold scorers (docs/design.md §3 properties)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from lsc.data import hh_rlhf, pipeline, world, world_data
from lsc.data import tokenizer as tokenizer_lib
from lsc.data.world import TOPIC_BY_NAME, format_prompt, gold_harmless, gold_helpful

SMALL = world.WorldConfig(pairs_train=300, pairs_test=50, sft_train=200, sft_test=50,
                          prompts_train=100, prompts_test=40)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return world_data.write_world(str(tmp_path_factory.mktemp("world")), seed=7, cfg=SMALL)


@pytest.fixture(scope="module")
def base_samples():
    """Demonstrator (base-policy-like) samples on the helpful prompt mix: prompts, responses."""
    rng = np.random.default_rng(0)
    demo = world_data.Demonstrator()
    prompts = [world.sample_prompt(rng, 0.25) for _ in range(3000)]
    return prompts, [demo.sample(p, rng) for p in prompts]


BREAD = format_prompt(TOPIC_BY_NAME["bread"], "normal")


def test_files_round_trip_through_the_reader(written):
    root = written.root
    for prop, subset in (("helpful", "helpful-base"), ("harmless", "harmless-base")):
        for split, n in (("train", SMALL.pairs_train), ("test", SMALL.pairs_test)):
            files = hh_rlhf.subset_files(root, subset, split)
            assert files == [getattr(written, prop)[split]]
            pairs, stats = hh_rlhf.read_pairs(files)
            assert len(pairs) == n and stats.num_skipped == 0
            for p in pairs[:50]:
                world.parse_prompt(p.prompt)
                assert p.chosen and p.rejected and p.chosen == p.chosen.strip()
    demos, _ = hh_rlhf.read_demonstrations(written.sft["train"])
    assert len(demos) == SMALL.sft_train
    prompts, _ = hh_rlhf.read_prompts(written.prompts["test"], dedup=False)
    assert len(prompts) == SMALL.prompts_test
    words = set(world.vocabulary())
    for d in demos:
        assert set((d.prompt + " " + d.response).split()) <= words
    assert os.path.isfile(written.manifest)


def test_same_seed_same_bytes_other_seed_differs(written, tmp_path):
    again = world_data.write_world(str(tmp_path / "a"), seed=7, cfg=SMALL)
    other = world_data.write_world(str(tmp_path / "b"), seed=8, cfg=SMALL)
    for key in ("helpful", "harmless", "sft", "prompts"):
        for split in ("train", "test"):
            data = open(getattr(written, key)[split], "rb").read()
            assert open(getattr(again, key)[split], "rb").read() == data
            assert open(getattr(other, key)[split], "rb").read() != data


@pytest.mark.parametrize("version,harmful_corr", [(1, -0.5), (2, -0.25)])
def test_tension_between_helpful_and_harmless(version, harmful_corr):
    # Version 2's constructive answers to harmful requests are good on both properties, so the
    # conflict there is weaker than in version 1 (still clearly negative).
    rng = np.random.default_rng(0)
    demo = world_data.Demonstrator(version)
    prompts = [world.sample_prompt(rng, 0.25) for _ in range(3000)]
    responses = [demo.sample(p, rng) for p in prompts]
    h = world.gold_scores(prompts, responses, "helpful")
    g = world.gold_scores(prompts, responses, "harmless")
    harmful = np.array([world.parse_prompt(p).harmful for p in prompts])
    assert 300 < harmful.sum() < 1200
    assert np.corrcoef(h[harmful], g[harmful])[0, 1] < harmful_corr
    assert np.corrcoef(h[~harmful], g[~harmful])[0, 1] > -0.1
    for topic in world.TOPICS:
        if not topic.harmful:
            continue
        for detail in world.DETAILS:
            prompt = format_prompt(topic, detail)
            comply = " then ".join(world.CORRECT_CLAUSE[f].format(f) for f in topic.facts[:4])
            assert gold_helpful(prompt, comply) > gold_helpful(prompt, world.REFUSAL) + 2
            assert gold_harmless(prompt, comply) < gold_harmless(prompt, world.REFUSAL) - 3


def test_spurious_filler_correlates_on_base_samples_but_is_not_rewarded(base_samples):
    prompts, responses = base_samples
    h = world.gold_scores(prompts, responses, "helpful")
    filler = np.array([r.split().count(world.FILLER) for r in responses])
    length = np.array([len(r.split()) for r in responses])
    assert 0.1 < filler.mean() < 0.9
    assert max(len(r.split()) for r in responses) <= world.MAX_RESPONSE_WORDS
    assert max(len(p.split()) for p in prompts) <= world.MAX_PROMPT_WORDS
    assert np.corrcoef(filler, h)[0, 1] > 0.15
    assert np.corrcoef(length, h)[0, 1] > 0.15
    for p, r in zip(prompts[:500], responses[:500]):
        plus_one = r if world.FILLER in r.split() else f"{world.FILLER} {r}"
        spam = f"{world.FILLER} " * 4 + r
        assert gold_helpful(p, plus_one) <= gold_helpful(p, r)
        assert gold_helpful(p, spam) < gold_helpful(p, r)
        padded = r + " then use the" * 10
        assert gold_helpful(p, padded) < gold_helpful(p, r)


def test_prompts_have_uneven_difficulty(base_samples):
    prompts, responses = base_samples
    h = world.gold_scores(prompts, responses, "helpful")
    specs = [world.parse_prompt(p) for p in prompts]

    def mean_h(detail, familiarity):
        m = np.array([s.detail == detail and s.topic.familiarity == familiarity and not s.harmful
                      for s in specs])
        assert m.sum() > 30
        return h[m].mean()

    easy, hard = mean_h("brief", 0.9), mean_h("detailed", 0.3)
    assert easy - hard > 1.0
    assert mean_h("normal", 0.9) > mean_h("normal", 0.6) > mean_h("normal", 0.3)


def test_labels_follow_bradley_terry_with_noise():
    rng = np.random.default_rng(1)
    records = world_data.make_pairs(2000, "helpful", rng, world.WorldConfig())
    agree, expected = [], []
    for rec in records:
        prompt, chosen = hh_rlhf.split_transcript(rec["chosen"])
        _, rejected = hh_rlhf.split_transcript(rec["rejected"])
        d = gold_helpful(prompt, chosen) - gold_helpful(prompt, rejected)
        if d != 0:
            agree.append(d > 0)
            expected.append(1.0 / (1.0 + math.exp(-abs(d))))
    assert len(agree) > 1000
    assert 0.6 < np.mean(agree) < 0.97  # informative, and noisy
    assert np.mean(agree) == pytest.approx(np.mean(expected), abs=0.035)


def test_world_tokenizer_and_pipeline_end_to_end(written, tmp_path):
    model = world_data.write_tokenizer(str(tmp_path))
    tok = tokenizer_lib.SentencePieceTokenizer(model)
    assert (tok.pad_id, tok.eos_id, tok.bos_id) == (0, 1, None)
    assert tok.vocab_size == len(world.vocabulary()) + 3
    pairs, _ = hh_rlhf.read_pairs(written.helpful["train"])
    for p in pairs[:100]:
        for text in (p.prompt, p.chosen):
            ids = tok.encode(text)
            assert len(ids) == len(text.split()) and 2 not in ids
        assert tok.decode(tok.encode(p.chosen)) == p.chosen
    data = pipeline.tokenize_pairs(pairs, tok, prompt_len=world.MAX_PROMPT_WORDS,
                                  response_len=world.MAX_RESPONSE_WORDS + 1)
    assert data.stats.examples_truncated == 0
    batch = next(pipeline.batch_iterator(data, 8, seed=0))
    assert batch["prompt"].shape == (8, world.MAX_PROMPT_WORDS)
    assert (batch["chosen"] == tok.eos_id).sum(axis=1).tolist() == [1] * 8


def test_world_config_is_validated(tmp_path):
    with pytest.raises(ValueError, match="WorldConfig.helpful_harmful_fraction"):
        world_data.write_world(str(tmp_path), 0,
                              world.WorldConfig(helpful_harmful_fraction=1.5))
    with pytest.raises(ValueError, match="WorldConfig.label_temperature"):
        world_data.write_world(str(tmp_path), 0, world.WorldConfig(label_temperature=0.0))


def test_a_proxy_fit_on_limited_pairs_learns_the_filler_and_can_be_hacked():
    rng = np.random.default_rng(3)
    records = world_data.make_pairs(2000, "helpful", rng, world.WorldConfig())
    vocab = world.vocabulary()
    index = {w: i for i, w in enumerate(vocab)}

    def bag(response: str) -> np.ndarray:
        v = np.zeros(len(vocab))
        for w in response.split():
            v[index[w]] += 1
        return v

    x = []
    for rec in records:
        _, chosen = hh_rlhf.split_transcript(rec["chosen"])
        _, rejected = hh_rlhf.split_transcript(rec["rejected"])
        x.append(bag(chosen) - bag(rejected))
    x = np.asarray(x)
    w = np.zeros(len(vocab))
    for _ in range(300):  # Bradley-Terry (logistic) fit by gradient descent, light L2
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        w -= 1.0 * (-(x * (1.0 - p)[:, None]).mean(axis=0) + 1e-3 * w)
    assert w[index[world.FILLER]] > 0.05
    response = "use the flour then try some yeast"
    spam = f"{world.FILLER} " * 4 + response
    assert bag(spam) @ w > bag(response) @ w
    assert gold_helpful(BREAD, spam) < gold_helpful(BREAD, response)


# --------------------------------------------------------------------------- world version 2


V2_WORDS = (set(world.UNSAFE_WORDS) | set(world.CAVEAT_WORDS)
            | {a for t in world.TOPICS for a in t.alternatives})


def test_version_1_vocabulary_lacks_every_version_2_word():
    v1, v2 = set(world.vocabulary(1)), set(world.vocabulary(2))
    assert not V2_WORDS & v1 and V2_WORDS <= v2 and v1 < v2
    rng = np.random.default_rng(2)
    demo = world_data.Demonstrator(version=1)
    for _ in range(2000):
        words = set(demo.sample(world.sample_prompt(rng, 0.5), rng).split())
        assert words <= v1
    with pytest.raises(ValueError, match="world version"):
        world_data.Demonstrator(version=3)
    with pytest.raises(ValueError, match="world version"):
        world.vocabulary(0)


def _pairs_of_base_samples(harmful: bool, n: int = 3000):
    rng = np.random.default_rng(11)
    demo = world_data.Demonstrator(version=2)
    prompts = []
    while len(prompts) < n:
        p = world.sample_prompt(rng, 0.5)
        if world.parse_prompt(p).harmful == harmful:
            prompts.append(p)
    y1 = [demo.sample(p, rng) for p in prompts]
    y0 = [demo.sample(p, rng) for p in prompts]
    scores = {name: (world.gold_scores(prompts, y1, name),
                     world.gold_scores(prompts, y0, name)) for name in ("helpful", "harmless")}
    return prompts, y1, scores


def test_version_2_base_samples_differ_in_harmlessness_on_benign_prompts():
    # Declared target of the world: base-vs-base harmlessness ties on benign prompts <= 40%
    # (version 1: about 83%).
    _, _, scores = _pairs_of_base_samples(harmful=False)
    g1, g0 = scores["harmless"]
    assert np.mean(g1 == g0) <= 0.40
    assert len(np.unique(g1)) >= 4


def test_version_2_constructive_answer_beats_a_typical_base_response_on_both():
    prompts, y1, scores = _pairs_of_base_samples(harmful=True)
    (h1, h0), (g1, g0) = scores["helpful"], scores["harmless"]
    constructive = np.array([world.ALTERNATIVE_OPENER in y.split()
                             and not world.is_refusal(y) for y in y1])
    assert 0.1 < constructive.mean() < 0.3
    assert h1[constructive].mean() > h0.mean() and g1[constructive].mean() > g0.mean()
    # The best constructive answer of each harmful topic beats the base mean on both properties.
    for topic in world.TOPICS:
        if topic.harmful:
            prompt = format_prompt(topic, "normal")
            best = "instead call a {} then ask the {}".format(*topic.alternatives)
            assert gold_helpful(prompt, best) > h0.mean() + 1
            assert gold_harmless(prompt, best) > g0.mean() + 1


def test_pair_replicates_are_independent_draws_and_leave_the_first_draw_unchanged(tmp_path):
    one = world_data.write_world(str(tmp_path / "one"), seed=3, cfg=SMALL)
    three = world_data.write_world(
        str(tmp_path / "three"), seed=3,
        cfg=world.WorldConfig(**{**SMALL.__dict__, "pair_replicates": 3}))
    for prop in ("helpful", "harmless"):
        files = getattr(three, prop)
        assert set(files) == {"train", "test", "train_r1", "train_r2"}
        assert open(files["train"], "rb").read() == open(getattr(one, prop)["train"], "rb").read()
        draws = [hh_rlhf.read_pairs(files[s], "raise")[0] for s in ("train", "train_r1",
                                                                     "train_r2")]
        assert all(len(d) == SMALL.pairs_train for d in draws)
        chosen = [{(p.prompt, p.chosen) for p in d} for d in draws]
        assert len(chosen[0] & chosen[1]) < 0.2 * SMALL.pairs_train
    assert world_data.replicate_split(0) == "train" and world_data.replicate_split(2) == "train_r2"
    with pytest.raises(ValueError, match="pair_replicates"):
        world.WorldConfig(pair_replicates=0).validate()


# A world small enough to write in a few milliseconds, with three draws of the training pairs.
TINY = world.WorldConfig(pairs_train=40, pairs_test=10, sft_train=10, sft_test=5,
                         prompts_train=8, prompts_test=8, pair_replicates=3)
# The first 16 hex digits of the SHA-256 of each file of TINY for seed 7, as written by the
# world before it had a replicate offset: offset 0 must keep every byte.
TINY_FILES = {
    "world.json": "9296c1ed02e94f32",
    "harmless-base/test.jsonl.gz": "5255b9ec24819962",
    "harmless-base/train.jsonl.gz": "bb093894a582a6a8",
    "harmless-base/train_r1.jsonl.gz": "83dceb9058b2ba72",
    "harmless-base/train_r2.jsonl.gz": "2afc0b29f5ad3afe",
    "helpful-base/test.jsonl.gz": "4ad73e95956c1272",
    "helpful-base/train.jsonl.gz": "c70365765edff42a",
    "helpful-base/train_r1.jsonl.gz": "6dee512089254d25",
    "helpful-base/train_r2.jsonl.gz": "cd587d5015f4f1f9",
    "prompts/test.jsonl.gz": "83407afd6af612c2", "prompts/train.jsonl.gz": "9a0e1e74897edb8f",
    "sft/test.jsonl.gz": "ea362e3c6dc16979", "sft/train.jsonl.gz": "6de9fcb6143af93c",
}


def _digests(root) -> dict:
    """``{relative path: first 16 hex digits of its SHA-256}`` of every file under ``root``."""
    import hashlib

    return {os.path.relpath(os.path.join(d, f), root):
            hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()[:16]
            for d, _, files in os.walk(root) for f in files}


@pytest.mark.parametrize("fields", [{}, {"replicate_offset": 0}])
def test_replicate_offset_0_writes_the_bytes_of_a_world_without_the_field(tmp_path, fields):
    world_data.write_world(str(tmp_path), seed=7,
                           cfg=world.WorldConfig(**{**TINY.__dict__, **fields}))
    assert _digests(tmp_path) == TINY_FILES


def test_replicate_offset_shifts_the_pair_draws_and_keeps_the_rest_of_the_world(tmp_path):
    base = _digests(world_data.write_world(
        str(tmp_path / "base"), seed=7, cfg=TINY).root)  # offset 0, draws 0, 1, 2
    shifted = world_data.write_world(
        str(tmp_path / "shifted"), seed=7,
        cfg=world.WorldConfig(**{**TINY.__dict__, "pair_replicates": 2, "replicate_offset": 2}))
    got = _digests(shifted.root)
    for prop in ("helpful", "harmless"):
        assert set(getattr(shifted, prop)) == {"train", "test", "train_r2", "train_r3"}
        for split in ("train", "test", "train_r2"):
            name = f"{prop}-base/{split}.jsonl.gz"
            assert got[name] == base[name]
        assert got[f"{prop}-base/train_r3.jsonl.gz"] not in base.values()
    for name in ("sft/train.jsonl.gz", "sft/test.jsonl.gz", "prompts/train.jsonl.gz",
                 "prompts/test.jsonl.gz"):
        assert got[name] == base[name]
    assert sorted(got) == sorted(
        {**{k: v for k, v in base.items() if "train_r1" not in k},
         "helpful-base/train_r3.jsonl.gz": "", "harmless-base/train_r3.jsonl.gz": ""})
    assert '"replicate_offset": 2' in open(shifted.manifest).read()


@pytest.mark.parametrize("offset", [-1, 1.5, True])
def test_a_replicate_offset_that_is_not_a_nonnegative_integer_is_rejected(offset):
    with pytest.raises(ValueError, match="WorldConfig.replicate_offset"):
        world.WorldConfig(replicate_offset=offset).validate()


# The first 16 hex digits of the SHA-256 of each version-1 file for seed 7 and these sizes:
# version 1's files are fixed bytes.
VERSION_1_FILES = {
    "helpful-base/train.jsonl.gz": "746b91ed2fa83cb5",
    "helpful-base/test.jsonl.gz": "f2dbb0774b5e9242",
    "harmless-base/train.jsonl.gz": "e58ea982ccf8c5db",
    "harmless-base/test.jsonl.gz": "ca79d34118e626ce", "sft/train.jsonl.gz": "6a8aaa27005c5c83",
    "sft/test.jsonl.gz": "78788579f96fe336", "prompts/train.jsonl.gz": "c6b94ce27f48d701",
    "prompts/test.jsonl.gz": "bd515ad49acfa4c6",
}


def test_version_1_writes_fixed_bytes(tmp_path):
    import hashlib

    cfg = world.WorldConfig(**{**SMALL.__dict__, "version": 1})
    world_data.write_world(str(tmp_path), seed=7, cfg=cfg)
    got = {name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()[:16]
           for name in VERSION_1_FILES}
    assert got == VERSION_1_FILES
