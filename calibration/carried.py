"""A state the model carries from one call to the next, measured as a stream runs it.

A streaming model takes its previous call's state as an input and gives the next one as an output (silero VAD's
'state' -> 'stateN', an RNN's 'h0' / 'c0' -> 'hN' / 'cN', a streaming conv's 'cache' -> 'new_cache'). Its data is
recorded one call a feed, each feed holding the state the input model had then; every figure of a run judges one
call at a time from that recorded state. Deployed, the pruned model reads its own state, and its error carried in
the state adds up over the calls: silero VAD at 1.06x (the corpus's 180 chunks) moved its state 0.28% one call at
a time and 0.93% streamed over 3,448 chunks of other speech, its speech probability 0.0003 and 0.0011 on average
(session 50, /tmp/s50/vad/stream.py); the voice filter of real models 49, 0.06% -> 0.16%.

`state_pairs` finds the input an output is fed back to: the same shape and dtype in a call, and names that differ
only by the words a state's two ends carry ('in'/'out', '0'/'N', 'past'/'new', ...). Only feeds recorded one after
another count as a stream: a feed `follows` the one before when its state is the input model's output of that call
(the way such data is recorded). Run in file order across feeds that do not follow each other (silero's corpus
chunks: every k-th chunk of twelve utterances), the state is carried between unrelated calls and the figures are
no stream's: 1.48 pp on the speech probability where consecutive chunks of other speech moved 0.11 pp.
`carried_run` runs the feeds in order, each that follows another reading the model's own state.

A decoder's cache grows from call to call (a GPT's `past_key_values.*` -> `present.*`, `[N, H, P, D]` in and
`[N, H, P + T, D]` out; a step's stacked `cache` -> `new_cache`): no output has its input's shape in one call, so
`value_pairs` reads the pairs from two consecutive feeds instead (an input that holds, as it is, an output of the
call before). A greedy decoder also feeds back a token: `token_pairs` finds an integer input that holds the argmax of
an output of the call before (at its last position), and `decoded_run` runs each stream feeding the written model its
own picks where the input model's were fed (a token that is not the input model's pick, a prompt's, was forced and
stays). One call at a time from the input model's tokens, a changed pick changes one call; decoded, every call after
it: real models 53's Keras seq2seq decoder, 0.22 pp of steps changed, 5.9% of held-out words.

A decoder without a cache feeds back neither a state nor a token alone: each call is fed its whole context, the call
before's with that call's pick behind it (a GPT exported without `past_key_values`: `input_ids [N, T]` then `[N, T +
1]`, `logits [N, T, V]`). `context_pairs` finds such an input, paired with itself ({input: input}, a context that
grows); `follows` reads it against the call before's input, which the reading keeps among that call's outputs under
the input's name (`with_context`), `token_view` gives its last column as the fed-back token, and `decoded_run` feeds
the written model its own context grown by its own picks. Decoders 56: within 1 pp a call over every position, such
a GPT changed 18.8% of 160 held-out decodes and no note said it was a decoder.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np

IN_WORDS = frozenset({"in", "input", "inp", "prev", "previous", "past", "old", "last", "init", "initial", "0"})
OUT_WORDS = frozenset({"out", "output", "next", "new", "n", "present", "cur", "current", "1", "final", "updated"})
_BOUNDARY = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Za-z])(?=[0-9])|(?<=[0-9])(?=[A-Za-z])|[^A-Za-z0-9]+")


def words(name: str) -> list[str]:
    """`name`'s words, lower case: split at punctuation, at a lower-to-upper case change and between letters and
    digits ('stateN' -> state, n; 'h0' -> h, 0); a two-letter name ending in 'n' is a letter and 'n' ('hn')."""
    out = [w.lower() for w in _BOUNDARY.split(name) if w]
    if len(out) == 1 and len(out[0]) == 2 and out[0].endswith("n"):
        out = [out[0][0], "n"]
    return out


def core(name: str, affixes: frozenset) -> tuple[str, ...]:
    """`name`'s words without the leading and trailing `affixes`: () when nothing else is left."""
    w = words(name)
    while w and w[0] in affixes:
        w = w[1:]
    while w and w[-1] in affixes:
        w = w[:-1]
    return tuple(w)


