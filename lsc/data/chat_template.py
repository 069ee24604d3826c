"""Chat templates of Hugging Face checkpoints, applied to hh-rlhf prompts.

A checkpoint directory (e.g. ``<workdir>/tokenizer`` of :mod:`lsc.models.hf_convert`) keeps its
chat template in ``chat_template.jinja`` or under ``chat_template`` in ``tokenizer_config.json``
(a string, or a list of ``{"name", "template"}`` of which the one named ``default`` is used).
``chat_template.jinja`` wins when both are present, as in ``transformers``.

:meth:`ChatTemplate.render` renders a list of ``{"role", "content"}`` messages as
``transformers``' ``apply_chat_template(messages, tokenize=False, add_generation_prompt=True)``
does: a sandboxed jinja2 environment with ``trim_blocks`` and ``lstrip_blocks``, the
``raise_exception`` and ``strftime_now`` helpers, a ``tojson`` filter that does not escape HTML,
the loop-control extension, ``tools`` and ``documents`` set to None and the checkpoint's named
special tokens (``bos_token``, ``eos_token``, ...) from ``tokenizer_config.json`` (missing ones
filled from ``special_tokens_map.json``).

:func:`transcript_to_messages` turns an hh-rlhf prompt (``\\n\\nHuman: ...\\n\\nAssistant:``,
ending with an open Assistant turn) into messages: Human turns become ``user`` messages,
Assistant turns ``assistant`` messages, the open turn becomes the generation prompt.

The alignment jobs render their prompts through the policy checkpoint's own template when it has
one (``config.data.chat_template='auto'``, the default), through another directory's when the
field names one, and not at all with ``'none'`` (:func:`lsc.align.common.chat_template_dir`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache

from lsc.data import hh_rlhf

TEMPLATE_FILE = "chat_template.jinja"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
# The named special tokens transformers passes to a template (``special_tokens_map``).
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
                      "cls_token", "mask_token")
ROLES = {"Human": "user", "Assistant": "assistant"}


class ChatTemplateError(ValueError):
    """No usable chat template, a prompt that cannot become messages, or a template that
    refused the messages (its ``raise_exception``)."""


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ChatTemplateError(f"{path}: cannot read: {e}") from e
    return data if isinstance(data, dict) else {}


def _token_text(value: object) -> str | None:
    """A special token's text: a string, or the ``content`` of an ``AddedToken`` dict."""
    if isinstance(value, Mapping):
        value = value.get("content")
    return value if isinstance(value, str) else None


