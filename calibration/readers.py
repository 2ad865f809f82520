"""Calibration data readers: arrays from .npz files, folders, memory or a seeded generator, batched for onnxruntime.

Every reader speaks onnxruntime's calibration protocol (`get_next()` returns a feed dict or None, `rewind()` starts
over) and adds `batches()`, which yields `(feeds, labels or None)`. Data flows in chunks (one file, one dict) that
are cut into batches of exactly `batch_size` samples (the last one may be shorter):

    a.npz [700 samples]  b.npz [500]   --batch 512-->   [512] [188 + 324] [176]

Rules, all enforced with one `CalibrationError` that names the file, the array and the shapes:
  1. Arrays are named after the model inputs, first axis = samples; one optional labels array (default "labels").
  2. The first chunk is checked when the reader is opened (names, rank, fixed dims, dtype); later chunks when read.
  3. Safe casts (float64 -> float32, int32 -> int64, ...) are done and logged once; unsafe ones are errors.
  4. NaN/inf (NaN is a missing value where the model replaces it: `runtime.replaces_nan`), empty files, zero
     samples, pickled arrays (`allow_pickle=False`, always) are errors.
  5. Deterministic: the same source, batch size, limit and seed give the same batches, every time.
  6. A source whose arrays cannot be samples-first (a scalar input, inputs disagreeing on axis 0 in a file, an
     input whose other dims differ between files) is read one complete feed at a time, as is (calibration.feeds).
"""

from __future__ import annotations

import copy
import logging
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from onnxprune.calibration.feeds import (FeedChecker, FeedSource, _dims, feed_reason, npz_shapes, own_axis_inputs,
                                         reorder_hint, rows_interact, shared_stack, stacked_batches,
                                         time_major_inputs, time_major_stack)
from onnxprune.calibration.runtime import (DEFAULT_DYNAMIC_DIM, DEFAULT_INT_HIGH, InputSpec, declared_batch,
                                           input_specs, int_input_ranges, random_array, refuse_unfed, with_shapes)
from onnxprune.errors import CalibrationError, ConfigError
from onnxprune.plain import listed

log = logging.getLogger(__name__)

DEFAULT_LABELS = "labels"
DEFAULT_RANDOM_SAMPLES = 256
RANDOM_WARNING = (
    "CALIBRATION DATA IS RANDOM NOISE: every accuracy, agreement or sensitivity figure computed on it means "
    "NOTHING about the real model. Pass real samples (--data FILE.npz) for any decision that matters."
)


@dataclass
class Chunk:
    """A run of samples: arrays by name (first axis = samples), labels or None, and where they came from."""

    arrays: dict[str, np.ndarray]
    labels: np.ndarray | None
    where: str

    @property
    def n(self) -> int:
        return len(next(iter(self.arrays.values())))

    def slice(self, start: int, stop: int) -> Chunk:
        labels = None if self.labels is None else self.labels[start:stop]
        return Chunk({k: v[start:stop] for k, v in self.arrays.items()}, labels, self.where)


class DataReader:
    """Batches of feeds for one model; see the module docstring for the rules.

    `per_feed`: every batch is one complete feed as the source holds it (see calibration.feeds); `feed_note` says
    why."""

    per_feed = False
    feed_note = None  # why a per_feed reader reads feeds as they are: open_data says it once per run
    rows_note = None  # why a file's stacked rows were left whole (feeds.rows_interact): a warning, once per run
    one_sample_feeds = False  # per_feed, each feed one sample cut from a stack (a time-major file's sequences)
    sample_unit = None  # what one feed used as is stands for, where not "feed" ("request": `requests_reader`)
    whole_batches = False  # the model fixes a batch of more than 1 sample: a short last batch is left out
    feed_groups = None  # per_feed, a part split by group (`part`): each of its feeds' group, a decoder's stream
    row_groups = None  # ... not per_feed: each of its samples' group in order, a stacked decoder's decode
    _labels_dropped = False
    _feeds = None  # a calibration.feeds.FeedSource when per_feed
    _feed_check = None

    def __init__(self, chunks: Callable[[], Iterator[Chunk]], specs: list[InputSpec], *, batch_size: int,
                 limit: int | None, labels_name: str | None, num_samples: int | None, description: str,
                 is_random: bool = False, checker: _ChunkChecker | None = None):
        self._chunks = chunks
        self.specs = specs
        self.batch_size = batch_size
        self.limit = limit
        self.labels_name = labels_name
        self.is_random = is_random
        self.num_samples = num_samples if limit is None or num_samples is None else min(num_samples, limit)
        self.description = description
        self._check = checker or _ChunkChecker(specs, labels_name)
        self._cursor: Iterator[dict[str, np.ndarray]] | None = None
        self._every: int | None = None  # set by `part`: a validation split
        self._holdout = False
        self._groups: np.ndarray | None = None  # ... by group (`part`'s `groups`: a greedy decoder's decodes)

    @property
    def has_labels(self) -> bool:
        return self.labels_name is not None

    @property
    def split(self) -> tuple[int, bool] | None:
        """(every, holdout) when this reader is one side of a `part` split, else None."""
        return (self._every, self._holdout) if self._every else None

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.specs]

    def batches(self) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray | None]]:
        """A fresh pass over the data: (feeds, labels or None) per batch."""
        if self._labels_dropped:
            return ((feeds, None) for feeds, _ in self._batches())
        return self._batches()

    def without_labels(self) -> DataReader:
        """The same samples with their labels left out (labels that no output of the model can be scored or trained
        against: converter.steps.data drops them, and says so, before anything reads them)."""
        out = copy.copy(self)
        out.labels_name, out._cursor, out._labels_dropped = None, None, True
        if self.labels_name:
            said = f"labels '{self.labels_name}'"
            out.description = self.description.replace(said, f"{said} ignored")
        return out

    def _batches(self) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray | None]]:
        if self.per_feed:
            yield from self._feeds.feeds(self._feed_check, self.limit, self._every, self._holdout, self._groups)
            return
        checked = _take((self._check(c) for c in self._chunks()), self.limit)
        if self._every:  # --limit counts samples of the whole data, before the split
            checked = _every_nth(checked, self._every, self._holdout, self._groups)
        for chunk in _rebatch(checked, self.batch_size, self._check.values):
            if self.whole_batches and chunk.n < self.batch_size:
                used = self.description.rsplit(" -> ", 1)[-1]  # the part of the data, when split
                _say_left_out(self.batch_size, chunk.n, used)
                continue
            yield chunk.arrays, chunk.labels

    def part(self, every: int, holdout: bool, role: str | None = None, groups: np.ndarray | None = None,
             unit: str | None = None) -> DataReader:
        """Every `every`-th sample (`holdout`) or all the others: a split that needs no shuffling or copy up front.

        Sample i goes to the held-out part when i % every == 0, so both parts span the whole file. `role` says what
        the part is for in its description (default: every n-th "held out from retraining", the others nothing);
        the automatic plan trains on every n-th sample when the data is small (sweep 7: "75 used (every 4th
        sample, held out from retraining)" named the training part). `groups`: each sample's group by its index (a
        greedy decoder's calls, a decode each: converter/steps/verify.decoded_budget), sample i held out when
        groups[i] % every == 0, so a group is on one side (samples past the array by their own index); `unit` the
        group in words (of feeds used as they are, each feed's group: a decoder's calls, a stream each)."""
        if every < 2:
            raise ConfigError(f"a split needs every >= 2 (got {every}).")
        out = copy.copy(self)
        out._every, out._holdout, out._cursor = every, holdout, None
        out._groups = None if groups is None else np.asarray(groups, dtype=np.int64)  # a feed's, used as is
        if self.num_samples is not None:
            if out._groups is not None:
                n = self.num_samples
                ids = _group_ids(out._groups, 0, n)
                held = int(np.count_nonzero(ids % every == 0))
                # each feed's (sample's) group, in the part's order: the final exam's whole decodes
                if self.per_feed:
                    out.feed_groups = ids[(ids % every == 0) == holdout]
                else:
                    out.row_groups = ids[(ids % every == 0) == holdout]
            else:
                held = -(-self.num_samples // every)
            out.num_samples = held if holdout else self.num_samples - held
        nth = "every other" if every == 2 else f"every {every}{'rd' if every % 10 == 3 and every % 100 != 13 else 'th'}"
        if role is None:
            role = "held out from retraining" if holdout else ""
        unit = (unit if out._groups is not None and unit else self.sample_unit or "feed" if self.per_feed else
                "sample")  # a part of
        # feeds used as is is cut a feed at a time; a grouped one by its groups
        which = (f"{nth} {unit}" if holdout else f"all but {nth} {unit}") + (f", {role}" if role else "")
        count = "?" if out.num_samples is None else f"{out.num_samples:,}"
        out.description = f"{self.description} -> {count} used ({which})"
        return out

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return (feeds for feeds, _ in self.batches())

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._cursor is None:
            self._cursor = iter(self)
        return next(self._cursor, None)

    def rewind(self) -> None:
        self._cursor = None

    def __repr__(self) -> str:
        return f"DataReader({self.description}, batch {self.batch_size})"


def open_data(source, model: onnx.ModelProto, *, labels: str | None = None, batch_size: int = 64,
              limit: int | None = None, seed: int = 0, shapes: dict[str, tuple] | None = None,
              warn: bool = True) -> DataReader:
    """A DataReader over `source`: an .npz path, a folder of .npz/.npy, "random", a dict of arrays, or feed dicts;
    for a one-input model also an array (the dict of it) or a list of arrays (the feed dicts of them).

    `shapes` (--input-shape) fixes symbolic input dims (random data is drawn at them, real data checked against
    them); `warn=False` leaves out the random-data warning and the per-feed note (a run that opens its data
    again has said them once)."""
    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size} must be >= 1.")
    if limit is not None and limit < 1:
        raise ConfigError(f"sample limit {limit} must be >= 1 (or unset).")
    reader = _open(source, model, labels, batch_size, limit, seed, shapes, warn)
    if warn and reader.rows_note:  # the data holds fewer samples than its rows: the user should know why
        log.warning("%s", reader.rows_note)
    if warn and reader.feed_note:  # said once per run, like the random-data warning
        log.info("%s", reader.feed_note)
    elif warn and not reader.per_feed and reader.batch_size != batch_size:
        log.info("the model declares a fixed batch of %d; reading batches of %d samples", reader.batch_size,
                 reader.batch_size)
    return reader