def state_pairs(feed: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> dict[str, str]:
    """{input: output} of the states a call gives back for the next: an output of the same shape and dtype as an
    input of `feed` (its value in this call, `outputs`), named as the input is but for IN_WORDS / OUT_WORDS at
    either end; an input or output that two such names could pair is left out (no guess)."""
    found: dict[str, list[str]] = {}
    for i, x in feed.items():
        ci = core(i, IN_WORDS)
        if not ci or not isinstance(x, np.ndarray):
            continue
        for o, y in outputs.items():
            if o == i or not isinstance(y, np.ndarray) or y.shape != x.shape or y.dtype != x.dtype:
                continue
            if core(o, OUT_WORDS) == ci:
                found.setdefault(i, []).append(o)
    return _unique(found)


def _unique(found: dict[str, list[str]]) -> dict[str, str]:
    """{input: output} of the inputs with one candidate output that no other input has too."""
    pairs = {i: outs[0] for i, outs in found.items() if len(outs) == 1}
    taken = list(pairs.values())
    return {i: o for i, o in pairs.items() if taken.count(o) == 1}


def follows(previous: dict[str, np.ndarray], feed: dict[str, np.ndarray], pairs: dict[str, str]) -> bool:
    """Whether `feed` is the call after the one that gave `previous` (the input model's outputs): each pair's input
    holds that output (within float noise: the data may have been recorded by another onnxruntime build); a context
    that grows (a pair of an input with itself, `context_pairs`) holds the call before's, as `previous` keeps it
    (`with_context`), with one token behind it."""
    for i, o in pairs.items():
        x, y = np.asarray(feed.get(i)), previous.get(o)
        if i == o:
            if y is None or not _grown(np.asarray(y), x):
                return False
            continue
        if y is None or x.shape != y.shape or x.dtype != y.dtype:
            return False
        if x.size and not np.allclose(x, y, rtol=1e-3, atol=1e-5 * max(1.0, float(np.max(np.abs(y))))):
            return False
    return True


def declared_pairs(model) -> dict[str, str]:
    """{input: output} as `state_pairs` reads them from the shapes and types the model declares, before any data:
    the same element type and rank, equal dims where both are fixed (silero declares 'state' [2, ?, 128] and
    'stateN' [?, ?, ?]), names that differ only by a state's end words; `inspect` says them."""
    stored = {t.name for t in model.graph.initializer}  # old IRs list them as inputs too (no onnxruntime for inspect)
    inputs = {vi.name for vi in model.graph.input if vi.name not in stored}
    found: dict[str, list[str]] = {}
    for vi in model.graph.input:
        have = _declared(vi) if vi.name in inputs else None
        ci = core(vi.name, IN_WORDS)
        if have is None or not ci or not have[1]:
            continue
        for out in model.graph.output:
            give = _declared(out)
            if out.name == vi.name or give is None or give[0] != have[0] or len(give[1]) != len(have[1]):
                continue
            if all(not isinstance(a, int) or not isinstance(b, int) or a == b for a, b in zip(have[1], give[1])) \
                    and core(out.name, OUT_WORDS) == ci:
                found.setdefault(vi.name, []).append(out.name)
    return _unique(found)


KV_IN = (("past", "key", "values"), ("past", "key", "value"), ("past",))  # a cache's input words before its layer's
KV_OUT = (("present",),)  # ... and its output's: Hugging Face's 'past_key_values.0.key' -> 'present.0.key'
STATE_WORDS = frozenset({"state", "hidden", "cache", "memory"})  # an input so named may be a state, by shape alone
GENERIC = frozenset({"input", "inp", "0"})  # words any input may carry (Keras's 'input_2'): no state's evidence alone
FLOATS = frozenset({1, 10, 11, 16})  # float, float16, double, bfloat16 (onnx.TensorProto's element types)
INTEGERS = frozenset({2, 3, 4, 5, 6, 7, 12, 13})  # uint8 .. int64, uint32, uint64


def _declared(vi):
    """(element type, dims: an int where fixed, a symbol's name or None where open) of a value's declared type."""
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
        return None
    return tt.elem_type, [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None)
                          for d in tt.shape.dim]


