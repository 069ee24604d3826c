"""Input pipelines: tokenised example tables and checkpointable Grain batch iterators.

Examples are tokenised once, up front, into a :class:`TokenizedData` table of fixed-width int32
arrays (so truncation counts are known before training and gathering a batch is one numpy
indexing step). :func:`batch_iterator` then streams batches with Grain:

* the host's shard is ``examples[process_index::process_count]`` (disjoint across hosts);
* shuffling is a Grain index shuffle seeded by ``seed`` (reshuffled every epoch, deterministic);
* every batch has exactly ``batch_size`` rows (the per-host batch size), so jitted steps never
  recompile. With ``num_epochs=None`` the stream is endless and batches cross epoch boundaries;
  with a finite ``num_epochs`` every host yields the same number of batches, rows past the data
  being padding rows with ``valid == 0``;
* :meth:`BatchIterator.get_state` returns a small JSON-serialisable dict (the Grain position and a
  fingerprint of the pipeline) that a checkpoint stores (with orbax:
  ``ocp.args.JsonSave(it.get_state())``); :meth:`BatchIterator.set_state` on a freshly built
  iterator continues the stream exactly where it stopped, and refuses a state saved by a
  different pipeline (other data, seed, batch size or host layout).

:func:`padded_batches` is the simpler loop of evaluation-style jobs: consecutive batches of a
fixed-shape array, the last one padded, for sampling or scoring every row once.

On several hosts each host builds its own iterator with its ``process_index``; the global batch
is the concatenation of the host batches (e.g. ``jax.make_array_from_process_local_data``).
:func:`batch_iterator` shards the examples (host ``i`` reads ``i, i + count, ...``), so the global
batches depend on the number of hosts. :func:`global_batch_iterator` instead forms the same global
batches on every host count (one shuffle of all examples, seeded) and gives host ``i`` the
``i``-th contiguous block of rows of each: a run on 2 hosts sees exactly the batches of a run on 1,
and its iterator state is the same on every host (a checkpoint written by process 0 restores on
all of them, and on another host count).

Batch layouts (``B`` = batch size, ``P`` / ``R`` = prompt / response length; all int32):

=============  ==============================================================================
kind           keys
=============  ==============================================================================
pairwise       ``prompt [B, P]``, ``chosen [B, R]``, ``rejected [B, R]``, ``valid [B]``
pointwise      ``prompt [B, P]``, ``response [B, R]``, ``label [B]``, ``valid [B]``
sft            ``prompt [B, P]``, ``response [B, R]``, ``valid [B]``
prompts        ``prompt [B, P]``, ``prompt_id [B]``, ``valid [B]``
=============  ==============================================================================

Prompts are left-padded and responses right-padded with ``tokenizer.pad_id``, following
``lsc.models.protocol``. Padding rows are all ``pad_id`` with ``label = 0`` and
``prompt_id = -1``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator, Sequence

import grain
import numpy as np
from absl import logging

from lsc.data import hh_rlhf
from lsc.data import tokenizer as tokenizer_lib
from lsc.data.tokenizer import Tokenizer, TruncationStats

KINDS = ("pairwise", "pointwise", "sft", "prompts")


@dataclasses.dataclass
class TokenizedData:
    """A table of ``N`` tokenised examples: ``arrays[key]`` is int32 ``[N, ...]``.

    ``kind`` is one of :data:`KINDS`; ``pad_id`` fills padding rows; ``stats`` counts truncation.
    """

    kind: str
    arrays: dict[str, np.ndarray]
    pad_id: int
    stats: TruncationStats

    def __len__(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0])

    def padding_row(self) -> dict[str, np.ndarray]:
        """One padding row: ``pad_id`` tokens, ``label 0``, ``prompt_id -1``, ``valid 0``."""
        row = {}
        for key, arr in self.arrays.items():
            fill = {"label": 0, "prompt_id": -1, "valid": 0}.get(key, self.pad_id)
            row[key] = np.full(arr.shape[1:], fill, dtype=arr.dtype)
        return row

    def fingerprint(self) -> str:
        """SHA-256 (first 16 hex digits) over the arrays' contents, to validate restores."""
        h = hashlib.sha256(self.kind.encode())
        for key in sorted(self.arrays):
            h.update(key.encode())
            h.update(np.ascontiguousarray(self.arrays[key]).tobytes())
        return h.hexdigest()[:16]