def _open(source, model, labels, batch_size, limit, seed, shapes, warn) -> DataReader:
    specs = with_shapes(input_specs(model), shapes)
    refuse_unfed(specs)  # a map input: no data of ours feeds it
    batch_size = _batch_size_for(specs, batch_size)
    reader = _open_source(source, model, labels, batch_size, limit, seed, specs, warn)
    # a model that takes exactly N > 1 samples (a batch fixed in its inputs) cannot run a short last batch: a split
    # of --data left 132 of 176 samples to decide on, and the 4 after the last whole batch of 8 failed in onnxruntime
    reader.whole_batches = not reader.per_feed and (declared_batch(specs) or 0) > 1
    if reader.whole_batches and reader.num_samples is not None and reader.num_samples < reader.batch_size:
        raise CalibrationError(short_of_a_batch(reader.description, specs, reader.batch_size))
    return reader


def short_of_a_batch(what: str, specs: list[InputSpec], batch: int) -> str:
    """Why data with fewer samples than the batch a model's inputs fix cannot be read: real models 56's NYC
    weather LSTM declared [5942, 10, 5] (torch.onnx.export of its whole test set, no dynamic_axes); 440 windows
    gave two warnings that all of them were left out, then "no batches; the data is empty"."""
    fixed = [s for s in specs if s.shape and s.shape[0] == batch]
    name = fixed[0].name if fixed else "input"
    declared = listed([f"'{s.name}' {_dims(s.shape)}" for s in fixed]) or "its inputs"
    return (f"{what}: fewer samples than one batch: the model takes batches of exactly {batch} samples (it declares "
            f"{declared}) and onnxruntime runs it at no other batch size. Give {batch} samples or more to every "
            "part of the data a run reads (a run splits --data to retrain and to decide on), or export the model "
            f"with a dynamic batch axis (torch.onnx.export(..., dynamic_axes={{'{name}': {{0: 'N'}}, ...}})).")


_LEFT_OUT_SAID: set[str] = set()  # said once a run (a run opens the same part of its data more than once)


def new_run() -> None:
    """Forget what the last run said once (convert calls it first): a second prune() in one process said nothing of
    the samples left out (audit 40: the set was once per process)."""
    _LEFT_OUT_SAID.clear()


def _say_left_out(batch: int, left: int, of: str) -> None:
    """The `left` samples after the last whole batch of a model with a fixed `batch`, in `of`, said once."""
    message = (f"the model takes batches of exactly {batch} samples: the last {left} of {of} are left out (they do "
               "not fill a batch)")
    if message not in _LEFT_OUT_SAID:
        _LEFT_OUT_SAID.add(message)
        log.warning("%s", message)


def _open_source(source, model, labels, batch_size, limit, seed, specs, warn) -> DataReader:
    if isinstance(source, str) and source == "random":
        return _random_reader(specs, batch_size, limit, seed, int_input_ranges(model), warn)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return _folder_reader(path, specs, labels, batch_size, limit, time_major_inputs(model), model)
        if not path.exists():
            raise CalibrationError(f"calibration data '{path}' does not exist; pass an .npz file, a folder or "
                                   "'random'.")
        return _npz_reader(path, specs, labels, batch_size, limit, time_major_inputs(model), model)
    source = _as_named(source, specs)
    if isinstance(source, Mapping):
        chunk = _memory_chunk(source, "in-memory arrays")
        shapes, time_major = {k: v.shape for k, v in chunk.arrays.items()}, time_major_inputs(model)
        reason = feed_reason([(chunk.where, shapes)], specs, time_major)
        stack = _stack_reader(lambda: chunk.arrays, shapes, specs, labels, limit, reason, time_major,
                              "in-memory arrays", model)
        if stack is not None:
            return stack
        if reason:
            return _feed_reader(_chunk_source(chunk), specs, labels, limit, reason, "in-memory arrays")
        return (_whole_if_mixed(model, chunk, _chunk_source(chunk), specs, labels, limit, "in-memory arrays")
                or _single_chunk_reader(chunk, specs, labels, batch_size, limit, "in-memory arrays"))
    if isinstance(source, Iterable):  # a torch DataLoader of tensors too: the list of arrays it stands for
        return _feeds_reader(_as_named(list(source), specs), specs, labels, batch_size, limit, time_major_inputs(model),
                             model)
    raise ConfigError(f"calibration source of type {type(source).__name__} is not supported; "
                      "pass a path, 'random', a dict of arrays or a list of feed dicts (for a one-input "
                      "model also an array or a list of arrays).")