@lru_cache(maxsize=8)
def _compile(source: str):
    """``source`` compiled in the environment transformers renders chat templates in."""
    import jinja2
    import jinja2.exceptions
    import jinja2.ext
    import jinja2.nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(jinja2.ext.Extension):
        """``{% generation %}...{% endgeneration %}`` renders its body (transformers uses the
        block to mark assistant tokens; rendering is unchanged)."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(
                lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    class TemplateDict:
        def __call__(self, *args, **kwargs):
            return dict(*args, **kwargs)

        def fromkeys(self, *args, **kwargs):
            return dict.fromkeys(*args, **kwargs)

    class TemplateNamespace(jinja2.utils.Namespace):
        def __init__(*args, **kwargs):  # noqa: N805 -- jinja2.utils.Namespace's signature
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                TemplateNamespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            TemplateNamespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    f"chat templates cannot set underscore-prefixed names on a namespace: {name!r}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["dict"] = TemplateDict()
    env.globals["namespace"] = TemplateNamespace
    return env.from_string(source)


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
    """A jinja2 chat template, its special tokens and where it was read (``path``)."""

    source: str
    special_tokens: Mapping[str, str] = dataclasses.field(default_factory=dict)
    path: str = ""

    @property
    def bos_token(self) -> str | None:
        return self.special_tokens.get("bos_token")

    def render(self, messages: Sequence[Mapping[str, object]], *,
               add_generation_prompt: bool = True, **kwargs) -> str:
        """The text of ``messages`` (``[{"role", "content"}, ...]``) under the template.

        ``kwargs`` reach the template as variables and override the special tokens.

        Raises:
          ChatTemplateError: the template refused the messages (its ``raise_exception``) or
            failed, with its message and the template's path.
        """
        import jinja2.exceptions

        if not messages:
            raise ChatTemplateError("cannot render an empty conversation")
        # transformers drops keys whose value is None before rendering.
        chat = [{k: v for k, v in dict(m).items() if v is not None} for m in messages]
        variables = {**self.special_tokens, **kwargs}
        try:
            template = _compile(self.source)
            return template.render(messages=chat, tools=None, documents=None,
                                   add_generation_prompt=add_generation_prompt, **variables)
        except jinja2.exceptions.TemplateError as e:
            raise ChatTemplateError(f"chat template {self.path or '<string>'}: {e}") from e


def load_chat_template(directory: str) -> ChatTemplate:
    """The chat template of a checkpoint (or tokenizer) directory.

    Reads ``chat_template.jinja`` or the ``chat_template`` of ``tokenizer_config.json`` (see the
    module docstring) and the named special tokens of ``tokenizer_config.json`` /
    ``special_tokens_map.json``. A file inside the directory may be given for the directory.

    Raises:
      ChatTemplateError: no template (naming the directory and the files looked at), a list of
        templates without a ``default`` one, or an unreadable file.
    """
    directory = os.path.expanduser(directory)
    if os.path.isfile(directory):
        directory = os.path.dirname(directory) or "."
    if not os.path.isdir(directory):
        raise ChatTemplateError(f"{directory}: not a directory (looked for {TEMPLATE_FILE} and "
                                f"{CONFIG_FILE} in it)")
    config_path = os.path.join(directory, CONFIG_FILE)
    config = _read_json(config_path)
    special = {k: v for k, v in _read_json(os.path.join(directory, SPECIAL_TOKENS_FILE)).items()
               if k not in config}
    special.update(config)
    tokens = {k: t for k in SPECIAL_TOKEN_KEYS if (t := _token_text(special.get(k))) is not None}

    jinja_path = os.path.join(directory, TEMPLATE_FILE)
    if os.path.isfile(jinja_path):
        with open(jinja_path, encoding="utf-8") as f:
            return ChatTemplate(f.read(), tokens, jinja_path)
    source = config.get("chat_template")
    if isinstance(source, list):
        named = {t.get("name"): t.get("template") for t in source if isinstance(t, Mapping)}
        if "default" not in named:
            raise ChatTemplateError(
                f"{config_path}: chat_template lists templates {sorted(map(str, named))} but "
                "none named 'default'")
        source = named["default"]
    if not isinstance(source, str) or not source:
        raise ChatTemplateError(
            f"{directory}: no chat template (looked for {TEMPLATE_FILE} and a 'chat_template' in "
            f"{CONFIG_FILE})")
    return ChatTemplate(source, tokens, config_path)


def transcript_to_messages(prompt: str) -> list[dict[str, str]]:
    """The messages of an hh-rlhf prompt ending with an open Assistant turn (which is dropped:
    the template's generation prompt opens it).

    Turns are split by :func:`lsc.data.hh_rlhf.split_turns` (text stripped); Human turns become
    ``user`` messages and Assistant turns ``assistant`` messages, in order.

    Raises:
      ChatTemplateError: text before the first turn marker, or a prompt that does not end with
        an open (empty) ``\\n\\nAssistant:`` turn.
    """
    turns = hh_rlhf.split_turns(prompt)
    if not turns or turns[-1] != ("Assistant", ""):
        raise ChatTemplateError(
            "an hh-rlhf prompt must end with an open '\\n\\nAssistant:' turn; got "
            f"{prompt[-80:]!r}")
    if turns[0][0] == "":
        raise ChatTemplateError(
            f"an hh-rlhf prompt must start with a '\\n\\nHuman:' turn; got {prompt[:80]!r}")
    return [{"role": ROLES[role], "content": text} for role, text in turns[:-1]]


def render_prompt(template: ChatTemplate, prompt: str, *, strip_bos: bool = False) -> str:
    """An hh-rlhf prompt rendered through ``template`` with the generation prompt.

    ``strip_bos`` drops the template's leading ``bos_token`` text, for tokenizers that put the
    BOS id first themselves (:func:`lsc.data.tokenizer.encode_prompt`), so the prompt has one.
    """
    text = template.render(transcript_to_messages(prompt), add_generation_prompt=True)
    bos = template.bos_token
    if strip_bos and bos and text.startswith(bos):
        text = text[len(bos):]
    return text


def render_prompts(template: ChatTemplate, prompts: Sequence[str], *,
                   strip_bos: bool = False) -> list[str]:
    """:func:`render_prompt` of each prompt; errors name the prompt's position."""
    out = []
    for i, prompt in enumerate(prompts):
        try:
            out.append(render_prompt(template, prompt, strip_bos=strip_bos))
        except ChatTemplateError as e:
            raise ChatTemplateError(f"prompt {i}: {e}") from e
    return out