def _left_pad(rows: Sequence[list[int]], width: int, pad_id: int) -> np.ndarray:
    out = np.full((len(rows), width), pad_id, dtype=np.int32)
    for i, ids in enumerate(rows):
        if ids:
            out[i, width - len(ids):] = ids
    return out


def _right_pad(rows: Sequence[list[int]], width: int, pad_id: int) -> np.ndarray:
    out = np.full((len(rows), width), pad_id, dtype=np.int32)
    for i, ids in enumerate(rows):
        out[i, : len(ids)] = ids
    return out


class _Encoder:
    """Encodes prompts/responses by the truncation policy (prompts cached); counts truncation."""

    def __init__(self, tok: Tokenizer, prompt_len: int, response_len: int):
        if prompt_len < 1 or response_len < 1:
            raise ValueError(f"prompt_len and response_len must be >= 1, got {prompt_len}, "
                             f"{response_len}")
        self.tok, self.prompt_len, self.response_len = tok, prompt_len, response_len
        self._prompt_cache: dict[str, tuple[list[int], bool]] = {}
        self.stats = TruncationStats()

    def prompt(self, text: str) -> tuple[list[int], bool]:
        if text not in self._prompt_cache:
            self._prompt_cache[text] = tokenizer_lib.encode_prompt(self.tok, text, self.prompt_len)
        return self._prompt_cache[text]

    def response(self, text: str) -> tuple[list[int], bool]:
        return tokenizer_lib.encode_response(self.tok, text, self.response_len)

    def count(self, prompt_cut: bool, response_cuts: Sequence[bool]) -> None:
        self.stats.examples += 1
        self.stats.prompts_truncated += int(prompt_cut)
        self.stats.responses_truncated += int(any(response_cuts))
        self.stats.examples_truncated += int(prompt_cut or any(response_cuts))

    def done(self, kind: str, arrays: dict[str, np.ndarray]) -> TokenizedData:
        s = self.stats
        arrays["valid"] = np.ones((s.examples,), np.int32)
        logging.info("%s data: %d examples; truncated: %d prompts (P=%d), %d responses (R=%d), "
                     "%d examples", kind, s.examples, s.prompts_truncated, self.prompt_len,
                     s.responses_truncated, self.response_len, s.examples_truncated)
        return TokenizedData(kind, arrays, self.tok.pad_id, s)


def tokenize_pairs(pairs: Sequence[hh_rlhf.Pair], tok: Tokenizer, prompt_len: int,
                   response_len: int) -> TokenizedData:
    """Pairwise table: ``prompt [N, P]``, ``chosen [N, R]``, ``rejected [N, R]``, ``valid [N]``."""
    enc = _Encoder(tok, prompt_len, response_len)
    p, c, r = [], [], []
    for pair in pairs:
        pi, pcut = enc.prompt(pair.prompt)
        ci, ccut = enc.response(pair.chosen)
        ri, rcut = enc.response(pair.rejected)
        enc.count(pcut, (ccut, rcut))
        p.append(pi)
        c.append(ci)
        r.append(ri)
    return enc.done("pairwise", {"prompt": _left_pad(p, prompt_len, tok.pad_id),
                                 "chosen": _right_pad(c, response_len, tok.pad_id),
                                 "rejected": _right_pad(r, response_len, tok.pad_id)})