def left_out_optionals(source, model: onnx.ModelProto) -> list[str]:
    """The optional(tensor) inputs of `model` that `source` holds no array for: an .npz file's names, a folder's first
    .npz file's, a dict's keys or a list of feed dicts' first; [] for other sources (random data draws every input).
    The model's callers may run it without them (onnxruntime takes no value as absent): sweep 54's MLP with an
    optional 'prior' added to its logits when given, calibrated on its images alone."""
    optional = [s.name for s in input_specs(model) if s.optional]
    if not optional or (isinstance(source, str) and source == "random"):
        return []
    names = None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            first = next(iter(data_files(path)), None)
            path = first if first is not None and first.suffix == ".npz" else None
        if path is not None and path.suffix == ".npz" and path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    names = set(z.files)
            except (OSError, ValueError):
                return []  # an unreadable file: the reader says why
    elif isinstance(source, Mapping):
        names = set(source)
    elif isinstance(source, (list, tuple)) and source and isinstance(source[0], Mapping):
        names = set(source[0])
    return [] if names is None else [n for n in optional if n not in names]


def _as_named(source, specs):
    """An array (samples first) or a list of arrays (one batch each) for a one-input model, as the dict of arrays or
    the feed dicts it stands for (a library sweep: data=[x1, x2] was a raw AttributeError deep in a step)."""
    arrays = isinstance(source, (list, tuple)) and any(_is_array(a) for a in source)
    if not (_is_array(source) or arrays):
        return source
    what = "a list of arrays" if arrays else "an array"
    if len(specs) != 1:
        raise ConfigError(f"data given as {what} feeds a model with one input; this model takes "
                          f"{[s.name for s in specs]}: pass a dict of arrays named after them (or a list of such "
                          "dicts, one per batch).")
    name, rank = specs[0].name, len(specs[0].shape)
    if arrays and _labels_beside(source, rank):  # data=(x, y): y read as a second batch of inputs (audit 40)
        raise ConfigError(f"data given as a {type(source).__name__} of arrays is one batch per array; these look like "
                          f"(inputs, labels), shaped {listed(str(list(np.shape(a))) for a in source)}: name them, "
                          f"data={{'{name}': x, 'labels': y}}.")
    if arrays and rank and all(_is_array(a) and np.ndim(a) == rank - 1 for a in source):
        # data=list(x): each sample read as a batch, and refused as a batch of the wrong shape (a library sweep)
        raise ConfigError(f"data given as a list of arrays is one batch per array, samples first; these are shaped "
                          f"{list(np.shape(source[0]))}, without the batch axis of model input '{name}' "
                          f"{_dims(specs[0].shape)}, as single samples are: pass np.stack(the list), or the array "
                          "itself.")
    return [{name: a} if _is_array(a) else a for a in source] if arrays else {name: source}


def _labels_beside(arrays, rank: int) -> bool:
    """Arrays that read as (inputs, labels...): the first of the model input's rank, the others of a lower rank and
    as many rows (a torch DataLoader's [x, y] batch, `data=(x, y)`)."""
    if len(arrays) < 2 or not all(_is_array(a) for a in arrays) or np.ndim(arrays[0]) != rank or not rank:
        return False
    rows = np.shape(arrays[0])[0]
    return all(0 < np.ndim(a) < rank and np.shape(a)[0] == rows for a in arrays[1:])


def _is_array(value) -> bool:
    """A numpy array or anything numpy reads as one without copying it element by element (a torch tensor)."""
    return hasattr(value, "__array__") and not isinstance(value, Mapping)


# ---- sources ---------------------------------------------------------------------------------------------------

def _npz_reader(path, specs, labels, batch_size, limit, time_major=None, model=None) -> DataReader:
    if path.suffix == ".npz":
        _refuse_empty(path)
        shapes = npz_shapes(path) or {}
        reason = feed_reason([(str(path), shapes)], specs, time_major)
        rows = stacked_batches(shapes, specs) if reason else None
        if rows:  # scalar inputs beside samples stacked in whole fixed batches: a feed per batch
            return _feed_reader(_batch_feeds(path, shapes, rows), specs, labels, limit,
                                f"{reason}, beside samples stacked in batches of the fixed {rows} the model takes: "
                                "a feed per batch, the scalars in each", path.name)
        stack = _stack_reader(lambda: _npz_arrays(path), shapes, specs, labels, limit, reason, time_major, path.name,
                              model)
        if stack is not None:
            return stack
        if reason:
            return _feed_reader(FeedSource([path], _npz_arrays, str), specs, labels, limit, reason, path.name)
    if path.suffix == ".npy":
        chunk = _npy_chunk(path, specs, labels, mmap=False)
    elif path.suffix == ".npz":
        chunk = _npz_chunk(path)
    else:
        raise CalibrationError(f"calibration file '{path}' is neither .npz nor .npy; save arrays with numpy.savez.")
    return (_whole_if_mixed(model, chunk, _chunk_source(chunk), specs, labels, limit, path.name)
            or _single_chunk_reader(chunk, specs, labels, batch_size, limit, path.name))


def _chunk_source(chunk: Chunk) -> FeedSource:
    return FeedSource([chunk], lambda c: c.arrays, lambda c: c.where)


def _whole_if_mixed(model, first: Chunk, source: FeedSource, specs, labels, limit, name: str) -> DataReader | None:
    """Stacked samples whose rows the model does not read as samples (feeds.rows_interact on the `first` chunk: a
    sequence in time on axis 0 with no time name, no state input and no batch word) read as `source`, one feed a
    file, said; None when the rows are samples. Cut into batches, a sequence's rows were scored as samples, each
    batch run as a sequence of its own."""
    mixed = rows_interact(model, first.arrays, specs, [], {})
    return _rows_whole(source, specs, labels, limit, ROWS_TOGETHER, name, Path(first.where).name, first.n,
                       mixed) if mixed else None


def _single_chunk_reader(chunk, specs, labels, batch_size, limit, name) -> DataReader:
    labels_name = _labels_name(chunk, specs, labels)
    checker = _ChunkChecker(specs, labels_name)
    checker.first(chunk, batch_size)
    return DataReader(lambda: iter([chunk]), specs, batch_size=batch_size, limit=limit, labels_name=labels_name,
                      num_samples=chunk.n, description=_describe(name, _cap(chunk.n, limit), labels_name),
                      checker=checker)


