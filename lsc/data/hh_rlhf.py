"""Reading Anthropic hh-rlhf data: pairs, prompts, demonstrations, subsets and the half split.

Published format
----------------
JSON-lines files, plain (``.jsonl``) or gzipped (``.jsonl.gz``), one record per line::

    {"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...",
     "rejected": "\\n\\nHuman: ...\\n\\nAssistant: ..."}

A transcript alternates ``\\n\\nHuman:`` and ``\\n\\nAssistant:`` turns. A record splits into
``prompt`` (the dialogue up to and including the last ``\\n\\nAssistant:``), the chosen response
and the rejected response (the text after that marker, stripped of surrounding whitespace). Both
transcripts must share the prompt.

The published tree keeps one directory per subset (``helpful-base``, ``helpful-online``,
``helpful-rejection-sampled``, ``harmless-base``, ``red-team-attempts``) with ``train`` and
``test`` files; a Hugging Face hub cache snapshot of ``Anthropic/hh-rlhf`` has the same layout.
A ``datasets`` parquet export (``*.parquet``) or Arrow cache (``*.arrow``) with the same
``chosen``/``rejected`` columns is read too (needs ``pyarrow``).

Other record kinds read here:

* prompt files: ``{"prompt": "\\n\\nHuman: ...\\n\\nAssistant:"}`` per line;
* red-team attempts: records with a ``transcript`` field (a JSON array file or JSON lines); the
  prompt is the first Human turn;
* demonstrations (SFT): records with a ``chosen`` transcript (``rejected`` is ignored).

Bad input
---------
An unparseable line, a missing or non-string field, a transcript without an Assistant turn (or
without a Human turn before it, or ending with a Human turn), prompts that differ between chosen
and rejected, an empty response, or invalid UTF-8 raises :class:`DataError` whose message starts
with ``path:line:``. With ``on_error="skip"`` such records are skipped instead and counted per
reason in a :class:`ReadStats`, which is logged once per file and written to the workdir by
the jobs (:func:`finish_read`, ``data_read_stats.json``); a job stops when more than
``config.data.max_skip_fraction`` (default 0.01) of the records were skipped, with the counts per
reason. The paper's hh-rlhf configs skip and count; the synthetic ones raise. A file that cannot be read at all (missing, corrupt gzip, a JSON-array
file that does not parse) always raises: skipping it would drop an unknown number of records.

The half split
--------------
:func:`split_in_half` assigns each pair to one half by a SHA-256 hash of its prompt (never
Python's salted ``hash``), so the same prompt never lands in both halves and the assignment is
the same on every run and machine.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal

from absl import logging

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"

HELPFUL_SUBSETS = ("helpful-base", "helpful-online", "helpful-rejection-sampled")
HARMLESS_SUBSETS = ("harmless-base",)
RED_TEAM_SUBSET = "red-team-attempts"
SUBSET_GROUPS: dict[str, tuple[str, ...]] = {
    "helpful": HELPFUL_SUBSETS,
    "harmless": HARMLESS_SUBSETS,
}

OnError = Literal["raise", "skip"]
ON_ERROR = typing.get_args(OnError)  # ("raise", "skip"): config.data.on_error


class DataError(ValueError):
    """A bad record; ``str(err)`` is ``"path:line: reason"``."""

    def __init__(self, path: str, line: int | None, reason: str, kind: str):
        self.path = path
        self.line = line
        self.reason = reason
        self.kind = kind
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {reason}")


@dataclasses.dataclass(frozen=True)
class Pair:
    """One preference pair; ``source`` is ``"path:line"`` of the record it came from."""

    prompt: str
    chosen: str
    rejected: str
    source: str = ""


@dataclasses.dataclass(frozen=True)
class Demonstration:
    """One (prompt, response) demonstration for supervised fine-tuning."""

    prompt: str
    response: str
    source: str = ""


@dataclasses.dataclass
class ReadStats:
    """Counts of records read and skipped (per reason kind), summed over files."""

    read: int = 0
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    files: list[str] = dataclasses.field(default_factory=list)

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def add_skip(self, kind: str) -> None:
        self.skipped[kind] = self.skipped.get(kind, 0) + 1

    def merge(self, other: "ReadStats") -> None:
        self.read += other.read
        for kind, count in other.skipped.items():
            self.skipped[kind] = self.skipped.get(kind, 0) + count
        self.files.extend(other.files)

    def to_json(self) -> dict:
        return {"read": self.read, "skipped": dict(sorted(self.skipped.items())),
                "num_skipped": self.num_skipped, "files": list(self.files)}


DEFAULT_MAX_SKIP_FRACTION = 0.01  # config.data.max_skip_fraction when a config has none


def max_skip_fraction(data_config) -> float:
    """``config.data.max_skip_fraction``, or :data:`DEFAULT_MAX_SKIP_FRACTION` when absent."""
    return float(data_config.get("max_skip_fraction", DEFAULT_MAX_SKIP_FRACTION))


def skip_fraction(stats: ReadStats) -> float:
    """Skipped records over all records met (read + skipped); 0 when there were none."""
    total = stats.read + stats.num_skipped
    return stats.num_skipped / total if total else 0.0


def finish_read(stats: ReadStats, workdir: str, max_fraction: float = DEFAULT_MAX_SKIP_FRACTION,
                *, write: bool = True) -> None:
    """Writes ``stats`` to ``<workdir>/data_read_stats.json`` (when ``write``: the chief process)
    and stops the job when more than ``max_fraction`` (``config.data.max_skip_fraction``) of the
    records were skipped.

    Raises:
      ValueError: naming ``config.data.max_skip_fraction``, with the counts per reason and the
        path of the written counts.
    """
    if not 0.0 <= max_fraction <= 1.0:
        raise ValueError(f"config.data.max_skip_fraction must be in [0, 1], got {max_fraction}")
    path = write_read_stats(stats, workdir) if write else os.path.join(workdir,
                                                                        "data_read_stats.json")
    frac = skip_fraction(stats)
    if frac > max_fraction:
        raise ValueError(
            f"{stats.num_skipped} of {stats.read + stats.num_skipped} records ({frac:.2%}) were "
            f"skipped, more than config.data.max_skip_fraction={max_fraction:g}; per reason: "
            f"{dict(sorted(stats.skipped.items()))} (counts in {path})")


def write_read_stats(stats: ReadStats, workdir: str, name: str = "data_read_stats.json") -> str:
    """Writes ``stats`` as JSON to ``workdir/name`` and returns the path."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(stats.to_json(), f, indent=2, sort_keys=True)
    return path


