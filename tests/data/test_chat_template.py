"""Chat templates: loading from a checkpoint directory, rendering as ``transformers`` does,
hh-rlhf transcripts as messages, and the prompt tables of the alignment jobs."""

from __future__ import annotations

import json
import os

import ml_collections
import numpy as np
import pytest

from lsc.data import chat_template as ct

# Real-world-like templates (the jinja sources of public checkpoints, lightly shortened).
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}"
    "{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + "
    "message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{'<start_of_turn>model\\n'}}{% endif %}")
CHATML = """{%- if tools %}
    {{- '<|im_start|>system\\nYou may call tools.<|im_end|>\\n' }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""
# Whitespace control by trim_blocks / lstrip_blocks only (no '-'), namespace, tojson, loop
# controls, tools/documents passed as None, a {% generation %} block.
BLOCKS = """{% set ns = namespace(n=0) %}
{% if tools is none and documents is none %}
  [no tools]
{% endif %}
{% for m in messages %}
  {% if m.role == 'assistant' %}
    {% set ns.n = ns.n + 1 %}
    {% generation %}<a>{{ m.content }}</a>{% endgeneration %}
  {% else %}
    [{{ m.role }}] {{ m.content | tojson }}
  {% endif %}
  {% if loop.index > 50 %}{% break %}{% endif %}
{% endfor %}
{% if add_generation_prompt %}[assistant #{{ ns.n + 1 }}]{{ eos_token }}{% endif %}
"""

SPECIALS = {
    "llama3": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "pad_token": "<pad>"},
    "gemma": {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"},
    "chatml": {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    "blocks": {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"},
}
TEMPLATES = {"llama3": LLAMA3, "gemma": GEMMA, "chatml": CHATML, "blocks": BLOCKS}
EXTRA_TOKENS = ("<|start_header_id|>", "<|end_header_id|>", "<start_of_turn>", "<end_of_turn>",
                "<|im_start|>")

PROMPTS = [
    "\n\nHuman: How do I make tea?\n\nAssistant:",
    ("\n\nHuman: Bonjour, ça va ?\n\nAssistant: Oui, très bien 😊.\n\nHuman: Explique-moi "
     "le théorème de Pythagore <b>\"vite\"</b>.\n\nAssistant:"),
    "\n\nHuman: 日本語で答えて。\n\nAssistant: はい。\n\nHuman: 猫は？\n\nAssistant:",
]


def write_checkpoint(directory, kind: str, *, as_list: bool = False, jinja_file: bool = False,
                     tokenizer: bool = True) -> str:
    """A tokenizer directory: tokenizer_config.json with the template (a string, the list form,
    or in chat_template.jinja) and a byte-level tokenizer.json that encodes any text."""
    os.makedirs(directory, exist_ok=True)
    specials = SPECIALS[kind]
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 4096,
              **{k: v for k, v in specials.items()}}
    template = TEMPLATES[kind]
    if jinja_file:
        with open(os.path.join(directory, "chat_template.jinja"), "w", encoding="utf-8") as f:
            f.write(template)
        config["chat_template"] = "not used: chat_template.jinja comes first"
    elif as_list:
        config["chat_template"] = [{"name": "tool_use", "template": "{{ 'tools' }}"},
                                   {"name": "default", "template": template}]
    else:
        config["chat_template"] = template
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    if tokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
        tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens([t for t in specials.values() if t] + list(EXTRA_TOKENS))
        tok.save(os.path.join(directory, "tokenizer.json"))
    return str(directory)


def hf_tokenizer(directory):
    transformers = pytest.importorskip("transformers")
    return transformers.PreTrainedTokenizerFast.from_pretrained(directory)


# --------------------------------------------------------------------------- transcripts


def test_transcript_to_messages():
    assert ct.transcript_to_messages(PROMPTS[0]) == [
        {"role": "user", "content": "How do I make tea?"}]
    assert ct.transcript_to_messages(PROMPTS[2]) == [
        {"role": "user", "content": "日本語で答えて。"},
        {"role": "assistant", "content": "はい。"},
        {"role": "user", "content": "猫は？"}]


@pytest.mark.parametrize("prompt, match", [
    ("\n\nHuman: Hi\n\nAssistant: Hello", "must end with an open"),
    ("\n\nHuman: Hi", "must end with an open"),
    ("\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Bye", "must end with an open"),
    ("", "must end with an open"),
    ("Preamble\n\nHuman: Hi\n\nAssistant:", "must start with a"),
])
def test_transcript_errors(prompt, match):
    with pytest.raises(ct.ChatTemplateError, match=match):
        ct.transcript_to_messages(prompt)


# --------------------------------------------------------------------------- loading


def test_load_string_list_and_jinja_file(tmp_path):
    for i, (kw, file) in enumerate([({}, "tokenizer_config.json"),
                                    ({"as_list": True}, "tokenizer_config.json"),
                                    ({"jinja_file": True}, "chat_template.jinja")]):
        d = write_checkpoint(tmp_path / str(i), "chatml", tokenizer=False, **kw)
        template = ct.load_chat_template(d)
        assert template.source == CHATML and template.path == os.path.join(d, file)
        assert template.special_tokens == {"eos_token": "<|im_end|>",
                                           "pad_token": "<|endoftext|>"}
    # A file inside the directory stands for the directory.
    assert ct.load_chat_template(os.path.join(d, "tokenizer_config.json")).source == CHATML


def test_special_tokens_from_added_token_dicts_and_special_tokens_map(tmp_path):
    with open(tmp_path / "tokenizer_config.json", "w") as f:
        json.dump({"chat_template": "{{ bos_token }}|{{ eos_token }}|{{ unk_token }}",
                   "bos_token": {"content": "<s>", "lstrip": False, "__type": "AddedToken"},
                   "eos_token": "</s>"}, f)
    with open(tmp_path / "special_tokens_map.json", "w") as f:
        json.dump({"eos_token": "<ignored>", "unk_token": {"content": "<unk>"}}, f)
    template = ct.load_chat_template(str(tmp_path))
    assert template.render([{"role": "user", "content": "x"}]) == "<s>|</s>|<unk>"


def test_missing_template_names_directory_and_files(tmp_path):
    with pytest.raises(ct.ChatTemplateError, match=(
            f"{tmp_path}: no chat template .*chat_template.jinja.*tokenizer_config.json")):
        ct.load_chat_template(str(tmp_path))
    with open(tmp_path / "tokenizer_config.json", "w") as f:
        json.dump({"eos_token": "</s>"}, f)
    with pytest.raises(ct.ChatTemplateError, match="no chat template"):
        ct.load_chat_template(str(tmp_path))
    with pytest.raises(ct.ChatTemplateError, match="not a directory"):
        ct.load_chat_template(str(tmp_path / "absent"))
    with open(tmp_path / "tokenizer_config.json", "w") as f:
        json.dump({"chat_template": [{"name": "tool_use", "template": "x"}]}, f)
    with pytest.raises(ct.ChatTemplateError, match=r"\['tool_use'\] but none named 'default'"):
        ct.load_chat_template(str(tmp_path))


def test_template_errors(tmp_path):
    gemma = ct.load_chat_template(write_checkpoint(tmp_path / "g", "gemma", tokenizer=False))
    with pytest.raises(ct.ChatTemplateError, match="System role not supported"):
        gemma.render([{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Hi"}])
    with pytest.raises(ct.ChatTemplateError, match="roles must alternate"):
        ct.render_prompts(gemma, [PROMPTS[0], "\n\nHuman: a\n\nHuman: b\n\nAssistant:"])
    with pytest.raises(ct.ChatTemplateError, match="^prompt 1: .*roles must alternate"):
        ct.render_prompts(gemma, [PROMPTS[0], "\n\nHuman: a\n\nHuman: b\n\nAssistant:"])
    with pytest.raises(ct.ChatTemplateError, match="empty conversation"):
        gemma.render([])
    with pytest.raises(ct.ChatTemplateError, match="underscore"):
        ct.ChatTemplate("{% set ns = namespace(_x=1) %}").render([{"role": "user",
                                                                   "content": "x"}])


def test_render_prompt_strips_only_a_leading_bos(tmp_path):
    llama = ct.load_chat_template(write_checkpoint(tmp_path / "l", "llama3", tokenizer=False))
    full = ct.render_prompt(llama, PROMPTS[0])
    assert full == ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHow do I make "
                    "tea?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    assert ct.render_prompt(llama, PROMPTS[0], strip_bos=True) == full[len("<|begin_of_text|>"):]
    chatml = ct.load_chat_template(write_checkpoint(tmp_path / "c", "chatml", tokenizer=False))
    assert (ct.render_prompt(chatml, PROMPTS[0], strip_bos=True)
            == ct.render_prompt(chatml, PROMPTS[0]))


# --------------------------------------------------------------------------- transformers


def _conversations():
    convs = [ct.transcript_to_messages(p) for p in PROMPTS]
    convs.append([{"role": "user", "content": "  padded  "},
                  {"role": "assistant", "content": "ok", "extra": None}])
    return convs


@pytest.mark.hf
@pytest.mark.parametrize("kind", sorted(TEMPLATES))
@pytest.mark.parametrize("form", ["string", "list", "jinja"])
def test_render_matches_transformers(tmp_path, kind, form):
    d = write_checkpoint(tmp_path / "tok", kind, as_list=form == "list",
                         jinja_file=form == "jinja")
    ref = hf_tokenizer(d)
    template = ct.load_chat_template(d)
    for messages in _conversations():
        for gen in (True, False):
            expected = ref.apply_chat_template(messages, tokenize=False,
                                               add_generation_prompt=gen)
            assert template.render(messages, add_generation_prompt=gen) == expected
    if kind == "chatml":  # the default of the list, not 'tool_use'
        assert "You are Qwen" in template.render(_conversations()[0])


@pytest.mark.hf
def test_system_role_error_matches_transformers(tmp_path):
    import jinja2.exceptions

    d = write_checkpoint(tmp_path / "tok", "gemma")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    with pytest.raises(jinja2.exceptions.TemplateError, match="System role not supported"):
        hf_tokenizer(d).apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    with pytest.raises(ct.ChatTemplateError, match="System role not supported"):
        ct.load_chat_template(d).render(messages)


# --------------------------------------------------------------------------- prompt tables


def _hh_config(root, tok_dir, chat_template_dir="", prompt_len=256):
    import ml_collections

    return ml_collections.ConfigDict({"data": {
        "source": "hh_rlhf", "path": root, "on_error": "raise", "max_skip_fraction": 0.01,
        "tokenizer": tok_dir, "chat_template": chat_template_dir, "prompt_len": prompt_len}})


def _hh_root(tmp_path):
    root = str(tmp_path / "hh")
    for sub in ("helpful-base", "harmless-base"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
        with open(os.path.join(root, sub, "test.jsonl"), "w", encoding="utf-8") as f:
            for p in PROMPTS:
                f.write(json.dumps({"chosen": p + " Sure.", "rejected": p + " No."}) + "\n")
    return root


@pytest.mark.parametrize("kind", ["llama3", "gemma", "blocks"])
def test_prompt_table_differs_only_by_the_rendering(tmp_path, kind):
    from lsc.align import common as align_common
    from lsc.data import pipeline

    tok_dir = write_checkpoint(tmp_path / "tok", kind)
    root = _hh_root(tmp_path)
    tok, plain, texts = align_common.tokenizer_and_prompts(
        _hh_config(root, tok_dir), str(tmp_path / "a"), "test")
    tok2, chat, texts2 = align_common.tokenizer_and_prompts(
        _hh_config(root, tok_dir, tok_dir), str(tmp_path / "b"), "test")
    assert texts == texts2 and sorted(texts) == sorted(PROMPTS)
    # Without the field: today's table. With it: the table of the rendered prompts.
    assert np.array_equal(plain.arrays["prompt"],
                          pipeline.tokenize_prompts(texts, tok, 256).arrays["prompt"])
    template = ct.load_chat_template(tok_dir)
    rendered = ct.render_prompts(template, texts, strip_bos=tok.bos_id is not None)
    expected = pipeline.tokenize_prompts(rendered, tok2, 256)
    for key in ("prompt", "prompt_id"):
        assert np.array_equal(chat.arrays[key], expected.arrays[key])
    assert not np.array_equal(chat.arrays["prompt"], plain.arrays["prompt"])
    # One BOS first when the tokenizer adds one.
    rows = [r[r != tok.pad_id].tolist() for r in chat.arrays["prompt"]]
    if tok.bos_id is not None:
        assert all(r[0] == tok.bos_id and tok.bos_id not in r[1:] for r in rows)


@pytest.mark.hf
@pytest.mark.parametrize("kind", ["llama3", "gemma"])
def test_prompt_table_tokens_match_transformers(tmp_path, kind):
    """The rows are the ids of ``apply_chat_template(..., tokenize=True)``."""
    from lsc.align import common as align_common

    tok_dir = write_checkpoint(tmp_path / "tok", kind)
    ref = hf_tokenizer(tok_dir)
    tok, table, texts = align_common.tokenizer_and_prompts(
        _hh_config(_hh_root(tmp_path), tok_dir, tok_dir), str(tmp_path / "run"), "test")
    for row, text in zip(table.arrays["prompt"], texts):
        expected = ref.apply_chat_template(ct.transcript_to_messages(text), tokenize=True,
                                           add_generation_prompt=True)
        if not isinstance(expected, list):
            expected = expected["input_ids"]
        assert row[row != tok.pad_id].tolist() == list(expected)


def test_bad_chat_template_names_the_config_field(tmp_path):
    from lsc import config as config_lib
    from lsc.align import common as align_common

    tok_dir = write_checkpoint(tmp_path / "tok", "llama3")
    root = _hh_root(tmp_path)
    empty = str(tmp_path / "empty")
    os.makedirs(empty)
    with pytest.raises(ValueError, match=r"config\.data\.chat_template=.*no chat template"):
        align_common.tokenizer_and_prompts(_hh_config(root, tok_dir, empty), str(tmp_path / "r"),
                                           "test")
    rules = {"data.chat_template": config_lib.RULES["data.chat_template"]}
    config_lib.validate(_hh_config(root, tok_dir), rules)
    config_lib.validate(_hh_config(root, tok_dir, tok_dir), rules)
    with pytest.raises(config_lib.ConfigError, match=r"config\.data\.chat_template: .*no chat"):
        config_lib.validate(_hh_config(root, tok_dir, empty), rules)
    with pytest.raises(config_lib.ConfigError, match=r"config\.data\.chat_template: .*not exist"):
        config_lib.validate(_hh_config(root, tok_dir, str(tmp_path / "absent")), rules)


def test_auto_uses_the_policy_checkpoints_own_template(tmp_path):
    """``data.chat_template='auto'`` (the default) renders through ``<policy.workdir>/tokenizer``
    when a converted checkpoint put a template there, and leaves transcripts otherwise."""
    import shutil

    from lsc.align import common as align_common
    from lsc.data import pipeline

    tok_dir = write_checkpoint(tmp_path / "tok", "llama3")
    root = _hh_root(tmp_path)
    chat_policy = tmp_path / "chat_policy"
    shutil.copytree(tok_dir, chat_policy / "tokenizer")
    plain_policy = tmp_path / "sft_run"  # a train_sft run: no tokenizer/ directory
    plain_policy.mkdir()
    base_policy = tmp_path / "base_policy"  # a converted base model: tokenizer, no template
    (base_policy / "tokenizer").mkdir(parents=True)
    shutil.copyfile(os.path.join(tok_dir, "tokenizer.json"),
                    base_policy / "tokenizer" / "tokenizer.json")

    def config(value, policy):
        c = _hh_config(root, tok_dir, value)
        c.policy = ml_collections.ConfigDict({"workdir": str(policy) if policy else ""})
        return c

    assert align_common.chat_template_dir(config("auto", chat_policy)) == str(
        chat_policy / "tokenizer")
    for value, policy in [("auto", plain_policy), ("auto", base_policy), ("auto", None),
                          ("none", chat_policy), ("", chat_policy), ("NONE", chat_policy)]:
        assert align_common.chat_template_dir(config(value, policy)) == "", (value, policy)
    assert align_common.chat_template_dir(config(tok_dir, plain_policy)) == tok_dir
    absent = _hh_config(root, tok_dir)
    del absent.data["chat_template"]
    absent.policy = ml_collections.ConfigDict({"workdir": str(chat_policy)})
    assert align_common.chat_template_dir(absent) == str(chat_policy / "tokenizer")

    tok, auto_table, texts = align_common.tokenizer_and_prompts(
        config("auto", chat_policy), str(tmp_path / "a"), "test")
    _, none_table, _ = align_common.tokenizer_and_prompts(
        config("none", chat_policy), str(tmp_path / "b"), "test")
    rendered = ct.render_prompts(ct.load_chat_template(tok_dir), texts,
                                 strip_bos=tok.bos_id is not None)
    assert np.array_equal(auto_table.arrays["prompt"],
                          pipeline.tokenize_prompts(rendered, tok, 256).arrays["prompt"])
    assert np.array_equal(none_table.arrays["prompt"],
                          pipeline.tokenize_prompts(texts, tok, 256).arrays["prompt"])

    from lsc import config as config_lib
    rules = {"data.chat_template": config_lib.RULES["data.chat_template"]}
    for value in ("auto", "none", ""):
        config_lib.validate(config(value, chat_policy), rules)