def tokenize_pointwise(examples: Sequence[tuple[str, str, int]], tok: Tokenizer, prompt_len: int,
                       response_len: int) -> TokenizedData:
    """Pointwise table from ``(prompt, response, int label)``: prompt, response, label, valid."""
    enc = _Encoder(tok, prompt_len, response_len)
    p, r, labels = [], [], []
    for prompt, response, label in examples:
        if int(label) != label:
            raise ValueError(f"pointwise labels must be integers, got {label!r}")
        pi, pcut = enc.prompt(prompt)
        ri, rcut = enc.response(response)
        enc.count(pcut, (rcut,))
        p.append(pi)
        r.append(ri)
        labels.append(int(label))
    return enc.done("pointwise", {"prompt": _left_pad(p, prompt_len, tok.pad_id),
                                  "response": _right_pad(r, response_len, tok.pad_id),
                                  "label": np.asarray(labels, np.int32).reshape(-1)})


def pointwise_from_pairs(pairs: Sequence[hh_rlhf.Pair]) -> list[tuple[str, str, int]]:
    """Two pointwise examples per pair: ``(prompt, chosen, 1)`` then ``(prompt, rejected, 0)``."""
    out: list[tuple[str, str, int]] = []
    for pair in pairs:
        out.append((pair.prompt, pair.chosen, 1))
        out.append((pair.prompt, pair.rejected, 0))
    return out


def tokenize_sft(demos: Sequence[hh_rlhf.Demonstration], tok: Tokenizer, prompt_len: int,
                 response_len: int) -> TokenizedData:
    """SFT table: ``prompt [N, P]``, ``response [N, R]``, ``valid [N]``."""
    enc = _Encoder(tok, prompt_len, response_len)
    p, r = [], []
    for demo in demos:
        pi, pcut = enc.prompt(demo.prompt)
        ri, rcut = enc.response(demo.response)
        enc.count(pcut, (rcut,))
        p.append(pi)
        r.append(ri)
    return enc.done("sft", {"prompt": _left_pad(p, prompt_len, tok.pad_id),
                            "response": _right_pad(r, response_len, tok.pad_id)})


def assign_prompt_ids(prompts: Sequence[str]) -> np.ndarray:
    """Stable int32 ids ``[N]``: :func:`hh_rlhf.prompt_id`, collisions resolved by probing.

    Distinct prompts get distinct ids; equal prompts get equal ids. A prompt's id depends only on
    its text unless another prompt of the set shares its 31-bit hash (rare: about N^2 / 2^32
    pairs); then prompts are ordered by their full SHA-256 and later ones take the next free id.
    """
    unique = sorted(set(prompts), key=lambda s: hashlib.sha256(s.encode("utf-8")).digest())
    taken: dict[int, str] = {}
    ids: dict[str, int] = {}
    collisions = 0
    for prompt in unique:
        pid = hh_rlhf.prompt_id(prompt)
        while pid in taken:
            pid = (pid + 1) % 2**31
            collisions += 1
        taken[pid] = prompt
        ids[prompt] = pid
    if collisions:
        logging.warning("prompt ids: %d hash collisions resolved by probing", collisions)
    return np.asarray([ids[p] for p in prompts], np.int32).reshape(-1)


def tokenize_prompts(prompts: Sequence[str], tok: Tokenizer, prompt_len: int) -> TokenizedData:
    """Prompt table: ``prompt [N, P]``, ``prompt_id [N]``, ``valid [N]``."""
    enc = _Encoder(tok, prompt_len, 1)
    p = []
    for prompt in prompts:
        pi, pcut = enc.prompt(prompt)
        enc.count(pcut, ())
        p.append(pi)
    return enc.done("prompts", {"prompt": _left_pad(p, prompt_len, tok.pad_id),
                                "prompt_id": assign_prompt_ids(prompts)})


# --------------------------------------------------------------------------- iteration