# --------------------------------------------------------------------------- transcripts


def split_transcript(transcript: str) -> tuple[str, str]:
    """Splits a transcript into (prompt ending with ``\\n\\nAssistant:``, stripped response).

    Raises ``ValueError`` (kind in ``err.args[1]``) for a transcript without an Assistant turn,
    without a Human turn before it, or whose last Assistant turn is followed by a Human turn.
    """
    idx = transcript.rfind(ASSISTANT)
    if idx < 0:
        raise ValueError("transcript has no '\\n\\nAssistant:' turn", "no_assistant_turn")
    prompt = transcript[: idx + len(ASSISTANT)]
    if HUMAN not in prompt:
        raise ValueError("transcript has no '\\n\\nHuman:' turn before its last Assistant turn",
                         "no_human_turn")
    response = transcript[idx + len(ASSISTANT):]
    if HUMAN in response:
        raise ValueError("transcript ends with a Human turn after its last Assistant turn",
                         "ends_with_human_turn")
    return prompt, response.strip()


def split_turns(prompt: str) -> list[tuple[str, str]]:
    """Splits a dialogue into ``[(role, text), ...]`` with role ``"Human"`` or ``"Assistant"``.

    Text before the first marker (normally none) is returned with role ``""``. Text is stripped.
    ``format_turns(split_turns(p)) == p`` for prompts in the published format.
    """
    turns: list[tuple[str, str]] = []
    pos = 0
    role = ""
    while True:
        nh = prompt.find(HUMAN, pos)
        na = prompt.find(ASSISTANT, pos)
        candidates = [(i, r, m) for i, r, m in ((nh, "Human", HUMAN), (na, "Assistant", ASSISTANT))
                      if i >= 0]
        end = min(c[0] for c in candidates) if candidates else len(prompt)
        text = prompt[pos:end].strip()
        if role or text:
            turns.append((role, text))
        if not candidates:
            return turns
        _, role, marker = min(candidates)
        pos = end + len(marker)