def _after(name: str, phrases) -> tuple[str, ...] | None:
    """`name`'s words after the first of `phrases` it starts with (None: none)."""
    w = tuple(words(name))
    for ph in phrases:
        if w[:len(ph)] == ph:
            return w[len(ph):]
    return None


def declared_feedback(model) -> dict[str, dict[str, str]]:
    """What a decoder or a stream feeds back from one call to the next, read from the names and shapes the model
    declares (no data, no onnxruntime: `inspect` says it): "states" `declared_pairs` of one declared shape; "caches"
    {input: output} of a cache that grows: such a pair whose one open axis but the first has two names ('cache' [L,
    N, H, 'P', D] -> 'new_cache' [.., 'P1', ..]), or named as Hugging Face's ('past_key_values.0.key' ->
    'present.0.key'; 'past' -> 'present'), the same type and rank, dims equal but on one axis open in the input (its
    length); "shaped" {input: output} of a float input named as a state ('state_in', 'hidden') whose one output of
    its declared type and shape no name pairs (tf2onnx's Keras GRU step: 'state_in' -> 'gru'); and, beside any of
    those, "tokens" {input: output} of an integer input [N], [N, 1] or [N, S] and the one other float output [N, (S,)
    V] (V fixed, 2 or more) it may take the argmax of (a greedy decoder's token). Decoders 54: `inspect` named only
    the GPT step's stacked cache."""
    stored = {t.name for t in model.graph.initializer}
    ins = [(vi.name, _declared(vi)) for vi in model.graph.input if vi.name not in stored]
    outs = [(vi.name, _declared(vi)) for vi in model.graph.output]
    ins = [(n, d) for n, d in ins if d is not None]
    outs = [(n, d) for n, d in outs if d is not None]
    states = dict(declared_pairs(model))
    grows: dict[str, list[str]] = {}
    for i, (ti, di) in ins:
        ci = _after(i, KV_IN)
        if ci is None or i in states or not di:
            continue
        for o, (to, do) in outs:
            if to != ti or len(do) != len(di) or _after(o, KV_OUT) != ci:
                continue
            differ = [a for a, (x, y) in enumerate(zip(di, do)) if x != y]
            if len(differ) <= 1 and all(not isinstance(di[a], int) for a in differ):
                grows.setdefault(i, []).append(o)
    caches = _unique(grows)
    shapes = dict(ins + outs)
    for i, o in list(states.items()):  # one open axis but the first named otherwise ('cache' P -> P1): grows
        differ = [a for a, (x, y) in enumerate(zip(shapes[i][1], shapes[o][1])) if x != y]
        if len(differ) == 1 and differ[0] > 0 and all(isinstance(shapes[n][1][differ[0]], str) for n in (i, o)):
            caches[i] = states.pop(i)
    taken = set(states) | set(caches) | set(states.values()) | set(caches.values())
    shaped: dict[str, list[str]] = {}
    for i, (ti, di) in ins:
        if i in taken or ti not in FLOATS or not di or not STATE_WORDS & set(words(i)) \
                and not (core(i, IN_WORDS) and set(words(i)) & (IN_WORDS - GENERIC)):
            continue
        same = [o for o, (to, do) in outs if o not in taken and to == ti and len(do) == len(di)
                and all(x == y or not isinstance(x, int) and not isinstance(y, int) for x, y in zip(di, do))]
        if len(same) == 1:
            shaped.setdefault(i, []).append(same[0])
    shaped = _unique(shaped)
    taken |= set(shaped) | set(shaped.values())
    cells = {i: o for i, o in _cell_states(model).items() if i not in taken and o not in taken}
    taken |= set(cells) | set(cells.values())
    found = {"states": states, "caches": caches, "shaped": shaped, "cells": cells, "tokens": {}, "one_hot": {}}
    if not (states or caches or shaped or cells):
        return found
    for i, (ti, di) in ins:
        if ti not in INTEGERS or len(di) not in (1, 2) or len(di) == 2 and di[1] not in (1, None) \
                and isinstance(di[1], int):
            continue
        logits = [o for o, (to, do) in outs if o not in taken and to in FLOATS and len(do) in (2, 3)
                  and isinstance(do[-1], int) and do[-1] >= 2 and not isinstance(do[0], int)]
        if len(logits) == 1:
            found["tokens"][i] = logits[0]
    if len(found["tokens"]) > 1:  # two integer inputs: which one is fed back is no guess
        found["tokens"] = {}
    if not found["tokens"]:  # a float input [N, (T,) V] of the one float output's V: its pick fed back one-hot
        for i, (ti, di) in ins:
            if i in taken or ti not in FLOATS or len(di) not in (2, 3) or not isinstance(di[-1], int) or di[-1] < 2:
                continue
            same = [o for o, (to, do) in outs if o not in taken and to == ti and len(do) == len(di)
                    and do[-1] == di[-1]]
            if len(same) == 1:
                found["one_hot"][i] = same[0]
        if len(found["one_hot"]) > 1:
            found["one_hot"] = {}
    return found