class _Gather:
    """Maps a batch of host-local positions (``-1`` = padding) to a dict of int32 arrays."""

    def __init__(self, data: TokenizedData, batch_size: int):
        self.arrays = data.arrays
        self.pad_row = data.padding_row()
        self.batch_size = batch_size

    def __call__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        idx = np.full((self.batch_size,), -1, np.int64)
        idx[: len(indices)] = indices
        real = idx >= 0
        out = {}
        for key, arr in self.arrays.items():
            rows = arr[np.where(real, idx, 0)]
            rows[~real] = self.pad_row[key]
            out[key] = rows
        return out


def _stack(items: Sequence[int]) -> np.ndarray:
    return np.asarray(items, np.int64).reshape(-1)


class BatchIterator(Iterator[dict[str, np.ndarray]]):
    """An iterator of fixed-shape batches with JSON-serialisable ``get_state``/``set_state``."""

    def __init__(self, dataset: grain.IterDataset, fingerprint: dict):
        self._dataset = dataset
        self._it = iter(dataset)
        self._fingerprint = fingerprint

    def __iter__(self) -> "BatchIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._it)

    def get_state(self) -> dict:
        """``{"grain": <grain iterator state>, "pipeline": <fingerprint>}`` (JSON-serialisable)."""
        state = {"grain": self._it.get_state(), "pipeline": dict(self._fingerprint)}
        json.dumps(state)
        return state

    def set_state(self, state: dict) -> None:
        """Restores a state from :meth:`get_state` of an iterator over the same pipeline.

        Raises ``ValueError`` naming the differing fields when the pipeline differs.
        """
        if not isinstance(state, dict) or "grain" not in state or "pipeline" not in state:
            raise ValueError("iterator state must be a dict with 'grain' and 'pipeline' keys, got "
                             f"{state!r}")
        saved = state["pipeline"]
        diff = {k: (saved.get(k), v) for k, v in self._fingerprint.items() if saved.get(k) != v}
        if diff:
            raise ValueError("iterator state is from a different pipeline; (saved, current) "
                             f"differ for {diff}")
        self._it.set_state(state["grain"])