def format_turns(turns: Sequence[tuple[str, str]]) -> str:
    """Inverse of :func:`split_turns` for well-formed turns (empty text gives a bare marker)."""
    parts = []
    for role, text in turns:
        marker = {"Human": HUMAN, "Assistant": ASSISTANT}.get(role, "")
        parts.append(marker + (" " + text if text and marker else text))
    return "".join(parts)


def turn_starts(prompt: str) -> list[int]:
    """Character offsets where each ``\\n\\nHuman:`` turn starts (left-truncation points)."""
    starts, pos = [], 0
    while (i := prompt.find(HUMAN, pos)) >= 0:
        starts.append(i)
        pos = i + 1
    return starts


# --------------------------------------------------------------------------- hashing / split


def prompt_hash(prompt: str) -> int:
    """A 64-bit unsigned hash of the prompt (first 8 bytes of SHA-256 of its UTF-8), stable."""
    return int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:8], "big")


def prompt_id(prompt: str) -> int:
    """A stable non-negative int32 id of the prompt (the top 31 bits of :func:`prompt_hash`)."""
    return prompt_hash(prompt) >> 33


def in_first_half(prompt: str, fraction: float = 0.5, salt: str = "lsc-half-split") -> bool:
    """Whether ``prompt`` belongs to the first part of a split of size ``fraction``."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    digest = hashlib.sha256((salt + "\x00" + prompt).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2.0**64


def _prompt_of(item) -> str:
    return item.prompt


def split_in_half(items: Iterable, fraction: float = 0.5, salt: str = "lsc-half-split",
                  key: Callable[[object], str] = _prompt_of) -> tuple[list, list]:
    """Splits items (pairs, demonstrations or prompt strings via ``key``) by a hash of the prompt.

    Returns ``(first, second)``: by the paper's protocol the first half trains the reward model and
    the second gives alignment prompts. Order within each half follows the input order.
    """
    first, second = [], []
    for item in items:
        (first if in_first_half(key(item), fraction, salt) else second).append(item)
    return first, second


# --------------------------------------------------------------------------- file reading


def _open_lines(path: str) -> Iterator[tuple[int, bytes]]:
    opener = gzip.open if path.endswith(".gz") else open
    lineno = 0
    try:
        with opener(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                yield lineno, raw
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(path, lineno + 1, f"cannot read file ({err})", "unreadable") from err


def _json_records(path: str) -> Iterator[tuple[int, object]]:
    """Yields ``(line, record_or_DataError)`` for a JSON-lines or JSON-array file."""
    first_char = b""
    for _, raw in _open_lines(path):
        if raw.strip():
            first_char = raw.strip()[:1]
            break
    if first_char == b"[":
        yield from _json_array_records(path)
        return
    for lineno, raw in _open_lines(path):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            yield lineno, DataError(path, lineno, f"invalid UTF-8 ({err.reason} at byte "
                                    f"{err.start})", "invalid_utf8")
            continue
        if not text.strip():
            continue
        try:
            yield lineno, json.loads(text)
        except json.JSONDecodeError as err:
            yield lineno, DataError(path, lineno, f"unparseable JSON ({err.msg} at column "
                                    f"{err.colno})", "unparseable")


def _json_array_records(path: str) -> Iterator[tuple[int, object]]:
    """Records of a file holding one JSON array; line numbers locate each element's start."""
    data = b"".join(raw for _, raw in _open_lines(path))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(path, line, f"invalid UTF-8 ({err.reason})", "invalid_utf8") from err
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return
        line = text.count("\n", 0, pos) + 1
        try:
            record, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise DataError(path, err.lineno, f"unparseable JSON ({err.msg})",
                            "unparseable") from err
        yield line, record


