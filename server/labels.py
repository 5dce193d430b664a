"""Label tokens in context, the token trie of the labels, and the plan of engine reads.

A read is one forward pass over ``prompt + prefix`` that returns the
full-vocabulary log-probabilities of chosen next tokens (``candidates``).
FIRST_TOKEN needs one read; FULL reads every internal node of the labels'
token trie, which gives each label's exact sequence log-probability by the
chain rule. PRUNED reads the root, then only the trie nodes under which a label
could still outscore the best label known exactly (branch and bound): its top
label is FULL's, at a fraction of FULL's reads. FULL can also read by
label paths: after the root, one request per label over ``prompt + label`` whose
prompt log-probs give every later token of the label: the same numbers in fewer, costlier
requests. Nothing here imports vLLM or grpc.
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

# vLLM's per-request limit on logprob_token_ids (vllm.sampling_params.MAX_LOGPROB_TOKEN_IDS).
MAX_CANDIDATES_PER_READ = 128

Encode = Callable[[str], list[int]]
TokenIds = tuple[int, ...]


class Mode(enum.Enum):
    AUTO = "auto"
    FIRST_TOKEN = "first_token"
    FULL = "full"
    PRUNED = "pruned"


@dataclass(frozen=True)
class Read:
    """One engine read: the prompt, then ``prefix``; returns logprobs of ``candidates``."""

    prefix: TokenIds
    candidates: TokenIds


def continuation_ids(encode: Encode, anchor: str, continuation: str) -> TokenIds:
    """Tokens of ``continuation`` as the tokenizer produces them right after ``anchor``.

    " positive" after "Label:" and "positive" alone are different tokens, so a
    label is tokenized in context and the anchor's own tokens are cut off. When
    the boundary merges (the anchor's tokens change), the continuation is
    tokenized alone: the prompt's tokens must stay exactly as sent.
    """
    base = encode(anchor)
    full = encode(anchor + continuation)
    if full[: len(base)] == base:
        return tuple(full[len(base) :])
    return tuple(encode(continuation))


def block_padding(prompt_len: int, block_size: int) -> int:
    """Tokens that end a prompt on a KV-cache block boundary (0 when aligned or disabled).

    vLLM's prefix cache keeps whole blocks only, so every deeper trie read of an
    unaligned prompt recomputes the prompt's last partial block. Aligned, a read
    computes just its own label-prefix tokens.
    """
    return (-prompt_len) % block_size if block_size > 1 else 0


def resolve_mode(mode: Mode, label_ids: Sequence[TokenIds]) -> Mode:
    """AUTO is FIRST_TOKEN when every label's first token is unique, else FULL.

    A unique first token already names its label (the prompt lists the labels,
    so the rest of the label is all but certain), and one read is the cheapest.
    """
    if mode is not Mode.AUTO:
        return mode
    first_tokens = [ids[0] for ids in label_ids]
    return Mode.FIRST_TOKEN if len(set(first_tokens)) == len(first_tokens) else Mode.FULL


def plan_reads(label_ids: Sequence[TokenIds], mode: Mode) -> list[Read]:
    """The reads a mode needs: the root for FIRST_TOKEN, every internal trie node for FULL
    (PRUNED does a subset of FULL's, chosen per text: see ``nodes_to_read``)."""
    if mode is Mode.AUTO or mode is Mode.PRUNED:
        raise ValueError(f"{mode.value} has no fixed read plan")
    children: dict[TokenIds, set[int]] = {}
    for ids in label_ids:
        depth = 1 if mode is Mode.FIRST_TOKEN else len(ids)
        for i in range(depth):
            children.setdefault(tuple(ids[:i]), set()).add(ids[i])
    reads = []
    # Shorter prefixes first: their reads warm the prefix cache for deeper ones.
    for prefix in sorted(children, key=lambda p: (len(p), p)):
        candidates = sorted(children[prefix])
        for start in range(0, len(candidates), MAX_CANDIDATES_PER_READ):
            chunk = tuple(candidates[start : start + MAX_CANDIDATES_PER_READ])
            reads.append(Read(prefix, chunk))
    return reads


def label_paths(label_ids: Sequence[TokenIds]) -> tuple[TokenIds, ...]:
    """The label paths whose prompt log-probs cover every deeper trie node: each label of
    two or more tokens that is not the start of a longer label (that one's path covers it)."""
    longer = [ids for ids in label_ids if len(ids) > 1]
    return tuple(
        ids
        for ids in dict.fromkeys(longer)
        if not any(len(o) > len(ids) and o[: len(ids)] == ids for o in longer)
    )


def path_logprobs(
    path: TokenIds, rows: Sequence[Mapping[int, float]]
) -> dict[TokenIds, dict[int, float]]:
    """The trie-keyed log-probs one path request gives: ``rows[j]`` holds the log-prob of
    ``path[j + 1]`` after ``path[: j + 1]`` (the first token comes from the root read)."""
    return {path[: j + 1]: {path[j + 1]: row[path[j + 1]]} for j, row in enumerate(rows)}


def label_token_logprobs(
    label_ids: Sequence[TokenIds],
    mode: Mode,
    read_logprobs: Mapping[TokenIds, Mapping[int, float]],
) -> list[list[float]]:
    """Each label's per-token log-probabilities from the reads' results (keyed by prefix)."""
    out = []
    for ids in label_ids:
        depth = 1 if mode is Mode.FIRST_TOKEN else len(ids)
        out.append([read_logprobs[tuple(ids[:i])][ids[i]] for i in range(depth)])
    return out


def node_reads(reads: Sequence[Read]) -> dict[TokenIds, tuple[Read, ...]]:
    """FULL's deeper reads by the trie node they read: PRUNED's units of work (a node whose
    children exceed one read's candidates has several). The root is read before any."""
    out: dict[TokenIds, list[Read]] = {}
    for read in reads:
        if read.prefix:
            out.setdefault(read.prefix, []).append(read)
    return {prefix: tuple(group) for prefix, group in out.items()}


def known_chain(
    ids: TokenIds, read_logprobs: Mapping[TokenIds, Mapping[int, float]]
) -> list[float]:
    """The log-probabilities of a label's tokens as far as the reads go: its whole chain once
    every node on its path is read, else the tokens before the first unread node."""
    tokens = []
    for i in range(len(ids)):
        row = read_logprobs.get(tuple(ids[:i]))
        if row is None or ids[i] not in row:
            break
        tokens.append(row[ids[i]])
    return tokens


def nodes_to_read(
    label_ids: Sequence[TokenIds],
    read_logprobs: Mapping[TokenIds, Mapping[int, float]],
    readable: Mapping[TokenIds, object],
    score: Callable[[int, float], float],
) -> list[TokenIds]:
    """Unread trie nodes (best bound first) under which a label could still outscore, or tie,
    the best label known exactly: the branch and bound step of PRUNED.

    ``score(i, logprob)`` turns label ``i``'s log-probability into what is ranked (length
    normalization, calibration offset); it must not decrease as the log-probability grows.
    A label's log-probability is at most that of the tokens read so far (the rest only
    multiplies by probabilities <= 1), so the read part of its path bounds it; each unread
    node is bounded by its best label. ``readable`` holds the nodes not yet read
    (``node_reads`` of FULL's plan, minus those read).
    """
    best_known = -math.inf
    bounds: dict[TokenIds, float] = {}
    for i, ids in enumerate(label_ids):
        chain = known_chain(ids, read_logprobs)
        if len(chain) == len(ids):
            best_known = max(best_known, score(i, math.fsum(chain)))
            continue
        node = tuple(ids[: len(chain)])
        if node in readable:
            bound = score(i, math.fsum(chain))
            bounds[node] = max(bounds.get(node, -math.inf), bound)
    ranked = sorted(bounds, key=bounds.__getitem__, reverse=True)
    # A bound equal to the best is read too: bf16 log-probs are coarse, and ties are common.
    return [node for node in ranked if bounds[node] >= best_known]


def estimated_logprobs(
    label_ids: Sequence[TokenIds], read_logprobs: Mapping[TokenIds, Mapping[int, float]]
) -> tuple[list[list[float]], dict[int, float]]:
    """Per-token log-probs of every label (as far as read), and estimates for the labels not
    read to their end.

    A label read whole gets its exact chain; another gets the tokens read before its first
    unread node, and its sequence log-probability is estimated as that node's probability
    shared evenly by the labels under it (what is known: together they hold at most that).
    """
    chains = [known_chain(ids, read_logprobs) for ids in label_ids]
    unread_at = {  # label -> its first unread node
        i: tuple(ids[: len(chain)])
        for i, (ids, chain) in enumerate(zip(label_ids, chains, strict=True))
        if len(chain) < len(ids)
    }
    sharing = Counter(unread_at.values())
    estimates = {i: math.fsum(chains[i]) - math.log(sharing[node]) for i, node in unread_at.items()}
    return chains, estimates


def merge_reads(
    results: Sequence[tuple[Read, Mapping[int, float]]],
) -> dict[TokenIds, dict[int, float]]:
    """Joins the logprobs of reads that share a prefix (labels split over several reads)."""
    merged: dict[TokenIds, dict[int, float]] = {}
    for read, logprobs in results:
        merged.setdefault(read.prefix, {}).update(logprobs)
    return merged


def close_prefix_labels(label_ids: Sequence[TokenIds], closing_id: int) -> tuple[TokenIds, ...]:
    """Labels whose tokens begin another label's end with the token that closes the answer.

    P(" alarm") holds every continuation of " alarm", " alarm_set" included, so the shorter
    label could never lose to the longer. Read as " alarm" + end-of-answer it is the complete
    answer "alarm". The extra token sits where the trie already reads (the longer label's
    next token), so it costs no read.
    """
    label_set = list(label_ids)
    closed = []
    for ids in label_set:
        is_prefix = any(len(other) > len(ids) and other[: len(ids)] == ids for other in label_set)
        closed.append((*ids, closing_id) if is_prefix else tuple(ids))
    return tuple(closed)