def causal_lm(model) -> tuple[str, str] | None:
    """(token input, output) of a model that looks like a causal language model fed its whole context each call: an
    integer input [N, T] and a float output [N, T, V] whose first two axes are open and, where both are named, named
    alike, V the rows of the embedding table the input's ids pick (a Gather of a [V, D] initializer, through
    PASS_OPS): a distribution over the vocabulary it reads; nothing declared fed back (`declared_feedback`: no cache,
    no state). None otherwise: a tagger's [N, T, labels] is no vocabulary. Declared shapes and the graph only."""
    stored = {t.name: list(t.dims) for t in model.graph.initializer}
    found = declared_feedback(model)
    if any(found[k] for k in ("states", "caches", "shaped", "cells")):
        return None
    outs = [(vi.name, _declared(vi)) for vi in model.graph.output]
    for vi in model.graph.input:
        d = None if vi.name in stored else _declared(vi)
        if d is None or d[0] not in INTEGERS or len(d[1]) != 2 or any(isinstance(a, int) for a in d[1]):
            continue
        vocab = _vocabularies(model, vi.name, stored)
        for o, do in outs:
            if do is None or do[0] not in FLOATS or len(do[1]) != 3 or do[1][2] not in vocab \
                    or any(isinstance(a, int) for a in do[1][:2]):
                continue
            if all(a is None or b is None or a == b for a, b in zip(d[1], do[1][:2])):
                return vi.name, o
    return None


def _vocabularies(model, name: str, stored: dict[str, list[int]]) -> set[int]:
    """The row counts of the [V, D] initializers a main-graph Gather picks rows of by `name`'s ids (through
    PASS_OPS): the vocabularies an id input reads."""
    ids, found = {name}, set()
    for n in model.graph.node:  # graph order: a Cast of the ids comes before the Gather that reads it
        if n.op_type in PASS_OPS and n.input and n.input[0] in ids:
            ids.update(n.output)
        elif n.op_type == "Gather" and len(n.input) > 1 and n.input[1] in ids and len(stored.get(n.input[0], ())) == 2:
            found.add(stored[n.input[0]][0])
    return found


CELL_STATES = {"LSTM": ((5, 1), (6, 2)), "GRU": ((5, 1),), "RNN": ((5, 1),)}  # (initial state input, its output)
PASS_OPS = frozenset({"Unsqueeze", "Squeeze", "Identity", "Reshape", "Cast"})  # a state's axes as exporters wrap them


def _cell_states(model) -> dict[str, str]:
    """{input: output} of a recurrent node's states fed back through the graph's ends: a graph input that is, through
    PASS_OPS, an LSTM/GRU/RNN node's initial_h (initial_c) and the one graph output its Y_h (Y_c) reaches so (real
    models 53's g2p_id Keras decoder, tf2onnx: 'input_3' -> Unsqueeze -> LSTM initial_h, Y_h -> Squeeze -> 'lstm_1',
    'input_4' / 'lstm_1_1' as c: two inputs of one shape whose names pair by no word). Main graph only."""
    graph = model.graph
    made = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list] = {}
    for n in graph.node:
        for x in n.input:
            readers.setdefault(x, []).append(n)
    stored = {t.name for t in graph.initializer}
    inputs = {vi.name for vi in graph.input if vi.name not in stored}
    outputs = {vi.name for vi in graph.output}

    def source(name: str) -> str:
        for _ in range(8):
            if name not in made or made[name].op_type not in PASS_OPS:
                break
            name = made[name].input[0]
        return name

    def sinks(name: str) -> set[str]:
        found, todo = set(), [(name, 0)]
        while todo:
            x, depth = todo.pop()
            if x in outputs:
                found.add(x)
            if depth < 8:
                todo += [(n.output[0], depth + 1) for n in readers.get(x, []) if n.op_type in PASS_OPS
                         and n.input[0] == x]
        return found

    pairs: dict[str, list[str]] = {}
    for n in graph.node:
        for k, j in CELL_STATES.get(n.op_type, ()):
            if len(n.input) <= k or not n.input[k] or len(n.output) <= j or not n.output[j]:
                continue
            src, ends = source(n.input[k]), sinks(n.output[j])
            if src in inputs and len(ends) == 1:
                pairs.setdefault(src, []).append(ends.pop())
    return _unique(pairs)