def _field(record: object, name: str, path: str, line: int) -> str:
    if not isinstance(record, dict):
        raise DataError(path, line, f"record is a {type(record).__name__}, expected an object",
                        "not_an_object")
    if name not in record:
        raise DataError(path, line, f"missing field {name!r}", "missing_field")
    value = record[name]
    if not isinstance(value, str):
        raise DataError(path, line, f"field {name!r} is a {type(value).__name__}, expected a "
                        "string", "bad_field_type")
    return value


def _split(transcript: str, name: str, path: str, line: int) -> tuple[str, str]:
    try:
        prompt, response = split_transcript(transcript)
    except ValueError as err:
        raise DataError(path, line, f"{name}: {err.args[0]}", err.args[1]) from err
    if not response:
        raise DataError(path, line, f"{name}: empty response", "empty_response")
    return prompt, response


def _parse_pair(record: object, path: str, line: int) -> Pair:
    chosen_t = _field(record, "chosen", path, line)
    rejected_t = _field(record, "rejected", path, line)
    prompt, chosen = _split(chosen_t, "chosen", path, line)
    prompt_r, rejected = _split(rejected_t, "rejected", path, line)
    if prompt != prompt_r:
        at = next((i for i, (a, b) in enumerate(zip(prompt, prompt_r)) if a != b),
                  min(len(prompt), len(prompt_r)))
        raise DataError(path, line, f"chosen and rejected prompts differ (first difference at "
                        f"character {at})", "prompt_mismatch")
    return Pair(prompt, chosen, rejected, f"{path}:{line}")


def _parse_prompt(record: object, path: str, line: int) -> str:
    if isinstance(record, dict) and "prompt" in record:
        prompt = _field(record, "prompt", path, line)
        if not prompt.rstrip().endswith(ASSISTANT.strip()) or HUMAN.strip() not in prompt:
            raise DataError(path, line, "prompt must contain a Human turn and end with "
                            "'\\n\\nAssistant:'", "bad_prompt")
        return prompt
    if isinstance(record, dict) and "transcript" in record:
        transcript = _field(record, "transcript", path, line)
        turns = [t for t in split_turns(transcript) if t[0] == "Human" and t[1]]
        if not turns:
            raise DataError(path, line, "transcript has no non-empty Human turn", "no_human_turn")
        return f"{HUMAN} {turns[0][1]}{ASSISTANT}"
    return _parse_pair(record, path, line).prompt


def _parse_demo(record: object, path: str, line: int) -> Demonstration:
    prompt, response = _split(_field(record, "chosen", path, line), "chosen", path, line)
    return Demonstration(prompt, response, f"{path}:{line}")


def _read(paths: str | Sequence[str], parse, on_error: OnError, stats: ReadStats | None):
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    total = stats if stats is not None else ReadStats()
    out = []
    for path in paths:
        path = os.fspath(path)
        local = ReadStats(files=[path])
        if path.endswith((".parquet", ".arrow")):
            records = _table_records(path)
        else:
            records = _json_records(path)
        for line, record in records:
            try:
                if isinstance(record, DataError):
                    raise record
                out.append(parse(record, path, line))
                local.read += 1
            except DataError as err:
                if on_error == "raise":
                    raise
                local.add_skip(err.kind)
                logging.debug("skipping %s", err)
        if local.num_skipped:
            logging.warning("%s: read %d records, skipped %d %s", path, local.read,
                            local.num_skipped, dict(sorted(local.skipped.items())))
        else:
            logging.info("%s: read %d records", path, local.read)
        total.merge(local)
    return out, total


def read_pairs(paths: str | Sequence[str], on_error: OnError = "raise",
               stats: ReadStats | None = None) -> tuple[list[Pair], ReadStats]:
    """Reads preference pairs from hh-rlhf files (``.jsonl[.gz]``, ``.parquet``, ``.arrow``).

    Returns ``(pairs, stats)``; ``stats`` (or the one passed in, updated) counts skipped records.
    """
    return _read(paths, _parse_pair, on_error, stats)


