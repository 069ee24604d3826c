"""hh-rlhf reader: triples, subsets, prompt views, bad input, skip-and-count, the half split."""

from __future__ import annotations

import gzip
import hashlib
import json
import os

import pytest

from lsc.data import hh_rlhf
from lsc.data.hh_rlhf import DataError, Pair

from data_fixtures import transcript, write_lines

TEA_PROMPT = "\n\nHuman: How do I make tea?\n\nAssistant:"
FR_PROMPT = ("\n\nHuman: Bonjour, ça va ?\n\nAssistant: Oui, très bien 😊.\n\nHuman: Explique-moi "
             "le théorème de Pythagore.\n\nAssistant:")
JA_PROMPT = "\n\nHuman: 日本語で答えて。\n\nAssistant: はい。\n\nHuman: 猫は？\n\nAssistant:"

GOOD = [
    {"chosen": transcript("How do I make tea?", "Boil water, add leaves."),
     "rejected": transcript("How do I make tea?", "No idea.")},
    {"chosen": transcript("Bonjour, ça va ?", "Oui, très bien 😊.",
                          "Explique-moi le théorème de Pythagore.",
                          "a² + b² = c² pour un triangle rectangle.\n"),
     "rejected": transcript("Bonjour, ça va ?", "Oui, très bien 😊.",
                            "Explique-moi le théorème de Pythagore.", "Je ne sais pas.")},
    {"chosen": transcript("日本語で答えて。", "はい。", "猫は？", "かわいい動物です。"),
     "rejected": transcript("日本語で答えて。", "はい。", "猫は？", "  知りません  ")},
]
EXPECTED = [
    (TEA_PROMPT, "Boil water, add leaves.", "No idea."),
    (FR_PROMPT, "a² + b² = c² pour un triangle rectangle.", "Je ne sais pas."),
    (JA_PROMPT, "かわいい動物です。", "知りません"),
]


def triples(pairs):
    return [(p.prompt, p.chosen, p.rejected) for p in pairs]


@pytest.mark.parametrize("name", ["train.jsonl", "train.jsonl.gz"])
def test_reads_published_format_into_triples(tmp_path, name):
    path = write_lines(str(tmp_path / "helpful-base" / name), GOOD)
    pairs, stats = hh_rlhf.read_pairs(path)
    assert triples(pairs) == EXPECTED
    assert pairs[1].source == f"{path}:2"
    assert stats.read == 3 and stats.num_skipped == 0


def test_blank_lines_are_ignored_and_line_numbers_count_them(tmp_path):
    path = write_lines(str(tmp_path / "a.jsonl"), [GOOD[0], "", "   ", GOOD[1]])
    pairs, _ = hh_rlhf.read_pairs(path)
    assert [p.source for p in pairs] == [f"{path}:1", f"{path}:4"]


def test_split_transcript_and_turns_roundtrip():
    prompt, response = hh_rlhf.split_transcript(GOOD[1]["chosen"])
    assert prompt == FR_PROMPT
    assert response == "a² + b² = c² pour un triangle rectangle."
    turns = hh_rlhf.split_turns(FR_PROMPT)
    assert turns == [("Human", "Bonjour, ça va ?"), ("Assistant", "Oui, très bien 😊."),
                     ("Human", "Explique-moi le théorème de Pythagore."), ("Assistant", "")]
    assert hh_rlhf.format_turns(turns) == FR_PROMPT
    assert hh_rlhf.turn_starts(FR_PROMPT) == [0, FR_PROMPT.index("\n\nHuman: Explique")]


# --------------------------------------------------------------------------- bad input

BAD_CASES = {
    "unparseable": ('{"chosen": "\\n\\nHuman: hi', "unparseable JSON"),
    "not_an_object": ('["a", "b"]', "expected an object"),
    "missing_field": ({"chosen": transcript("q", "a")}, "missing field 'rejected'"),
    "bad_field_type": ({"chosen": transcript("q", "a"), "rejected": 7}, "'rejected' is a int"),
    "no_assistant_turn": ({"chosen": "\n\nHuman: only a question",
                           "rejected": transcript("q", "a")},
                          "chosen: transcript has no '\\n\\nAssistant:' turn"),
    "no_human_turn": ({"chosen": "\n\nAssistant: hello", "rejected": "\n\nAssistant: bye"},
                      "no '\\n\\nHuman:' turn"),
    "ends_with_human_turn": ({"chosen": transcript("q", "a", "and then?"),
                              "rejected": transcript("q", "b")}, "ends with a Human turn"),
    "prompt_mismatch": ({"chosen": transcript("How are you?", "fine"),
                         "rejected": transcript("How are they?", "fine")},
                        "prompts differ (first difference at character 17)"),
    "empty_response": ({"chosen": transcript("q", "a"), "rejected": transcript("q", "  \n")},
                       "rejected: empty response"),
    "invalid_utf8": (b'{"chosen": "\xff\xfe", "rejected": "x"}', "invalid UTF-8"),
}