def feedback_words(found: dict[str, dict[str, str]]) -> str:
    """`declared_feedback`'s pairs in words: "'present.0.key' as 'past_key_values.0.key' (a cache that grows), ..."."""
    said = [f"'{o}' as '{i}' (a cache that grows)" for i, o in found.get("caches", {}).items()]
    said += [f"'{o}' as '{i}' (a state)" for i, o in found.get("states", {}).items()]
    said += [f"'{o}' as '{i}' (a state, by its declared shape: the names do not say)"
             for i, o in found.get("shaped", {}).items()]
    said += [f"'{o}' as '{i}' (a state: the recurrent node's initial state and its last)"
             for i, o in found.get("cells", {}).items()]
    said += [f"the argmax of '{o}' as '{i}' (a greedy decoder's token, if it decodes so)"
             for i, o in found.get("tokens", {}).items()]
    said += [f"the one-hot of the argmax of '{o}' as '{i}' (a greedy decoder's token, if it decodes so: the same "
             "width as that output)" for i, o in found.get("one_hot", {}).items()]
    return ", ".join(said)


def carried_run(session, feeds, pairs: dict[str, str], wanted: list[str], after: list[bool]) -> list[tuple]:
    """Each call's outputs `wanted` (a tuple a feed) of `feeds` run in order through `session`, a feed whose
    `after` is True taking each pair's input from the call before (the model's own state), the others their own."""
    names = list(dict.fromkeys(list(wanted) + list(pairs.values())))
    inputs = {i.name for i in session.get_inputs()}
    outs, last = [], None
    for feed, chained in zip(feeds, after, strict=True):
        feed = {k: v for k, v in feed.items() if k in inputs}
        if chained and last is not None:
            feed.update({i: last[o] for i, o in pairs.items()})
        last = dict(zip(names, session.run(names, feed)))
        outs.append(tuple(last[n] for n in wanted))
    return outs


def streams(after: list[bool]) -> list[int]:
    """The indices of the feeds in a stream of two calls or more (`after[k]`: feed k follows feed k - 1)."""
    keep, start = [], 0
    for k in range(1, len(after) + 1):
        if k == len(after) or not after[k]:
            if k - start >= 2:
                keep.extend(range(start, k))
            start = k
    return keep


def value_pairs(previous: dict[str, np.ndarray], feed: dict[str, np.ndarray]) -> dict[str, str]:
    """{input: output} of the float inputs of `feed` that hold, within float noise, an output of the call before
    (`previous`, the input model's outputs): a cache that grows, whose two ends differ in shape within a call. An empty
    value is no evidence; an input two outputs could be is left out (no guess)."""
    found: dict[str, list[str]] = {}
    for i, x in feed.items():
        if not isinstance(x, np.ndarray) or x.dtype.kind != "f" or not x.size:
            continue
        for o, y in previous.items():
            if isinstance(y, np.ndarray) and y.shape == x.shape and y.dtype == x.dtype and follows(previous, feed,
                                                                                                    {i: o}):
                found.setdefault(i, []).append(o)
    return _unique(found)


def _grown(before: np.ndarray, x: np.ndarray) -> bool:
    """Whether the integer `x` [N, T + 1] is `before` [N, T] (T >= 1) with one token behind it in every row."""
    return (x.dtype.kind in "iu" and x.ndim == 2 and before.ndim == 2 and before.size > 0
            and before.shape == (x.shape[0], x.shape[1] - 1) and np.array_equal(x[:, :-1], before))