def _feeds_reader(feeds: list, specs, labels, batch_size, limit, time_major=None, model=None) -> DataReader:
    """Feed dicts (the Python API's data=[...]): stacked as samples, each cut into batches, unless their shapes
    differ where a batch cannot (`feed_reason`) or the model reads a feed's rows together (`_whole_if_mixed`, as for
    a folder's files: real models 55b, phrases [T, 4] whose boundaries a CumSum along T makes were read as 427 row
    samples in batches of 16, each batch run as a phrase of its own)."""
    if not feeds:
        raise CalibrationError("the list of calibration feed dicts is empty; give at least one batch.")
    first = feeds[0]
    if isinstance(first, (list, tuple)) and first and all(_is_array(a) for a in first):  # a torch DataLoader's
        # [inputs, labels] batches were "feed dict #0 is a list, not a dict" (audit 40): say how to name them
        names = ", ".join(f"'{s.name}': x" if len(specs) == 1 else f"'{s.name}': ..." for s in specs)
        raise ConfigError(f"feed dict #0 is a {type(first).__name__} of {len(first)} arrays (shaped "
                          f"{listed(str(list(np.shape(a))) for a in first)}), as a torch DataLoader yields "
                          f"(inputs, labels) batches: give each batch as a dict named after the model inputs, e.g. "
                          f"data=({{{names}, 'labels': y}} for x, y in loader).")
    chunks = [_memory_chunk(f, f"feed dict #{i}") for i, f in enumerate(feeds)]
    reason = feed_reason([(c.where, {k: v.shape for k, v in c.arrays.items()}) for c in chunks], specs, time_major)
    if reason:
        return _feed_reader(FeedSource(chunks, lambda c: c.arrays, lambda c: c.where), specs, labels, limit, reason,
                            f"{len(chunks)} feed dicts")
    name = f"{len(chunks)} feed dicts"
    whole = _whole_if_mixed(model, chunks[0], FeedSource(chunks, lambda c: c.arrays, lambda c: c.where), specs,
                            labels, limit, name) if model is not None else None
    if whole is not None:
        return whole
    labels_name = _labels_name(chunks[0], specs, labels)
    checker = _ChunkChecker(specs, labels_name)
    checker.first(chunks[0], batch_size)
    total = sum(c.n for c in chunks)
    return DataReader(lambda: iter(chunks), specs, batch_size=batch_size, limit=limit, labels_name=labels_name,
                      num_samples=total, description=_describe(f"{len(chunks)} feed dicts", _cap(total, limit),
                                                               labels_name), checker=checker)