@pytest.mark.parametrize("kind", sorted(BAD_CASES))
@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_bad_input_names_file_and_line(tmp_path, kind, suffix):
    line, message = BAD_CASES[kind]
    path = write_lines(str(tmp_path / f"train{suffix}"), [GOOD[0], line, GOOD[1]])
    with pytest.raises(DataError) as err:
        hh_rlhf.read_pairs(path)
    assert str(err.value).startswith(f"{path}:2: ")
    assert message in str(err.value)
    assert (err.value.path, err.value.line, err.value.kind) == (path, 2, kind)


def test_skip_mode_counts_every_bad_record_and_writes_stats(tmp_path):
    lines = [GOOD[0]] + [case[0] for case in BAD_CASES.values()] + [GOOD[2]]
    path = write_lines(str(tmp_path / "train.jsonl"), lines)
    pairs, stats = hh_rlhf.read_pairs(path, on_error="skip")
    assert triples(pairs) == [EXPECTED[0], EXPECTED[2]]
    assert stats.read == 2
    assert stats.skipped == {kind: 1 for kind in BAD_CASES}
    out = hh_rlhf.write_read_stats(stats, str(tmp_path / "workdir"))
    saved = json.loads(open(out, encoding="utf-8").read())
    assert saved["read"] == 2 and saved["num_skipped"] == len(BAD_CASES)
    assert saved["skipped"] == {kind: 1 for kind in sorted(BAD_CASES)}
    assert saved["files"] == [path]


def test_skip_stats_accumulate_over_files(tmp_path):
    a = write_lines(str(tmp_path / "a.jsonl"), [GOOD[0], BAD_CASES["unparseable"][0]])
    b = write_lines(str(tmp_path / "b.jsonl"), [BAD_CASES["unparseable"][0], GOOD[1]])
    pairs, stats = hh_rlhf.read_pairs([a, b], on_error="skip")
    assert len(pairs) == 2 and stats.skipped == {"unparseable": 2} and stats.files == [a, b]


def test_finish_read_writes_counts_then_stops_past_the_skip_fraction(tmp_path):
    stats = hh_rlhf.ReadStats(read=198, skipped={"unparseable": 1, "empty_response": 1})
    workdir = str(tmp_path / "ok")
    hh_rlhf.finish_read(stats, workdir, 0.01)  # 2 / 200 = 0.01: at the limit, not past it
    assert json.load(open(os.path.join(workdir, "data_read_stats.json")))["num_skipped"] == 2
    stats.add_skip("unparseable")  # 3 / 201 > 0.01
    workdir = str(tmp_path / "stop")
    with pytest.raises(ValueError) as err:
        hh_rlhf.finish_read(stats, workdir, 0.01)
    message = str(err.value)
    assert "3 of 201 records (1.49%)" in message
    assert "config.data.max_skip_fraction=0.01" in message
    assert "{'empty_response': 1, 'unparseable': 2}" in message
    # The counts are on disk before the job stops, and the message says where.
    path = os.path.join(workdir, "data_read_stats.json")
    assert path in message and json.load(open(path))["skipped"] == {"empty_response": 1,
                                                                     "unparseable": 2}
    hh_rlhf.finish_read(stats, str(tmp_path / "loose"), 0.5)
    assert hh_rlhf.skip_fraction(hh_rlhf.ReadStats()) == 0.0
    with pytest.raises(ValueError, match="max_skip_fraction must be in"):
        hh_rlhf.finish_read(stats, str(tmp_path / "bad"), 1.5)