def context_pairs(before: dict[str, np.ndarray], previous: dict[str, np.ndarray],
                  feed: dict[str, np.ndarray]) -> dict[str, str]:
    """{input: input} of the integer inputs [N, T + 1] of `feed` that hold the call before's (`before`, its feed) with,
    behind it, the argmax of an output of that call at its last position (`previous`, its outputs: `token_pairs` on the
    last column): the context of a decoder without a cache, grown by its own pick each call."""
    grown = [i for i, x in feed.items() if isinstance(x, np.ndarray) and isinstance(before.get(i), np.ndarray)
             and _grown(before[i], x)]
    return {i: i for i in grown if token_pairs(previous, {i: feed[i][:, -1:]})}


def with_context(outputs: dict[str, np.ndarray], feed: dict[str, np.ndarray], pairs: dict[str, str]) -> dict:
    """A call's `outputs` with, under its name, each context input it was fed (a pair of an input with itself): what
    the next call's context grows from (`follows`)."""
    return {**outputs, **{i: feed[i] for i, o in pairs.items() if i == o and i in feed}}


def token_view(feed: dict[str, np.ndarray], pairs: dict[str, str]) -> dict[str, np.ndarray]:
    """`feed` with each context that grows (a pair of an input with itself) given as its last column [N, 1], the token
    the call before picked: what `token_pairs`, `kept_picks` and `_fed_picks` read."""
    grown = [i for i, o in pairs.items() if i == o and np.ndim(feed.get(i)) == 2]
    return {**feed, **{i: np.asarray(feed[i])[:, -1:] for i in grown}} if grown else feed


def prompt_positions(feeds, outputs, tokens: dict[str, str]) -> list[str]:
    """The fed-back outputs of `tokens` ({token input: output}) that some call scores a position a token of: fed
    several tokens at once ([N, S], S >= 2: a KV decoder's prompt), the output is [N, S, ...] there, and its last
    position holds the pick (`picks`). Each of its other positions reads the prompt up to a token no decode keeps
    (decoders 57's L2: a GPT's first call judged on every position of its prompt). `feeds` as `token_view` gives
    them, `outputs` each call's outputs."""
    found = []
    for i, o in tokens.items():
        for feed, out in zip(feeds, outputs):
            x, y = np.shape(feed.get(i)), np.shape(out.get(o))
            if len(x) == 2 and x[1] >= 2 and len(y) >= 3 and tuple(y[:2]) == tuple(x):
                found.append(o)
                break
    return list(dict.fromkeys(found))


def picks(value: np.ndarray, shape: tuple) -> np.ndarray | None:
    """The argmax over the last axis of an output `value` `[N, (T,) C]` at its last position, as `shape` (a token
    input's: `[N]` or `[N, 1]`), or None where it cannot be one."""
    if not isinstance(value, np.ndarray) or value.dtype.kind != "f" or value.ndim < 2 or value.shape[-1] < 2:
        return None
    top = value.argmax(-1)
    if top.ndim >= 2:
        top = top.reshape(top.shape[0], -1)[:, -1]
    n = int(np.prod(shape)) if shape else 1
    return top.reshape(shape) if top.size == n and shape and shape[0] == top.shape[0] else None


def one_hot(x: np.ndarray) -> bool:
    """Whether `x` is a float [N, V] or [N, 1, V] of one-hot rows (a token fed back as the one-hot of its id: real
    models 53's g2p_id Keras decoder's 'input_2')."""
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f" or x.ndim not in (2, 3) or x.shape[-1] < 2 or not x.size \
            or (x.ndim == 3 and x.shape[1] != 1):
        return False
    return bool(np.isin(x, (0.0, 1.0)).all() and (x.sum(-1) == 1).all())


def token_ids(x: np.ndarray) -> np.ndarray:
    """A fed token's ids: the input itself, or a one-hot input's argmax ([N] or [N, 1])."""
    return x.argmax(-1) if x.dtype.kind == "f" else x