def read_prompts(paths: str | Sequence[str], on_error: OnError = "raise",
                 stats: ReadStats | None = None, dedup: bool = True) -> tuple[list[str], ReadStats]:
    """Prompts-only view: prompts of pair files, ``{"prompt"}`` files or red-team transcripts.

    With ``dedup`` the first occurrence of each prompt is kept, in file order.
    """
    prompts, stats = _read(paths, _parse_prompt, on_error, stats)
    if dedup:
        prompts = list(dict.fromkeys(prompts))
    return prompts, stats


def read_demonstrations(paths: str | Sequence[str], on_error: OnError = "raise",
                        stats: ReadStats | None = None) -> tuple[list[Demonstration], ReadStats]:
    """Reads (prompt, response) demonstrations from the ``chosen`` transcripts of records."""
    return _read(paths, _parse_demo, on_error, stats)


def _table_records(path: str) -> Iterator[tuple[int, object]]:
    """Rows of a parquet file or a ``datasets`` Arrow cache file; the line is the 1-based row."""
    try:
        import pyarrow.ipc as ipc
        import pyarrow.parquet as pq
    except ImportError as err:
        raise DataError(path, None, "reading parquet/arrow files needs pyarrow "
                        "(pip install pyarrow)", "missing_dependency") from err
    try:
        if path.endswith(".parquet"):
            table = pq.read_table(path)
        else:
            with open(path, "rb") as f:
                try:
                    table = ipc.open_stream(f).read_all()
                except Exception:  # datasets writes streams; save_to_disk may write files
                    f.seek(0)
                    table = ipc.open_file(f).read_all()
    except Exception as err:
        raise DataError(path, None, f"cannot read table ({err})", "unreadable") from err
    for row, record in enumerate(table.to_pylist(), start=1):
        yield row, record


# --------------------------------------------------------------------------- subsets


def expand_subsets(subsets: str | Sequence[str]) -> list[str]:
    """Expands group names (``helpful``, ``harmless``) into subset directory names, in order."""
    names = [subsets] if isinstance(subsets, str) else list(subsets)
    out: list[str] = []
    for name in names:
        for sub in SUBSET_GROUPS.get(name, (name,)):
            if sub not in out:
                out.append(sub)
    return out


_SUFFIXES = (".jsonl.gz", ".jsonl", ".json.gz", ".json", ".parquet", ".arrow")


def subset_files(root: str, subsets: str | Sequence[str], split: str = "train") -> list[str]:
    """Files of ``split`` under ``root/<subset>/`` for each subset (or group) name.

    Matches ``<split>.jsonl[.gz]`` (the published names), ``<split>-*.parquet`` / ``<split>/*``
    (parquet exports) and, for red-team attempts, any data file in the directory. A subset named
    explicitly must exist and hold a file for the split (else ``FileNotFoundError`` naming the
    directory); members of a group (``helpful``) that are absent are skipped with a log line,
    but at least one must be present.
    """
    names = [subsets] if isinstance(subsets, str) else list(subsets)
    files: list[str] = []
    for name in names:
        group = name in SUBSET_GROUPS
        found_any = False
        for sub in expand_subsets(name):
            directory = os.path.join(root, sub)
            if not os.path.isdir(directory):
                if group:
                    logging.info("%s: absent, skipped (member of group %r)", directory, name)
                    continue
                raise FileNotFoundError(f"{directory}: no such subset directory")
            found = _split_files(directory, sub, split)
            if not found:
                raise FileNotFoundError(f"{directory}: no {split!r} data file")
            found_any = True
            files.extend(f for f in found if f not in files)
        if not found_any:
            raise FileNotFoundError(f"{root}: no subset directory of group {name!r} "
                                    f"({', '.join(SUBSET_GROUPS[name])})")
    return files


def _split_files(directory: str, sub: str, split: str) -> list[str]:
    found = []
    for dirpath, _, names in sorted(os.walk(directory)):
        rel = os.path.relpath(dirpath, directory)
        for name in sorted(names):
            if not name.endswith(_SUFFIXES):
                continue
            stem = name.split(".")[0]
            if (stem == split or stem.startswith(split + "-") or rel.split(os.sep)[0] == split
                    or sub == RED_TEAM_SUBSET):
                found.append(os.path.join(dirpath, name))
    return found