def test_alignment_prompts_from_hh_rlhf_stop_on_too_many_bad_records(tmp_path):
    """The paper configs read hh-rlhf with skip-and-count: a few odd records are skipped, too
    many stop the job with the counts."""
    import ml_collections

    from lsc.align import common as align_common

    root = str(tmp_path / "hh")
    for sub in ("helpful-base", "harmless-base"):
        write_lines(os.path.join(root, sub, "test.jsonl"),
                    [GOOD[0], GOOD[1], BAD_CASES["unparseable"][0]])
    config = ml_collections.ConfigDict({"data": {
        "source": "hh_rlhf", "path": root, "on_error": "skip", "max_skip_fraction": 0.01,
        "tokenizer": "", "prompt_len": 16}})
    with pytest.raises(ValueError,
                       match=r"2 of 6 records .*config\.data\.max_skip_fraction=0\.01"):
        align_common.tokenizer_and_prompts(config, str(tmp_path / "run"), "test")
    saved = json.load(open(tmp_path / "run" / "data_read_stats.json"))
    assert saved["read"] == 4 and saved["skipped"] == {"unparseable": 2}


def test_corrupt_gzip_names_file(tmp_path):
    path = str(tmp_path / "train.jsonl.gz")
    data = gzip.compress(("\n".join(json.dumps(r) for r in GOOD * 50)).encode())
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(DataError, match=f"^{path}:[0-9]+: cannot read file"):
        hh_rlhf.read_pairs(path, on_error="skip")


def test_bad_on_error_value():
    with pytest.raises(ValueError, match="on_error"):
        hh_rlhf.read_pairs([], on_error="ignore")


# --------------------------------------------------------------------------- prompts, demos


def test_prompts_view_of_pair_prompt_and_red_team_files(tmp_path):
    pairs_file = write_lines(str(tmp_path / "p.jsonl"), [GOOD[0], GOOD[1], GOOD[0]])
    prompt_file = write_lines(str(tmp_path / "q.jsonl.gz"), [{"prompt": JA_PROMPT}])
    red_team = tmp_path / "red-team-attempts" / "red_team_attempts.jsonl"
    red_team.parent.mkdir()
    red_team.write_text(json.dumps([
        {"transcript": transcript("How do I pick a lock?", "I can't help.", "Please?", "No."),
         "rating": 0},
        {"transcript": transcript("Dis-moi un secret ✨", "Non."), "rating": 1},
    ], ensure_ascii=False, indent=1), encoding="utf-8")
    prompts, stats = hh_rlhf.read_prompts([pairs_file, prompt_file, str(red_team)])
    assert prompts == [TEA_PROMPT, FR_PROMPT, JA_PROMPT,
                       "\n\nHuman: How do I pick a lock?\n\nAssistant:",
                       "\n\nHuman: Dis-moi un secret ✨\n\nAssistant:"]
    assert stats.read == 6
    all_prompts, _ = hh_rlhf.read_prompts(pairs_file, dedup=False)
    assert all_prompts == [TEA_PROMPT, FR_PROMPT, TEA_PROMPT]


def test_bad_prompt_record_names_file_and_line(tmp_path):
    path = write_lines(str(tmp_path / "q.jsonl"), [{"prompt": TEA_PROMPT},
                                                   {"prompt": "\n\nHuman: no assistant"}])
    with pytest.raises(DataError, match=f"^{path}:2: prompt must"):
        hh_rlhf.read_prompts(path)


def test_bad_json_array_element_names_file_and_line(tmp_path):
    path = tmp_path / "red.json"
    path.write_text('[\n {"transcript": "\\n\\nHuman: a\\n\\nAssistant: b"},\n {"transcript": }\n]')
    with pytest.raises(DataError, match=f"^{path}:3: unparseable JSON"):
        hh_rlhf.read_prompts(str(path))


def test_demonstrations_read_chosen_side(tmp_path):
    path = write_lines(str(tmp_path / "sft.jsonl"), [{"chosen": GOOD[1]["chosen"]}, GOOD[2]])
    demos, _ = hh_rlhf.read_demonstrations(path)
    assert [(d.prompt, d.response) for d in demos] == [EXPECTED[1][:2], EXPECTED[2][:2]]
    bad = write_lines(str(tmp_path / "bad.jsonl"), [{"rejected": "x"}])
    with pytest.raises(DataError, match=f"^{bad}:1: missing field 'chosen'"):
        hh_rlhf.read_demonstrations(bad)


# --------------------------------------------------------------------------- subsets, tables