def batch_iterator(data: TokenizedData, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                   num_epochs: int | None = None, process_index: int = 0, process_count: int = 1,
                   drop_remainder: bool = False, prefetch: int = 2) -> BatchIterator:
    """Batches of ``batch_size`` rows (per host) from this host's shard of ``data``.

    Args:
      data: a :class:`TokenizedData` table.
      batch_size: rows per batch on this host.
      seed: shuffle seed (the same on every host).
      shuffle: shuffle examples (reshuffled every epoch).
      num_epochs: ``None`` for an endless stream, else the number of passes.
      process_index, process_count: this host's position among the hosts (``jax.process_index()``
        / ``jax.process_count()``); host ``i`` reads examples ``i, i + count, ...``.
      drop_remainder: with a finite ``num_epochs``, drop a last partial batch instead of padding it.
      prefetch: batches prefetched by a background thread (0 disables the thread).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}")
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs must be None or >= 1, got {num_epochs}")
    n = len(data)
    positions = np.arange(process_index, n, process_count, dtype=np.int64)
    if num_epochs is not None:
        per_host = -(-n // process_count)
        positions = np.concatenate([positions, np.full(per_host - len(positions), -1, np.int64)])
    if len(positions) == 0:
        raise ValueError(f"host {process_index} of {process_count} has no examples (N={n})")
    if num_epochs is None and len(positions) < batch_size:
        logging.info("batch size %d exceeds the host's %d examples; batches repeat examples",
                     batch_size, len(positions))
    ds = grain.MapDataset.source(positions)
    if shuffle:
        ds = ds.shuffle(seed=seed)
    ds = ds.repeat(num_epochs)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, batch_fn=_stack)
    ds = ds.map(_Gather(data, batch_size))
    read = grain.ReadOptions(num_threads=1 if prefetch else 0, prefetch_buffer_size=prefetch)
    fingerprint = {"kind": data.kind, "data": data.fingerprint(), "examples": n,
                   "batch_size": batch_size, "seed": seed, "shuffle": shuffle,
                   "num_epochs": num_epochs, "process_index": process_index,
                   "process_count": process_count, "drop_remainder": drop_remainder}
    return BatchIterator(ds.to_iter_dataset(read), fingerprint)


class _HostRows:
    """Maps a global batch of positions (``-1`` = padding) to host ``process_index``'s block of
    ``global_batch / process_count`` rows, gathered by :class:`_Gather`."""

    def __init__(self, data: TokenizedData, global_batch: int, process_index: int,
                 process_count: int):
        self.global_batch = global_batch
        self.per_host = global_batch // process_count
        self.start = process_index * self.per_host
        self.gather = _Gather(data, self.per_host)

    def __call__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        idx = np.full((self.global_batch,), -1, np.int64)
        idx[: len(indices)] = indices
        return self.gather(idx[self.start:self.start + self.per_host])


def global_batch_iterator(data: TokenizedData, global_batch_size: int, *, seed: int = 0,
                          shuffle: bool = True, num_epochs: int | None = None,
                          process_index: int = 0, process_count: int = 1,
                          drop_remainder: bool = False, prefetch: int = 2) -> BatchIterator:
    """This host's rows of global batches that do not depend on the number of hosts.

    The global stream is :func:`batch_iterator`'s on one host (``global_batch_size`` rows per
    batch, shuffled by ``seed``, a last partial batch padded with ``valid == 0`` rows unless
    ``drop_remainder``); host ``process_index`` yields rows ``[i * b, (i + 1) * b)`` of each, with
    ``b = global_batch_size / process_count`` (int32 arrays ``[b, ...]``, the layouts of the module
    docstring). Concatenating the hosts' batches in process order gives the global batch.

    The iterator state holds no host layout: every host's state is the same, and a state saved on
    one host count restores on another.
    """
    if global_batch_size < 1:
        raise ValueError(f"global_batch_size must be >= 1, got {global_batch_size}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}")
    if global_batch_size % process_count:
        raise ValueError(f"global batch size {global_batch_size} is not divisible by "
                         f"{process_count} hosts")
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs must be None or >= 1, got {num_epochs}")
    n = len(data)
    if n == 0:
        raise ValueError("no examples to batch (N=0)")
    if num_epochs is None and n < global_batch_size:
        logging.info("global batch size %d exceeds the %d examples; batches repeat examples",
                     global_batch_size, n)
    ds = grain.MapDataset.source(np.arange(n, dtype=np.int64))
    if shuffle:
        ds = ds.shuffle(seed=seed)
    ds = ds.repeat(num_epochs)
    ds = ds.batch(global_batch_size, drop_remainder=drop_remainder, batch_fn=_stack)
    ds = ds.map(_HostRows(data, global_batch_size, process_index, process_count))
    read = grain.ReadOptions(num_threads=1 if prefetch else 0, prefetch_buffer_size=prefetch)
    fingerprint = {"kind": data.kind, "data": data.fingerprint(), "examples": n,
                   "batch_size": global_batch_size, "seed": seed, "shuffle": shuffle,
                   "num_epochs": num_epochs, "drop_remainder": drop_remainder}
    return BatchIterator(ds.to_iter_dataset(read), fingerprint)


def padded_batches(rows: np.ndarray, batch_size: int
                   ) -> Iterator[tuple[int, int, np.ndarray]]:
    """Consecutive fixed-shape batches of ``rows[N, ...]`` for a jitted function called once per
    batch (one compilation): yields ``(start, real, chunk)`` with ``chunk`` the ``batch_size`` rows
    from ``start`` on; the last chunk holds ``real < batch_size`` rows of ``rows`` followed by
    copies of its first row. Keep ``result[:real]`` of each call."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows = np.asarray(rows)
    for start in range(0, rows.shape[0], batch_size):
        chunk = rows[start:start + batch_size]
        real = chunk.shape[0]
        if real < batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch_size - real, axis=0)])
        yield start, real, chunk