def data_files(folder: Path) -> list[Path]:
    """The .npz and .npy files of `folder` in the order the folder reader reads them."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix in (".npz", ".npy") and p.is_file())


def _folder_reader(folder: Path, specs, labels, batch_size, limit, time_major=None, model=None) -> DataReader:
    files = data_files(folder)
    label_files = {p for p in files if p.suffix == ".npy" and p.stem.endswith(f"_{labels or DEFAULT_LABELS}")}
    files = [p for p in files if p not in label_files]
    if not files:
        raise CalibrationError(f"folder '{folder}' holds no .npz or .npy files; put calibration arrays in it.")
    if any(p.suffix == ".npy" for p in files) and len(specs) != 1:
        raise CalibrationError(
            f"folder '{folder}' holds .npy files, which can only feed single-input models; this model has "
            f"{len(specs)} inputs ({', '.join(s.name for s in specs)}). Save each chunk as an .npz with one array "
            "per input.")

    if all(p.suffix == ".npz" for p in files):
        reason = feed_reason([(str(p), npz_shapes(p) or {}) for p in files], specs, time_major)
        if reason:
            name = f"folder '{folder.name}/' ({len(files)} files)"
            return (_shared_folder_reader(files, specs, labels, limit, reason, name, time_major or {}, model)
                    or _rows_probed(files, specs, labels, limit, reason, name, time_major or {}, model)
                    or _feed_reader(FeedSource(files, _npz_arrays, str), specs, labels, limit, reason, name))

    def load(p: Path) -> Chunk:
        return _npz_chunk(p) if p.suffix == ".npz" else _npy_chunk(p, specs, labels, mmap=True)

    first = load(files[0])
    desc = f"folder '{folder.name}/' ({len(files)} files)"
    if all(p.suffix == ".npz" for p in files):
        whole = _whole_if_mixed(model, first, FeedSource(files, _npz_arrays, str), specs, labels, limit, desc)
        if whole is not None:
            return whole
    labels_name = _labels_name(first, specs, labels)
    checker = _ChunkChecker(specs, labels_name)
    checker.first(first, batch_size)
    del first
    total = _count_samples(files, specs)

    def chunks() -> Iterator[Chunk]:
        for p in files:
            yield load(p)

    return DataReader(chunks, specs, batch_size=batch_size, limit=limit, labels_name=labels_name,
                      num_samples=total, description=_describe(desc, _cap(total, limit), labels_name),
                      checker=checker)


def calls_reader(source, model: onnx.ModelProto, *, labels: str | None = None,
                 limit: int | None = None) -> DataReader | None:
    """A folder of .npz files, each the call of a stream (its rows stacked samples of one call: a step model's
    `h0` [1, H]), read one file a feed in the folder's order, so that a stream's calls run one after another with
    the state carried (converter/steps/verify.streamed_decisions); None where `source` is no such folder."""
    if not isinstance(source, (str, os.PathLike)) or not Path(source).is_dir():
        return None
    files = data_files(Path(source))
    if len(files) < 2 or any(p.suffix != ".npz" for p in files):
        return None
    specs = input_specs(model)
    reader = _feed_reader(FeedSource(files, _npz_arrays, str), specs, labels, limit,
                          "each file is one call of a stream, run in order with its state carried",
                          f"folder '{Path(source).name}/' ({len(files)} files)", unit="call(s), one a file")
    shapes = npz_shapes(files[0]) or {}
    rows = [shapes[s.name][0] for s in specs if len(shapes.get(s.name) or ()) > 0]
    reader.call_rows = rows[0] if rows else 1  # each call's rows: a file may step several streams in lockstep
    return reader


def requests_reader(source, model: onnx.ModelProto, why: str, *, labels: str | None = None,
                    limit: int | None = None) -> DataReader | None:
    """A folder of two or more data files, or a list of two or more feed dicts, read one request a feed: a file's
    (a dict's) rows are one request's candidates, which the model scores together and its application reads as one
    list (`why`: the --metric that says so, output_metrics.LISTS); each feed one decision sample, never cut nor
    stacked with another (`rows_note`). None where `source` is neither."""
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        files = data_files(Path(source))
        if len(files) < 2 or any(p.suffix != ".npz" for p in files):
            return None
        feeds, name = FeedSource(files, _npz_arrays, str), f"folder '{Path(source).name}/' ({len(files)} files)"
    elif isinstance(source, (list, tuple)) and len(source) >= 2 and all(isinstance(f, Mapping) for f in source):
        feeds = FeedSource(list(enumerate(source)), lambda item: {k: np.asarray(v) for k, v in item[1].items()},
                           lambda item: f"feed dict #{item[0]}")
        name = f"{len(source)} feed dicts"
    else:
        return None
    reason = f"each {'file' if isinstance(feeds.items[0], Path) else 'feed dict'} is one request, {why}"
    reader = _feed_reader(feeds, input_specs(model), labels, limit, reason, name, unit="request(s), one a feed")
    reader.rows_note = f"{name}: {reason}"
    reader.sample_unit = "request"
    return reader


def _feed_reader(source: FeedSource, specs, labels, limit, reason: str, name: str,
                 unit: str = "feed(s) used as is") -> DataReader:
    """One complete feed per batch, as the source holds it (calibration.feeds)."""
    first = source.items[0]
    arrays = source._load(first)
    labels_name = _labels_name(Chunk(arrays, None, source._where(first)), specs, labels)
    check = FeedChecker(specs, labels_name, _ChunkChecker(specs, labels_name), reason)
    check(arrays, source._where(first))
    n = _cap(len(source), limit)
    desc = f"{name}: {n:,} {unit}, " + (f"labels '{labels_name}'" if labels_name else "no labels")
    reader = DataReader(lambda: iter(()), specs, batch_size=1, limit=limit, labels_name=labels_name,
                        num_samples=len(source), description=desc)
    reader.per_feed, reader._feeds, reader._feed_check = True, source, check
    reader.feed_note = f"reading {name} one complete feed at a time, as is: {reason}"
    return reader


def _batch_feeds(path: Path, shapes: dict[str, tuple], rows: int) -> FeedSource:
    """A stacked .npz with scalar inputs as feeds of `rows` samples each: arrays with the stack's sample count are
    cut (labels too), the others (the scalars) go whole into every feed; the file is read once."""
    n = next(s[0] for s in shapes.values() if s)
    if n % rows:
        _say_left_out(rows, n % rows, f"the {n} in {path.name}")
    arrays = _loaded_once(lambda: _npz_arrays(path))

    def load(start: int) -> dict[str, np.ndarray]:
        return {k: (v[start:start + rows] if v.ndim and v.shape[0] == n else v) for k, v in arrays().items()}

    return FeedSource(list(range(0, n - n % rows, rows)), load, lambda start: f"{path.name}[{start}:{start + rows}]")


def _stack_reader(arrays, shapes, specs, labels, limit, reason, time_major, name, model=None) -> DataReader | None:
    """A file (or dict of arrays) read per feed (`reason`) whose arrays still stack samples, a sample a feed: beside
    inputs that hold one value (`_shared_reader`) or of a time-major model (`_time_major_reader`); else None."""
    if not reason:
        return None
    found = _shared_reader(arrays, shapes, specs, labels, limit, reason, name, time_major or {}, model)
    if found is None:
        found = _time_major_reader(arrays, shapes, specs, labels, limit, reason, time_major, name)
    return found


def _shared_reader(arrays: Callable[[], dict[str, np.ndarray]], shapes: dict[str, tuple], specs, labels, limit,
                   reason: str, name: str, time_major: dict[str, str], model=None) -> DataReader | None:
    """Inputs that hold one value for the file (feeds.shared_stack) beside N samples stacked on a dynamic batch (axis
    1 of a time-major input), read as N feeds of one sample each, those inputs' arrays whole in every one, the arrays
    read once; None when the arrays are no such stack."""
    found = shared_stack(shapes, specs, time_major=time_major, own_axis=own_axis_inputs(model))
    if not found:
        return None
    n, shared = found
    whole = _loaded_once(arrays)
    mixed = rows_interact(model, whole(), specs, shared, time_major)
    if mixed:  # its rows are one feed's, not samples: the file as it is
        return _rows_whole(FeedSource([name], lambda _: whole(), lambda _: name), specs, labels, limit,
                           f"{reason}; {ROWS_TOGETHER}", name, name, n, mixed)

    def load(i: int) -> dict[str, np.ndarray]:
        return _sample(whole(), i, shared, time_major)

    reader = _feed_reader(FeedSource(list(range(n)), load, lambda i: f"{name}, sample {i}"), specs, labels, limit,
                          f"{reason}; input(s) {shared} hold one value for the file (their declared shape, or an "
                          f"axis 0 not the batch's), and its {n:,} samples of the others are read one feed each, "
                          "those in every one", name,
                          "sample(s), a feed each")
    reader.one_sample_feeds = True
    return reader


ROWS_TOGETHER = "the model reads the rows of a file together, not as samples"


def rows_together(reader) -> bool:
    """Whether `reader` (a DataReader, or any iterable of feeds) reads files whose rows the model runs together
    (`rows_note`): each such file is one sample, never cut into parts."""
    return getattr(reader, "rows_note", None) is not None


def _rows_whole(source: FeedSource, specs, labels, limit, reason: str, name: str, probed: str, rows: int,
                why: str) -> DataReader:
    """`source` read a file a feed because the `rows` of the file `probed` are not independent samples (`why`:
    feeds.rows_interact), with the warning open_data gives once (`rows_note`)."""
    reader = _feed_reader(source, specs, labels, limit, reason, name)
    one = len(source) == 1
    where = name if one else f"'{probed}' of {name}"
    fate = "it is one feed, used as is" if one else "each file is one feed, used as is"
    reader.rows_note = (f"the {rows:,} rows of {where} are not independent samples: {why}; {fate}, so every "
                        "measurement sees the rows together as the model reads them (a file per independent sample "
                        "gives the search more samples to decide on)")
    return reader


def _sample(arrays: dict[str, np.ndarray], i: int, shared, time_major: dict[str, str]) -> dict[str, np.ndarray]:
    """Sample i of a stack as a feed: the shared arrays whole, a time-major input's [T, 1, ...] (axis 1), the
    others' (the labels too) [1, ...]."""
    return {k: (v if k in shared else v[:, i:i + 1] if k in time_major else v[i:i + 1]) for k, v in arrays.items()}


def _rows_probed(files: list[Path], specs, labels, limit, reason: str, name: str, time_major: dict[str, str],
                 model=None) -> DataReader | None:
    """A folder read a file a feed for `reason` (its files' shapes differ) whose rows the model reads together
    (feeds.rows_interact on the first of the first PROBE_FILES files that stacks several rows), said and marked as
    such (`rows_note`: each file one decision sample); None when the rows are samples or none was probed. Real
    models 47: atspm-detector's function head reads a piece's detectors [D, K] with attention across them, D and K
    differing per piece; each detector was counted as a decision sample (922 from 150 pieces), and a run said 0.33
    pp where 1.41% of 1,840 held-out detectors changed class."""
    for path in files[:PROBE_FILES]:
        shapes = npz_shapes(path) or {}
        axes = {s.name: 1 if s.name in time_major else 0 for s in specs}
        rows = {shapes[n][a] for n, a in axes.items() if len(shapes.get(n, ())) > a}
        if len(rows) != 1 or min(rows) < 2:
            continue
        mixed = rows_interact(model, _npz_arrays(path), specs, [], time_major)
        return _rows_whole(FeedSource(files, _npz_arrays, str), specs, labels, limit, f"{reason}; {ROWS_TOGETHER}",
                           name, path.name, min(rows), mixed) if mixed else None
    return None


PROBE_FILES = 8  # files `_rows_probed` looks through for one that stacks several rows


def _shared_folder_reader(files: list[Path], specs, labels, limit, reason: str, name: str,
                          time_major: dict[str, str], model=None) -> DataReader | None:
    """A folder whose every file is a stack beside inputs that hold one value for that file (feeds.shared_stack, a
    file of one sample too), read as a feed per sample of every file, each file's shared arrays whole in its
    samples' feeds; one file's arrays held at a time. None when any file is no such stack (each file a feed)."""
    own_axis = own_axis_inputs(model)
    found = [shared_stack(npz_shapes(p) or {}, specs, least=1, time_major=time_major, own_axis=own_axis)
             for p in files]
    if not all(found) or all(n == 1 for n, _ in found):
        return None
    shared = sorted({s for _, names in found for s in names})
    probe, (rows, held_whole) = next((p, f) for p, f in zip(files, found) if f[0] > 1)
    mixed = rows_interact(model, _npz_arrays(probe), specs, held_whole, time_major)
    if mixed:  # each file's rows are one feed's, not samples: every file as it is
        return _rows_whole(FeedSource(files, _npz_arrays, str), specs, labels, limit, f"{reason}; {ROWS_TOGETHER}",
                           name, probe.name, rows, mixed)
    held: dict = {}

    def load(item: tuple[Path, int, list[str]]) -> dict[str, np.ndarray]:
        path, i, names = item
        if held.get("path") != path:
            held.clear()
            held.update(path=path, arrays=_npz_arrays(path))
        return _sample(held["arrays"], i, names, time_major)

    items = [(p, i, names) for p, (n, names) in zip(files, found) for i in range(n)]
    reader = _feed_reader(FeedSource(items, load, lambda it: f"{it[0].name}, sample {it[1]}"), specs, labels,
                          limit, f"{reason}; input(s) {shared} hold one value for each file (their declared shape, "
                          f"or an axis 0 not the batch's), and the {len(items):,} samples of the others are read "
                          "one feed each, their file's "
                          "values in every one", name, "sample(s), a feed each")
    reader.one_sample_feeds = True
    reader.shared_inputs = tuple(shared)  # a folder of a decoder's calls beside a flag (carried.call_files)
    return reader


def _time_major_reader(arrays: Callable[[], dict[str, np.ndarray]], shapes: dict[str, tuple], specs, labels, limit,
                       reason: str, time_major: dict[str, str], name: str) -> DataReader | None:
    """A stack of N samples of a time-major model (feeds.time_major_stack) read as N feeds of one sample each: a
    time-major input cut along axis 1 ([T, 1, C]), every other array along axis 0, the arrays read once; None when
    the arrays are no such stack."""
    n = time_major_stack(shapes, specs, time_major)
    if not n:
        return None
    whole = _loaded_once(arrays)

    def load(i: int) -> dict[str, np.ndarray]:
        return _sample(whole(), i, (), time_major)

    reader = _feed_reader(FeedSource(list(range(n)), load, lambda i: f"{name}, sample {i}"), specs, labels, limit,
                          f"{reason}; its {n:,} samples (axis 1) are read one feed each", name,
                          "sample(s) on axis 1, a feed each")
    reader.one_sample_feeds = True
    return reader


def _loaded_once(load: Callable[[], dict[str, np.ndarray]]) -> Callable[[], dict[str, np.ndarray]]:
    """`load`, called on first use only: the feeds cut from one file share its arrays (a file read per feed made a
    pass over 2,000 time-major sequences take 5 s)."""
    cache: list = []

    def arrays() -> dict[str, np.ndarray]:
        if not cache:
            cache.append(load())
        return cache[0]

    return arrays


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    return _npz_chunk(path).arrays


def _random_reader(specs, batch_size, limit, seed, highs: dict[str, int], warn: bool) -> DataReader:
    if warn:
        log.warning(RANDOM_WARNING)
        text = [s.name for s in specs if s.dtype == np.dtype(object)]
        if text:  # sweep 17: a one-hot pipeline pruned 18x "within 0.35 pp" changed 69% of real predictions
            log.warning("random text for string input(s) %s matches no category the model knows: every sample takes "
                        "the same unknown-category path, and the figures say nothing about real rows; pass real "
                        "text (np.array(values, dtype=str))", ", ".join(text))
    total = limit or DEFAULT_RANDOM_SAMPLES

    def chunks() -> Iterator[Chunk]:
        rng = np.random.default_rng(seed)
        for start in range(0, total, batch_size):
            n = min(batch_size, total - start)
            yield Chunk({s.name: _random_array(rng, s, n, highs.get(s.name, DEFAULT_INT_HIGH)) for s in specs}, None,
                        f"random data (seed {seed})")

    # a scalar input (a sample rate), a sequence's stacked elements: whole random feeds, one per step
    if any(not s.shape or s.kind == "sequence" for s in specs):
        def feed(i: int) -> dict[str, np.ndarray]:
            rng = np.random.default_rng([seed, i])
            return {s.name: random_array(rng, s, tuple(DEFAULT_DYNAMIC_DIM if d is None else d for d in s.shape),
                                         highs.get(s.name, DEFAULT_INT_HIGH)) for s in specs}

        check = FeedChecker(specs, None, _ChunkChecker(specs, None))
        reader = DataReader(lambda: iter(()), specs, batch_size=1, limit=limit, labels_name=None, num_samples=total,
                            description=f"random data (seed {seed}): {total:,} feeds, no labels; metrics on random "
                                        "data mean nothing", is_random=True)
        reader.per_feed, reader._feeds, reader._feed_check = True, FeedSource(list(range(total)), feed, str), check
        return reader
    desc = f"random data (seed {seed}): {total:,} samples, no labels; metrics on random data mean nothing"
    return DataReader(chunks, specs, batch_size=batch_size, limit=limit, labels_name=None, num_samples=total,
                      description=desc, is_random=True)


def _random_array(rng, spec: InputSpec, n: int, high: int) -> np.ndarray:
    shape = (n, *(DEFAULT_DYNAMIC_DIM if d is None else d for d in spec.shape[1:]))
    return random_array(rng, spec, shape, high)


# ---- loading ---------------------------------------------------------------------------------------------------

def _npz_chunk(path: Path) -> Chunk:
    _refuse_empty(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _load_error(path, exc) from None
    if not arrays:
        raise CalibrationError(f"'{path}' holds no arrays; save the samples with numpy.savez(path, input=...).")
    labels = None
    return Chunk(arrays, labels, str(path))


def _npy_chunk(path: Path, specs, labels, *, mmap: bool) -> Chunk:
    """A .npy holds the single input; its labels may sit beside it as '<stem>_labels.npy'."""
    if len(specs) != 1:
        raise CalibrationError(f"'{path}' is a .npy file, which can only feed a single-input model; this model "
                               f"has inputs {[s.name for s in specs]}. Use an .npz with one array per input.")
    _refuse_empty(path)
    arrays = {specs[0].name: _load_npy(path, mmap)}
    label_path = path.with_name(f"{path.stem}_{labels or DEFAULT_LABELS}.npy")
    if label_path.is_file():
        arrays[labels or DEFAULT_LABELS] = _load_npy(label_path, mmap=False)
    return Chunk(arrays, None, str(path))


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise _load_error(path, exc) from None


def _refuse_empty(path: Path) -> None:
    """Empty files, pickles and non-numpy files are refused before numpy sees them."""
    if path.stat().st_size == 0:
        raise CalibrationError(f"calibration file '{path}' is empty (0 bytes); write the samples again.")
    with open(path, "rb") as f:
        head = f.read(6)
    if head[:1] == b"\x80":
        raise CalibrationError(f"'{path}' is a Python pickle; it is never unpickled (allow_pickle=False, unpickling "
                               "runs code). Save plain numeric arrays with numpy.savez.")
    # PK\x05\x06: a zip with no entries, numpy.savez of no arrays ("holds no arrays" below, not "not a numpy file")
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):
        raise CalibrationError(f"'{path}' is not a numpy file (no .npz/.npy header); write it with numpy.savez / "
                               "numpy.save.")


def _load_error(path: Path, exc: Exception) -> CalibrationError:
    text = str(exc)
    if "pickle" in text.lower() or "object arrays" in text.lower():
        return CalibrationError(f"'{path}' holds pickled/object arrays; they are never unpickled (allow_pickle=False, "
                                "unpickling runs code). Save plain numeric arrays with numpy.savez, and text as a "
                                "unicode array (np.array(values, dtype=str)).")
    first = text.splitlines()[0] if text else ""
    return CalibrationError(f"'{path}' is not a readable numpy file ({type(exc).__name__}: {first}); "
                            "write it with numpy.savez / numpy.save.")


def _memory_chunk(source: Mapping, where: str) -> Chunk:
    if not isinstance(source, Mapping):
        raise ConfigError(f"{where} is a {type(source).__name__}, not a dict; give each batch as a dict of arrays "
                          "named after the model inputs (a one-input model also takes a plain array per batch).")
    arrays = {}
    for name, value in source.items():
        arr = np.asarray(value)
        if arr.dtype == object:
            raise CalibrationError(f"{where}: array '{name}' has dtype object; pass numeric numpy arrays, and text as "
                                   "a unicode array (np.array(values, dtype=str)).")
        arrays[str(name)] = arr
    if not arrays:
        raise CalibrationError(f"{where} holds no arrays.")
    return Chunk(arrays, None, where)


def _count_samples(files: list[Path], specs) -> int | None:
    """Samples in a folder, read from the array headers only (no data is loaded)."""
    total = 0
    name = specs[0].name if specs else None
    try:
        for p in files:
            if p.suffix == ".npy":
                total += int(np.load(p, mmap_mode="r", allow_pickle=False).shape[0])
            else:
                total += _npz_length(p, name)
    except (ValueError, OSError, KeyError, IndexError, zipfile.BadZipFile):
        return None
    return total


def _npz_length(path: Path, name: str) -> int:
    with zipfile.ZipFile(path) as zf, zf.open(f"{name}.npy") as f:
        version = np.lib.format.read_magic(f)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, _ = reader(f)
    return int(shape[0])


# ---- checking --------------------------------------------------------------------------------------------------

def _labels_name(chunk: Chunk, specs, labels: str | None) -> str | None:
    inputs = {s.name for s in specs}
    if labels is not None:
        if labels in inputs:
            raise ConfigError(f"labels '{labels}' is a model input; name the labels array something else.")
        if labels not in chunk.arrays:
            raise CalibrationError(f"'{chunk.where}' has no labels array '{labels}'; it holds "
                                   f"{sorted(chunk.arrays)}. Pass the right name with --labels.")
        return labels
    return DEFAULT_LABELS if DEFAULT_LABELS in chunk.arrays and DEFAULT_LABELS not in inputs else None


def _batch_size_for(specs, batch_size: int) -> int:
    fixed = declared_batch(specs)
    return batch_size if fixed is None else fixed


def _dtype_words(dtype: np.dtype) -> str:
    """A model input's element type as a user saves it: "text (a string tensor)" for onnxruntime's object dtype."""
    return "text (a string tensor)" if dtype == np.dtype(object) else str(dtype)


def _cast_hint(have: np.dtype, want: np.dtype) -> str:
    """What to do about an array whose dtype cannot stand for a model input's (sweep 48: a Keras StringLookup's text
    input given numbers read "takes object; ... (e.g. pixels/255 as float32)")."""
    if want == np.dtype(object):
        return "save the input's text as a unicode array (np.array(values, dtype=str))."
    if have.kind in "US":
        return f"the model takes numbers there, not text: encode the text as the model's {want} input expects."
    return "that cast is unsafe, convert the data yourself (e.g. pixels/255 as float32)."


def _safe_cast(have: np.dtype, want: np.dtype) -> bool:
    if have.kind in "US" and want == np.dtype(object):
        return True  # text for a string input: a unicode array (savez stores it without a pickle), object to onnxruntime
    if np.issubdtype(have, np.floating) and np.issubdtype(want, np.floating):
        return True  # float64 -> float32 loses precision the model never had
    if np.issubdtype(have, np.integer) and np.issubdtype(want, np.integer):
        return bool(np.can_cast(have, want, "safe"))
    return False


class _ChunkChecker:
    """Checks chunks against the model inputs: structure per chunk, values (cast, NaN/inf) per slice.

    Values are checked on the slices that make up a batch, so a memory-mapped .npy is never loaded whole.
    """

    def __init__(self, specs: list[InputSpec], labels_name: str | None):
        self.specs = specs
        self.labels_name = labels_name
        self.logged: set[tuple[str, str]] = set()

    def first(self, chunk: Chunk, batch_size: int) -> None:
        """The open-time check: the first chunk's structure and its first batch's values."""
        self.values(self(chunk).slice(0, batch_size))

    def __call__(self, chunk: Chunk) -> Chunk:
        where = chunk.where
        arrays = dict(chunk.arrays)
        labels = arrays.pop(self.labels_name, None) if self.labels_name else None
        if self.labels_name and labels is None:
            raise CalibrationError(f"'{where}' has no labels array '{self.labels_name}' (it holds {sorted(arrays)}); "
                                   "every chunk needs its labels.")
        self._names(arrays, where)
        n = _common_length(arrays, where)
        for s in self.specs:
            self._structure(arrays[s.name], s, where)
        return Chunk(arrays, None if labels is None else _check_labels(labels, n, self.labels_name, where), where)

    def values(self, chunk: Chunk) -> Chunk:
        return Chunk({s.name: self._value(chunk.arrays[s.name], s, chunk.where) for s in self.specs},
                     chunk.labels, chunk.where)

    def _names(self, arrays, where) -> None:
        want = [s.name for s in self.specs]
        missing = [n for n in want if n not in arrays]
        optional = [s.name for s in self.specs if s.optional and s.name in missing]
        if optional:  # sweep 54: an optional(tensor) input the data leaves out, as a caller of the model may
            raise CalibrationError(
                f"'{where}' lacks model input(s) {missing}; it holds {sorted(arrays)}, the model takes {want}. "
                f"{listed(repr(n) for n in optional)} {'is' if len(optional) == 1 else 'are'} optional, but "
                "onnxprune runs and judges a model with every input fed, none left out: add the values your callers "
                "pass there, named after the input.")
        if missing:
            raise CalibrationError(f"'{where}' lacks model input(s) {missing}; it holds {sorted(arrays)}, the model "
                                   f"takes {want}. Name the arrays after the model inputs.")
        extra = sorted(set(arrays) - set(want))
        if extra:
            raise CalibrationError(f"'{where}' holds array(s) {extra} that are not model inputs ({want}); if one holds "
                                   "the labels pass its name with --labels, else remove it.")

    def _structure(self, arr: np.ndarray, spec: InputSpec, where: str) -> None:
        want = spec.shape
        if arr.ndim != len(want) or any(d is not None and d != a for d, a in zip(want[1:], arr.shape[1:])):
            raise CalibrationError(f"'{where}': array '{spec.name}' has shape {list(arr.shape)} (samples first), "
                                   f"model input '{spec.name}' expects {_dims(want)}; "
                                   f"{reorder_hint(arr.shape, want)}")
        self._structure_dtype(arr, spec, where)

    def _structure_dtype(self, arr: np.ndarray, spec: InputSpec, where: str) -> None:
        if arr.dtype != spec.dtype and not _safe_cast(arr.dtype, spec.dtype):
            raise CalibrationError(f"'{where}': array '{spec.name}' has dtype {arr.dtype}, model input "
                                   f"'{spec.name}' takes {_dtype_words(spec.dtype)}; "
                                   f"{_cast_hint(arr.dtype, spec.dtype)}")

    def _value(self, arr: np.ndarray, spec: InputSpec, where: str) -> np.ndarray:
        if arr.dtype != spec.dtype:
            key = (spec.name, arr.dtype.name)
            if key not in self.logged:
                self.logged.add(key)
                log.info("casting calibration array '%s' from %s to %s (%s)", spec.name, arr.dtype, spec.dtype, where)
            arr = arr.astype(spec.dtype)
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            ok = np.isfinite(arr) | np.isnan(arr) if spec.missing else np.isfinite(arr)  # NaN: a missing value
            bad = int(np.size(arr) - np.count_nonzero(ok))
            if bad:
                what = "inf" if spec.missing else "NaN/inf"
                raise CalibrationError(f"'{where}': array '{spec.name}' holds {bad} {what} value(s); clean the data.")
        return arr


def _common_length(arrays: dict[str, np.ndarray], where: str) -> int:
    lengths = {name: (a.shape[0] if a.ndim else None) for name, a in arrays.items()}
    if any(v is None for v in lengths.values()):
        scalar = [k for k, v in lengths.items() if v is None]
        raise CalibrationError(f"'{where}': array(s) {scalar} are scalars; the first axis must count samples.")
    if len(set(lengths.values())) > 1:
        raise CalibrationError(f"'{where}': arrays disagree on the number of samples: {lengths}.")
    n = next(iter(lengths.values()))
    if n == 0:
        raise CalibrationError(f"'{where}' holds zero samples; write at least one.")
    return n


def _check_labels(labels: np.ndarray, n: int, name: str, where: str) -> np.ndarray:
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        onehot = labels.ndim == 2 and np.isin(labels, (0, 1)).all() and np.all(labels.sum(axis=1) == 1)
        if onehot:
            raise CalibrationError(f"'{where}': labels '{name}' have shape {list(labels.shape)}; give one class "
                                   "index per sample (shape [N]), not one-hot vectors (labels.argmax(1)).")
        if labels.ndim == 2 and np.isin(labels, (0, 1)).all():  # real models 55: a pitch detector's 8 notes
            raise CalibrationError(
                f"'{where}': labels '{name}' have shape {list(labels.shape)} of 0/1 with several or no 1s a row: "
                "multi-label targets (or per-position 0/1 labels), which labelled accuracy (one class index per "
                "sample, shape [N]) does not read. Leave the labels out: each output is then judged against the "
                "input model's (a Sigmoid's by its decisions at 0.5; --metric OUTPUT=mask_iou@T judges them at your "
                "threshold T).")
        raise CalibrationError(
            f"'{where}': labels '{name}' have shape {list(labels.shape)}: one label per sample (shape [N]) is what "
            "labelled accuracy reads; per-position labels (a token classifier's [N, S]) are not used. Leave the "
            "labels out to prune label-free (each position's class against the input model's), or give one class "
            "per sample.")
    if len(labels) != n:
        raise CalibrationError(f"'{where}': labels '{name}' hold {len(labels)} entries for {n} samples; "
                               "they must match.")
    if np.issubdtype(labels.dtype, np.floating) and np.isfinite(labels).all() and np.all(labels == np.round(labels)):
        labels = labels.astype(np.int64)
    if not np.issubdtype(labels.dtype, np.integer):
        raise CalibrationError(f"'{where}': labels '{name}' have dtype {labels.dtype} with non-integer values; "
                               "labels are class indices (integers).")
    if labels.size and labels.min() < 0:
        raise CalibrationError(f"'{where}': labels '{name}' hold negative class {int(labels.min())}.")
    return labels.astype(np.int64, copy=False)


# ---- batching --------------------------------------------------------------------------------------------------

def _take(chunks: Iterator[Chunk], limit: int | None) -> Iterator[Chunk]:
    """The first `limit` samples (all when None)."""
    left = limit
    for chunk in chunks:
        if left is not None and chunk.n >= left:
            yield chunk.slice(0, left)
            return
        yield chunk
        left = None if left is None else left - chunk.n


def _group_ids(groups: np.ndarray | None, start: int, stop: int) -> np.ndarray:
    """The group of each sample index in [start, stop): `groups[i]`, or past its end (or without it) i itself."""
    ids = np.arange(start, stop)
    if groups is not None:
        known = ids < len(groups)
        ids[known] = groups[ids[known]]
    return ids


def _every_nth(chunks: Iterator[Chunk], every: int, holdout: bool,
               groups: np.ndarray | None = None) -> Iterator[Chunk]:
    """Samples whose running index i has i % every == 0 (holdout) or != 0 (the rest); with `groups`, whose group
    groups[i] has (`DataReader.part`)."""
    offset = 0
    for chunk in chunks:
        pick = (_group_ids(groups, offset, offset + chunk.n) % every == 0) == holdout
        offset += chunk.n
        if pick.any():
            labels = None if chunk.labels is None else chunk.labels[pick]
            yield Chunk({k: v[pick] for k, v in chunk.arrays.items()}, labels, chunk.where)


def _rebatch(chunks: Iterator[Chunk], batch_size: int, on_slice: Callable[[Chunk], Chunk]) -> Iterator[Chunk]:
    """Cut chunks into batches of exactly batch_size samples (the last may be short)."""
    pending: list[Chunk] = []
    have = 0
    for chunk in chunks:
        n = chunk.n
        start = 0
        while start < n:
            take = min(batch_size - have, n - start)
            pending.append(on_slice(chunk.slice(start, start + take)))
            have += take
            start += take
            if have == batch_size:
                yield _concat(pending)
                pending, have = [], 0
    if pending:
        yield _concat(pending)


def _concat(parts: list[Chunk]) -> Chunk:
    if len(parts) == 1:
        p = parts[0]
        arrays = {k: np.ascontiguousarray(v) for k, v in p.arrays.items()}
        return Chunk(arrays, None if p.labels is None else np.asarray(p.labels), p.where)
    arrays = {k: np.concatenate([p.arrays[k] for p in parts]) for k in parts[0].arrays}
    labels = None if parts[0].labels is None else np.concatenate([p.labels for p in parts])
    return Chunk(arrays, labels, parts[0].where)


def _cap(n: int | None, limit: int | None) -> int | None:
    return n if limit is None or n is None else min(n, limit)


def _describe(name: str, n: int | None, labels_name: str | None) -> str:
    count = "unknown number of samples" if n is None else f"{n:,} samples"
    return f"{name}: {count}, " + (f"labels '{labels_name}'" if labels_name else "no labels")