def test_subset_files_by_directory_name(tmp_path):
    root = str(tmp_path)
    for sub in ("helpful-base", "helpful-online", "helpful-rejection-sampled", "harmless-base"):
        for split in ("train", "test"):
            write_lines(os.path.join(root, sub, f"{split}.jsonl.gz"), GOOD[:1])
    files = hh_rlhf.subset_files(root, "helpful", "train")
    assert files == [os.path.join(root, s, "train.jsonl.gz")
                     for s in ("helpful-base", "helpful-online", "helpful-rejection-sampled")]
    assert hh_rlhf.subset_files(root, ["harmless", "helpful-base"], "test") == [
        os.path.join(root, "harmless-base", "test.jsonl.gz"),
        os.path.join(root, "helpful-base", "test.jsonl.gz")]
    with pytest.raises(FileNotFoundError, match="red-team-attempts: no such subset"):
        hh_rlhf.subset_files(root, "red-team-attempts")
    only_base = str(tmp_path / "only-base")
    write_lines(os.path.join(only_base, "helpful-base", "train.jsonl"), GOOD[:1])
    assert hh_rlhf.subset_files(only_base, "helpful") == [
        os.path.join(only_base, "helpful-base", "train.jsonl")]
    with pytest.raises(FileNotFoundError, match="no subset directory of group 'harmless'"):
        hh_rlhf.subset_files(only_base, "harmless")
    with pytest.raises(FileNotFoundError, match="helpful-online: no such subset directory"):
        hh_rlhf.subset_files(only_base, "helpful-online")
    os.makedirs(os.path.join(root, "empty-subset"))
    with pytest.raises(FileNotFoundError, match="empty-subset: no 'train' data file"):
        hh_rlhf.subset_files(root, "empty-subset")


def test_parquet_and_arrow_exports(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    table = pa.table({"chosen": [g["chosen"] for g in GOOD],
                      "rejected": [g["rejected"] for g in GOOD]})
    pq_dir = tmp_path / "helpful-base"
    pq_dir.mkdir()
    pq_path = str(pq_dir / "train-00000-of-00001.parquet")
    pq.write_table(table, pq_path)
    assert hh_rlhf.subset_files(str(tmp_path), "helpful-base") == [pq_path]
    pairs, _ = hh_rlhf.read_pairs(pq_path)
    assert triples(pairs) == EXPECTED
    arrow_path = str(tmp_path / "data-00000-of-00001.arrow")
    with open(arrow_path, "wb") as f, ipc.new_stream(f, table.schema) as writer:
        writer.write_table(table)
    pairs, _ = hh_rlhf.read_pairs(arrow_path)
    assert triples(pairs) == EXPECTED
    bad = pa.table({"chosen": [GOOD[0]["chosen"]], "rejected": [GOOD[1]["rejected"]]})
    bad_path = str(tmp_path / "bad.parquet")
    pq.write_table(bad, bad_path)
    with pytest.raises(DataError, match=f"^{bad_path}:1: chosen and rejected prompts differ"):
        hh_rlhf.read_pairs(bad_path)


# --------------------------------------------------------------------------- the half split


def test_prompt_hash_is_sha256_and_stable():
    prompt = "\n\nHuman: hello\n\nAssistant:"
    expected = int(hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16], 16)
    assert hh_rlhf.prompt_hash(prompt) == expected == 637534780808576715
    assert hh_rlhf.prompt_id(prompt) == expected >> 33 == 74218816


def test_half_split_is_stable_golden():
    bits = "".join("1" if hh_rlhf.in_first_half(f"\n\nHuman: question {i}\n\nAssistant:") else "0"
                   for i in range(32))
    assert bits == "01001111001110000111110101000100"


def test_half_split_disjoint_by_prompt_and_balanced():
    prompts = [f"\n\nHuman: q{i % 700}\n\nAssistant:" for i in range(2100)]
    pairs = [Pair(p, f"c{i}", f"r{i}") for i, p in enumerate(prompts)]
    first, second = hh_rlhf.split_in_half(pairs)
    assert len(first) + len(second) == len(pairs)
    assert not {p.prompt for p in first} & {p.prompt for p in second}
    assert 0.45 < len({p.prompt for p in first}) / 700 < 0.55
    again = hh_rlhf.split_in_half(list(reversed(pairs)))
    assert {p.chosen for p in again[0]} == {p.chosen for p in first}
    strings_first, _ = hh_rlhf.split_in_half(prompts, key=lambda s: s)
    assert strings_first == [p.prompt for p in first]
    with pytest.raises(ValueError, match="fraction"):
        hh_rlhf.split_in_half(prompts, fraction=1.5, key=lambda s: s)


def test_missing_file_names_file(tmp_path):
    path = str(tmp_path / "absent.jsonl")
    with pytest.raises(DataError, match=f"^{path}:1: cannot read file"):
        hh_rlhf.read_pairs(path)