def as_fed(ids: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Token ids given as the input `like` takes them: its dtype, or one-hot of its width."""
    if like.dtype.kind == "f":
        return np.eye(like.shape[-1], dtype=like.dtype)[ids.reshape(like.shape[:-1])]
    return ids.reshape(like.shape).astype(like.dtype)


def token_pairs(previous: dict[str, np.ndarray], feed: dict[str, np.ndarray]) -> dict[str, str]:
    """{input: output} of the integer inputs of `feed` that hold, in every row, the argmax of an output of the call
    before (`picks`), or the float inputs that hold its one-hot (`one_hot`): a greedy decoder's fed-back token."""
    found: dict[str, list[str]] = {}
    for i, x in feed.items():
        if isinstance(x, np.ndarray) and one_hot(x):
            x = token_ids(x)
        elif not isinstance(x, np.ndarray) or x.dtype.kind not in "iu" or not x.size or x.ndim > 2 or \
                (x.ndim == 2 and x.shape[1] != 1):
            continue
        for o, y in previous.items():
            top = picks(y, x.shape)
            if top is not None and np.array_equal(top, x):
                found.setdefault(i, []).append(o)
    return _unique(found)


def decoded_run(session, feeds, pairs: dict[str, str], tokens: dict[str, str], after: list[bool],
                dense: list[dict]) -> dict:
    """A greedy decoder run over `feeds` as it decodes: a feed that follows the one before takes each pair's state
    from the model's own call before and, for each `tokens` pair, the model's own pick where the input model's pick
    was fed (`dense[k]`, the input model's outputs on feed k): in each row of a stream, from the last call whose
    recorded token is not the input model's pick of the call before (a prompt stepped in: forced) to the stream's
    end. Counted are the picks a decode keeps: those the next call is fed, and each stream's last. Returns
    {"sequences", "changed", "tokens", "tokens_changed", "one_call_changed"}: rows of the streams whose kept picks
    differ from the input model's anywhere, the kept picks that differ decoded, and those that differ run one call
    at a time from the input model's tokens and states. A context that grows (a pair of an input with itself,
    `context_pairs`) is the model's own context of the call before with its own pick, or the recorded token where
    that is forced, behind it."""
    fed = _fed_picks([token_view(f, pairs) for f in feeds], tokens, after, dense)
    names = list(dict.fromkeys([o for i, o in pairs.items() if i != o] + list(tokens.values())))
    inputs = {i.name for i in session.get_inputs()}
    last, counts = None, {"sequences": 0, "changed": 0, "tokens": 0, "tokens_changed": 0, "one_call_changed": 0}
    row_changed = None
    for k, feed in enumerate(feeds):
        feed = {n: v for n, v in feed.items() if n in inputs}
        alone = with_context(dict(zip(names, session.run(names, feed))), feed, pairs)
        if after[k] and last is not None:  # else the call as recorded is the decoded one too
            feed.update({i: last[o] for i, o in pairs.items() if i != o})
            for i, o in tokens.items():
                if fed[k][i] is not None:
                    ids = token_ids(token_view(feed, pairs)[i])
                    ids = np.where(fed[k][i], picks(last[o], ids.shape), ids)
                    feed[i] = (np.concatenate([last[i], ids.astype(feed[i].dtype)], axis=1) if pairs.get(i) == i
                               else as_fed(ids, feed[i]))
            last = with_context(dict(zip(names, session.run(names, feed))), feed, pairs)
        else:
            last = alone
        ends = k + 1 == len(feeds) or not after[k + 1]
        for i, o in tokens.items():
            rows = (np.shape(feeds[k][i]) or (1,))[:1]
            ref = picks(dense[k][o], rows)  # a row's pick (a prompt's first call takes [N, S] tokens)
            if ref is None:
                continue
            kept = np.ones(ref.shape, bool) if ends else fed[k + 1][i]
            if kept is None:
                continue
            kept = kept.reshape(ref.shape)
            own, one = picks(last[o], ref.shape), picks(alone[o], ref.shape)
            diff = (own != ref) & kept
            counts["tokens"] += int(kept.sum())
            counts["tokens_changed"] += int(diff.sum())
            counts["one_call_changed"] += int(((one != ref) & kept).sum())
            row_changed = diff if row_changed is None else row_changed | diff
        if ends and row_changed is not None:
            counts["sequences"] += int(row_changed.size)
            counts["changed"] += int(row_changed.sum())
            row_changed = None
    return counts


def kept_picks(feeds, tokens: dict[str, str], after: list[bool], dense: list[dict]) -> tuple[int, int]:
    """(sequences, picks) `decoded_run` counts on these feeds, from the input model's outputs alone (`dense[k]`, no
    written model): the rows of the streams and the picks their decodes keep (each fed to the next call, and each
    stream's last). picks / sequences is the recorded decodes' length, which a per-call budget is divided by to bound
    the share of decodes that change (converter/steps/verify.decoded_budget)."""
    fed = _fed_picks(feeds, tokens, after, dense)
    sequences = picks_kept = 0
    rows = None
    for k in range(len(feeds)):
        ends = k + 1 == len(feeds) or not after[k + 1]
        for i, o in tokens.items():
            ref = picks(dense[k][o], (np.shape(feeds[k][i]) or (1,))[:1])
            kept = None if ref is None else (np.ones(ref.shape, bool) if ends else fed[k + 1][i])
            if kept is not None:
                picks_kept += int(kept.sum())
                rows = int(kept.size)
        if ends and rows is not None:
            sequences += rows
            rows = None
    return sequences, picks_kept


def _fed_picks(feeds, tokens: dict[str, str], after: list[bool], dense: list[dict]) -> list[dict]:
    """For each feed and token input, where (a boolean array of the input's shape) the input model's pick of the call
    before is fed: the recorded token is that pick there and at every later call of the stream (None: not a pick).
    A call in which any row's token is not the pick is forced in every row: a batch's prompts are stepped in
    together (a decoder runs its rows in lockstep; padded prompts too), so a prompt's last tokens that happen to be
    the input model's picks stay forced (decoders 54's L4: the GPT step counted 1,752 decoded picks for 80
    sequences of 20, 1,600). Rows whose prompts end at different calls unpadded have their picks before the
    batch's last prompt token taken as forced: fewer picks counted, none invented."""
    fed: list[dict] = [{i: None for i in tokens} for _ in feeds]
    for k in range(len(feeds) - 1, 0, -1):
        if not after[k]:
            continue
        for i, o in tokens.items():
            x = token_ids(np.asarray(feeds[k][i]))
            top = picks(dense[k - 1][o], x.shape)
            if top is None:
                continue
            later = fed[k + 1][i] if k + 1 < len(feeds) and after[k + 1] else np.ones(x.shape, bool)
            fed[k][i] = np.full(x.shape, bool((x == top).all())) & (later if later is not None else False)
    return fed


def call_files(source, inputs: set[str], shared=()) -> tuple[list, int] | None:
    """(the .npz files of the folder `source` in the folder reader's order, their rows) when there are two or more
    and every input's first axis but the `shared` ones' holds the same number of rows in all of them: a decoder's
    calls recorded one file each, its batch-first state (`h` -> `h_out` `[N, H]`) and token stacked as samples by the
    reader, each file one call here (real models 53's Keras seq2seq decoder: its greedy decoding had not been
    measured). `shared`: inputs that hold one value a file (optimum's merged decoder's `use_cache_branch` [1], which
    made the reader cut each file into a feed a row: decoders 54's merged GPT had no decoding note)."""
    from pathlib import Path

    from onnxprune.calibration.feeds import npz_shapes
    from onnxprune.calibration.readers import data_files

    if not isinstance(source, (str, Path)) or not Path(source).is_dir():
        return None
    files = data_files(Path(source))
    if len(files) < 2 or any(p.suffix != ".npz" for p in files):
        return None
    rows = set()
    for p in files:
        shapes = npz_shapes(p) or {}
        rowed = [n for n in shapes if n in inputs and n not in shared]
        got = [shapes[n][0] for n in rowed if len(shapes[n])]
        if not got or len(got) != len(rowed):
            return None
        rows.update(got)
        if len(rows) > 1:
            return None
    return files, rows.pop()


def file_calls(files: list) -> Iterator[dict[str, np.ndarray]]:
    """Each of `files` (call_files') as one feed."""
    for p in files:
        with np.load(p) as z:
            yield {k: z[k] for k in z.files}
