"""The pipeline: load → find weights → choose per-layer targets (sensitivity) → prune → retrain (iterate) →
remove dead neurons → sparse-encode → verify. The CLI, the demo and the Python API all go through `run`.

The model stays dense until the very end; the oracle for the final parity check is that dense model with the
pruned weights zeroed and the retrained weights written back, so every later step is checked end to end.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import onnx

from onnxprune.converter import modelio
from onnxprune.errors import BudgetError, ConfigError, ConverterError
from onnxprune.converter.summary import layer_rows, skipped_rows, totals
from onnxprune.converter.verify import check_parity
from onnxprune.passes.apply_masks import ApplyMasks
from onnxprune.passes.base import PruneState, run_passes
from onnxprune.passes.magnitude import MagnitudePrune, Target, quality_for_sparsity, resolve_targets
from onnxprune.passes.sparse_encode import FORMATS, SparseEncode
from onnxprune.passes.weights import Inventory, constant_tensors, find_prunable, name_nodes, weight_array

log = logging.getLogger(__name__)

Progress = Callable[..., None]  # (task, done, total, info="")

# Not part of a recipe (or of a checkpoint's fingerprint): what is supplied per run.
DATA_FIELDS = ("data", "eval_data", "val_data", "checkpoint_dir", "resume")
MIN_VALIDATION = 50  # fewer held-out samples than this say too little: measure on the training data instead


@dataclass
class PruneOptions:
    """Every choice a run makes; the recipe file is this, written out."""

    # what to prune, and how hard
    sparsity: float | None = None
    quality: float | None = None
    layers: dict[str, float] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()
    max_loss: float | None = None
    levels: tuple[float, ...] | None = None
    # data and metric
    data: Any = None
    eval_data: Any = None
    labels: str | None = None
    metric: str | None = None
    batch_size: int = 64
    limit: int | None = None
    # retraining (0 iterations = one-shot)
    iterations: int = 0
    epochs: float = 1.0
    final_epochs: float = 0.0
    lr: float = 1e-3
    final_lr: float | None = None
    schedule: str = "cubic"
    loss: str = "auto"
    reg: str = "l2"
    reg_strength: float = 5e-4
    temperature: float = 4.0
    distill_weight: float = 0.5
    label_smoothing: float = 0.0
    train_batch_size: int = 128
    alternate: bool = False
    device: str = "auto"
    # output
    validation: float = 0.1  # with --max-loss and retraining: share of --data held out to measure the budget on
    neurons: bool = True
    neuron_sparsity: float = 0.0  # share of each layer's neurons to remove whole while retraining (structured)
    neuron_layers: dict[str, float] = field(default_factory=dict)  # per-layer overrides of neuron_sparsity
    gather_inputs: bool = False
    crop_inputs: bool = False
    sparse_format: str = "constant"
    seed: int = 0
    verify_batches: int = 4
    # long runs: a checkpoint per retraining round, and --resume
    checkpoint_dir: str | None = None
    resume: bool = False
    # the automatic search (--max-loss with training data; converter.auto)
    one_shot: bool = False  # --one-shot: the no-retraining budget search only
    time_budget: float | str | None = None  # seconds or "15m"; default converter.auto.DEFAULT_TIME_BUDGET
    val_data: Any = None  # decision set the search never trains on (default: a split of --data)
    threads: int | None = None  # torch and onnxruntime threads (default: converter.auto.threads rule)
    auto_overrides: dict = field(default_factory=dict)  # flags the user gave that the search would choose

    @property
    def wants_auto(self) -> bool:
        """--max-loss with data and no --iterations/--one-shot: the automatic search (when torch and data allow)."""
        return (self.max_loss is not None and not self.one_shot and self.iterations == 0 and self.data is not None
                and self.data != "random")

    def validate(self) -> None:
        if self.sparse_format not in FORMATS:
            raise ConfigError(f"--sparse-format '{self.sparse_format}' is not one of {', '.join(FORMATS)}.")
        if self.max_loss is not None:
            if self.sparsity is not None or self.quality is not None:
                raise ConfigError("--max-loss chooses per-layer sparsities itself; drop --sparsity/--quality.")
            if self.data is None:
                raise ConfigError("--max-loss needs data to measure the loss on; pass --data FILE.npz.")
            if not 0 <= self.max_loss <= 100:
                raise ConfigError(f"--max-loss {self.max_loss} must be in percentage points, between 0 and 100.")
        if self.iterations < 0:
            raise ConfigError(f"--iterations {self.iterations} must be >= 0 (0 = one-shot, no retraining).")
        if self.resume and not self.checkpoint_dir:
            raise ConfigError("--resume needs the checkpoint folder of the interrupted run (--checkpoint-dir).")
        if self.iterations > 0 and self.data is None:
            raise ConfigError("retraining (--iterations) needs training data; pass --data FILE.npz.")
        if self.iterations > 0 and self.device != "cpu":
            from onnxprune.converter.finetune import resolve_device

            resolve_device(self.device)  # 'cuda' without a GPU fails here, before any work
        if self.epochs <= 0 and self.iterations > 0:
            raise ConfigError(f"--epochs {self.epochs} must be > 0 when retraining.")
        if self.lr <= 0:
            raise ConfigError(f"--lr {self.lr} must be > 0.")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size} must be >= 1.")
        if self.neuron_sparsity or self.neuron_layers:
            self._validate_neuron_sparsity()
        if not 0.0 <= self.validation <= 0.5:
            raise ConfigError(f"--validation {self.validation} must be in [0, 0.5]; e.g. 0.1 holds out every 10th "
                              "sample (0: measure the budget on the training data).")
        if self.gather_inputs and self.crop_inputs:
            raise ConfigError("--gather-inputs and --crop-inputs both drop unread input features; pick one "
                              "(--crop-inputs is faster in onnxruntime).")
        if self.train_batch_size < 1:
            raise ConfigError(f"training batch size {self.train_batch_size} must be >= 1.")

    def _validate_neuron_sparsity(self) -> None:
        from onnxprune.passes.neuron_masks import check_shares

        check_shares([self.neuron_sparsity, *self.neuron_layers.values()])
        if self.iterations < 1 and not self.wants_auto:
            raise ConfigError("--neuron-sparsity removes whole neurons while retraining; add --iterations N "
                              "(and --data), or --max-loss with --data.")
        if not self.neurons:
            raise ConfigError("--neuron-sparsity needs the dead-neuron pass to remove what it masks; drop "
                              "--no-neurons.")

    def recipe(self) -> dict:
        """The choices, without the data (which is given per run)."""
        out = {k: v for k, v in asdict(self).items() if k not in DATA_FIELDS}
        out["exclude"] = list(self.exclude)
        if self.levels is not None:
            out["levels"] = list(self.levels)
        return {k: v for k, v in out.items() if v is not None}


@dataclass
class PruneResult:
    model: onnx.ModelProto  # final: shrunk and sparse-encoded, what gets written
    dense_model: onnx.ModelProto  # the oracle: same weights, dense, original shapes
    original: onnx.ModelProto
    state: PruneState
    inventory: Inventory
    report: dict
    sensitivity: Any = None  # calibration.sensitivity.SensitivityResult when a scan ran
    history: list[dict] = field(default_factory=list)


def load(source) -> modelio.LoadedModel:
    loaded = modelio.from_proto(source) if isinstance(source, onnx.ModelProto) else modelio.load_model(source)
    name_nodes(loaded.model)
    return loaded


def inventory_of(model: onnx.ModelProto, *, where: str) -> Inventory:
    inventory = find_prunable(model)
    if not inventory.prunable:
        reasons = "; ".join(f"{s.name}: {s.reason}" for s in inventory.skipped[:5]) or "no weights at all"
        raise ConverterError(
            f"'{where}' has no prunable weights (float weights of Conv/ConvTranspose/Gemm/MatMul). "
            f"Seen: {reasons}. Nothing to do."
        )
    return inventory


class Data:
    """The run's data, opened once: the reader for choosing/retraining and the evaluators.

    With a budget (--max-loss) and retraining, every `every`-th sample of --data is held out from training and
    the choices are measured on it (--validation): a model retrained on the samples that judge it looks better
    than it is (seen: 0.26 pp on the training data, 1.0 pp on held-out images).
    """

    def __init__(self, model: onnx.ModelProto, options: PruneOptions):
        self.model, self.options = model, options
        self._calib = None
        self._eval = None
        self.every = self._split(options)  # before any part= reader is asked for

    def _split(self, o: PruneOptions) -> int | None:
        if o.val_data is not None:  # the search decides on --val-data and trains on all of --data
            return None
        if o.max_loss is None or (o.iterations < 1 and not o.wants_auto) or not o.validation or o.data == "random":
            return None
        every = max(2, round(1.0 / o.validation))
        n = self.reader().num_samples
        if n is not None and n // every < MIN_VALIDATION:
            log.warning("--data holds %d samples, too few to hold out every %dth for validation; the budget is "
                        "measured on the training data", n, every)
            return None
        return every

    def reader(self, source=None, *, batch_size=None, part: str | None = None):
        """All of `source` (default --data); with `part` "train" or "validation", that side of the split."""
        from onnxprune.calibration.readers import open_data

        o = self.options
        reader = open_data(source if source is not None else o.data, self.model, labels=o.labels,
                           batch_size=batch_size or o.batch_size, limit=o.limit, seed=o.seed)
        if part is not None and source is None and self.every:
            reader = reader.part(self.every, holdout=part == "validation")
        return reader

    def train_reader(self, batch_size=None):
        """What retraining sees: --data without the validation samples."""
        return self.reader(batch_size=batch_size, part="train")

    def _evaluator(self, source, part=None):
        from onnxprune.calibration.metrics import Evaluator, choose_metric

        reader = self.reader(source, part=part)
        metric = choose_metric(self.model, reader.has_labels, self.options.metric)
        return Evaluator(reader, metric, reference_model=self.model)

    @property
    def calibration(self):
        """Scores on the data the choices are made on: --data, or its validation part when split."""
        if self._calib is None:
            self._calib = self._evaluator(self.options.val_data, part="validation")
        return self._calib

    @property
    def evaluation(self):
        """Scores on the held-out data when given (--eval-data), else on --data."""
        if self.options.eval_data is None:
            return self.calibration
        if self._eval is None:
            self._eval = self._evaluator(self.options.eval_data)
        return self._eval


def run(source, options: PruneOptions, progress: Progress | None = None) -> PruneResult:
    options.validate()
    progress = progress or (lambda *a, **k: None)
    clock = _Clock()
    loaded = load(source)
    original = loaded.model
    where = str(loaded.path) if loaded.path else "<model>"
    inventory = inventory_of(original, where=where)
    if options.neuron_layers:  # a mistyped layer name fails now, not after the scan and the first rounds
        from onnxprune.passes.neuron_masks import neuron_map

        neuron_map(original, {w.name for w in inventory.prunable}).fractions(0.0, options.neuron_layers)
    from onnxprune.converter.auto.threads import apply_threads

    apply_threads(options.threads)
    data = Data(original, options) if options.data is not None else None
    state, extra, history = PruneState(), {}, []
    auto = _auto_or_why_not(options, data, state)
    with clock.step("choose"):
        if auto:  # the automatic search chooses, prunes and retrains (converter.auto)
            targets, sensitivity, dense_pruned, history = _auto(original, inventory, options, data, state,
                                                                 progress, extra, clock.start)
        else:
            targets, sensitivity = choose_targets(original, inventory, options, data, progress, extra)
    with clock.step("prune_retrain"):
        if auto:
            pass
        elif options.iterations > 0:
            dense_pruned, history = retrain(original, inventory, targets, options, data, state, progress,
                                            _checkpoints(options, loaded, original))
            _record_thresholds(dense_pruned, state)
        else:
            dense_pruned = _copy(original)
            run_passes([MagnitudePrune(inventory, targets), ApplyMasks()], dense_pruned, state)
    with clock.step("shrink_encode_verify"):
        shrunk, neurons = _shrink(dense_pruned, options, state)
        params_after_shrink = sum(w.size for w in find_prunable(shrunk, with_macs=False).prunable)
        final = _copy(shrunk) if shrunk is dense_pruned else shrunk  # the oracle stays dense; a new graph is ours
        del shrunk
        present = set(constant_tensors(final))
        run_passes([SparseEncode([w.name for w in inventory.prunable if w.name in present], options.sparse_format)],
                   final, state)
        parity = check_parity(final, dense_pruned, _verification_feeds(data, options))

    before, after = layer_rows(original, inventory), layer_rows(dense_pruned, inventory)
    report = {
        "model": where,
        "input_sha256": loaded.sha256,
        "layers": _merge_rows(before, after, state, targets, original, neurons),
        "skipped": skipped_rows(inventory),
        "before": totals(before),
        "after": totals(after),
        "neurons": neurons,
        "params_after_shrink": params_after_shrink,
        "file_size_before": loaded.file_size,
        "file_size_after": final.ByteSize(),
        "sparse_format": options.sparse_format,
        "parity": parity.as_dict(),
        "notes": state.notes,
        "history": history,
        "options": options.recipe(),
        **extra,
        **_sensitivity_report(sensitivity),
    }
    nonzeros = report["after"]["nonzeros"]
    report["compression"] = report["before"]["params"] / nonzeros if nonzeros else float("inf")
    if data is not None:
        with clock.step("measure"):
            report["metrics"] = measure(data, final, options)
            _add_activations(report, original, dense_pruned, inventory, data)
    report["seconds_by_step"] = clock.summary()
    report["seconds"] = report["seconds_by_step"]["total"]
    result = PruneResult(model=final, dense_model=dense_pruned, original=original, state=state, inventory=inventory,
                         report=report, sensitivity=sensitivity, history=history)
    _check_budget(result, options)
    return result


class _Clock:
    """Wall time per pipeline step, for the report."""

    def __init__(self):
        self.start = time.perf_counter()
        self.steps: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.steps[name] = time.perf_counter() - t

    def summary(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in {**self.steps, "total": time.perf_counter() - self.start}.items()}


def _auto_or_why_not(options: PruneOptions, data: Data | None, state: PruneState) -> bool:
    """Does the automatic search run? Without torch or with too little data, the one-shot search does (said once)."""
    if not options.wants_auto:
        return False
    from onnxprune.converter.auto import MIN_TRAIN_SAMPLES

    why = None
    try:
        import torch  # noqa: F401
    except ImportError:
        why = "torch is not installed"
    if why is None:
        n = data.train_reader().num_samples
        if n is not None and n < MIN_TRAIN_SAMPLES:
            why = f"--data holds {n} training samples (fewer than {MIN_TRAIN_SAMPLES})"
    if why is not None:
        note = f"{why}: the one-shot budget search ran (no retraining)"
        log.warning(note)
        state.notes.append(note)
        return False
    return True


def _auto(original, inventory, options: PruneOptions, data: Data, state: PruneState, progress, extra: dict,
          start: float):
    """The one call into converter.auto; returns (targets, sensitivity, pruned dense model, history)."""
    from onnxprune.converter.auto import AutoConfig, AutoData, auto_search

    config = AutoConfig.from_options(options)
    if not options.gather_inputs:
        options.crop_inputs = True  # speed: crop the input to what the pruned weights read
    auto_data = AutoData(train=data.train_reader(batch_size=options.train_batch_size), evaluator=data.calibration,
                         dense=original)
    result = auto_search(original, _scannable(inventory, options), auto_data, config, progress,
                         start + config.time_budget)
    state.masks.update(result.masks)
    state.notes.extend(result.notes)
    extra["auto"] = result.report()
    targets = {n: Target(sparsity=1.0 - float(m.mean())) for n, m in result.masks.items()}
    _record_thresholds(result.model, state)
    return targets, result.sensitivity, result.model, result.history


def _sensitivity_report(sensitivity) -> dict:
    if sensitivity is None:
        return {}
    layers = {lay.name: {"node": lay.node, "kind": lay.kind, "levels": list(lay.levels), "values": list(lay.values),
                         "coupled": lay.coupled} for lay in sensitivity.layers}
    return {"sensitivity": layers, "sensitivity_metric": sensitivity.metric}


# ------------------------------------------------------------------------------------------------ targets


def choose_targets(model, inventory, options: PruneOptions, data: Data | None, progress, extra: dict):
    """Per-layer targets: from the flags, or from the sensitivity scan and the loss budget (--max-loss)."""
    if options.max_loss is None:
        return resolve_targets(inventory, sparsity=options.sparsity, quality=options.quality,
                               layers=options.layers, exclude=options.exclude), None
    from onnxprune.calibration.allocate import allocate, fit_to_budget

    scanned = _scannable(inventory, options)
    sensitivity = scan(model, scanned, data.calibration, options, progress)
    allocation = allocate(sensitivity, scanned, options.max_loss)
    if options.iterations > 0:
        # Retraining recovers accuracy: every round re-measures, so the one-shot fit is only the starting point.
        extra["allocation"] = {"predicted_loss_pp": allocation.predicted_loss_pp, "sparsities": dict(allocation)}
        targets = {n: Target(sparsity=float(s)) for n, s in allocation.items()}
        return _with_overrides(targets, inventory, options), sensitivity
    outcome = fit_to_budget(model, scanned, data.calibration, allocation, options.max_loss, result=sensitivity)
    extra["allocation"] = {
        "sparsities": outcome.sparsities,
        "qualities": outcome.qualities,
        "measured_loss_pp": outcome.measured_loss_pp,
        "predicted_loss_pp": outcome.predicted_loss_pp,
        "tries": outcome.tries,
        "history": outcome.history,
        "notes": outcome.notes,
    }
    targets = {n: Target(sparsity=float(s)) for n, s in outcome.sparsities.items()}
    return _with_overrides(targets, inventory, options), sensitivity


def _scannable(inventory: Inventory, options: PruneOptions) -> Inventory:
    """Excluded and explicitly set layers are not part of the allocation."""
    from onnxprune.passes.magnitude import layer_matches

    fixed = list(options.exclude) + list(options.layers)
    keep = [w for w in inventory.prunable if not any(layer_matches(w, p) for p in fixed)]
    if not keep:
        raise ConfigError("--exclude/--layer cover every prunable layer; nothing is left for --max-loss to choose.")
    return Inventory(prunable=keep, skipped=inventory.skipped)


def _with_overrides(targets: dict, inventory: Inventory, options: PruneOptions) -> dict:
    if options.layers:
        targets.update(resolve_targets(inventory, layers=options.layers))
    return targets


def scan(model, inventory, evaluator, options: PruneOptions, progress, *, neurons: bool = False):
    """The per-layer sensitivity scan: single weights by magnitude, or (`neurons`) whole neurons per group."""
    from onnxprune.calibration.neuron_sensitivity import DEFAULT_NEURON_LEVELS, neuron_scan
    from onnxprune.calibration.sensitivity import DEFAULT_LEVELS
    from onnxprune.calibration.sensitivity import scan as sensitivity_scan

    run_scan, default = (neuron_scan, DEFAULT_NEURON_LEVELS) if neurons else (sensitivity_scan, DEFAULT_LEVELS)
    levels = tuple(options.levels) if options.levels else default
    return run_scan(model, inventory, evaluator, levels,
                    progress=lambda done, total, what="": progress("sensitivity scan", done, total, what))


# ------------------------------------------------------------------------------------------------ retraining


def _checkpoints(options: PruneOptions, loaded, original):
    if not options.checkpoint_dir:
        return None
    from onnxprune.converter.checkpoint import Checkpoints, fingerprint

    sha = loaded.sha256 or hashlib.sha256(original.SerializeToString()).hexdigest()
    return Checkpoints(options.checkpoint_dir, fingerprint(sha, options.recipe()))


def retrain(original, inventory, targets, options: PruneOptions, data: Data, state: PruneState, progress,
            checkpoints=None):
    """Iterative prune → retrain (paper §3.2–3.3) through the torch bridge; graphs the bridge cannot run are
    refit layer by layer instead (the automatic fallback, said in the notes)."""
    from onnxprune.errors import UnsupportedOpError

    try:
        return _retrain_with_bridge(original, inventory, targets, options, data, state, progress, checkpoints)
    except UnsupportedOpError as exc:
        note = (f"the torch bridge cannot run this graph ({str(exc).splitlines()[0][:200]}); "
                "retrained by layer-wise reconstruction instead")
        if options.neuron_sparsity or options.neuron_layers:
            note += "; --neuron-sparsity needs the bridge, so no neuron was masked whole (only dead ones go)"
        log.warning(note)
        state.notes.append(note)
        state.masks.clear()
        return _reconstruct(original, inventory, targets, data, state)


def _reconstruct(original, inventory, targets, data: Data, state: PruneState):
    from onnxprune.converter.reconstruct import ReconstructReport, reconstruct

    t0 = time.perf_counter()
    model = _copy(original)
    run_passes([MagnitudePrune(inventory, targets), ApplyMasks()], model, state)
    report = ReconstructReport()
    model = reconstruct(model, original, state.masks, data.train_reader(), report=report)
    score = data.calibration.evaluate(model)
    state.notes.extend(f"reconstruct left '{name}' as pruned: {why}" for name, why in report.skipped.items())
    return model, [{"round": 1, "phase": "reconstruct", "metric": score, "layers": report.refit,
                    "overall_density": sum(int(m.sum()) for m in state.masks.values())
                    / max(1, sum(m.size for m in state.masks.values())),
                    "seconds": round(time.perf_counter() - t0, 3)}]


def _retrain_with_bridge(original, inventory, targets, options: PruneOptions, data: Data, state: PruneState,
                         progress, checkpoints=None):
    """With --max-loss each round is measured and the last round within the budget is kept; otherwise the
    schedule runs to the targets. Every round is checkpointed when a folder is given; --resume continues."""
    from onnxprune.converter.schedule import iterative_prune

    resume = checkpoints.latest() if (checkpoints is not None and options.resume) else None
    if options.resume and resume is None:
        log.warning("nothing to resume in %s; starting from the first round", options.checkpoint_dir)
    elif resume is not None:
        log.warning("resuming after round %d from %s", resume["round"], options.checkpoint_dir)

    def checkpoint(step, trainer, history):
        if checkpoints is not None:
            checkpoints.save(step, trainer.export(), trainer.masks, history, trainer.state())

    reader = data.train_reader(batch_size=options.train_batch_size)
    evaluator = data.calibration

    def eval_fn(model):
        return evaluator.evaluate(model)

    def on_batch(r, rounds, epoch, batch, n_batches, loss, sparsity):
        progress(f"retrain round {r}/{rounds}", batch, n_batches,
                 f"epoch {epoch} loss {loss:.4f} sparsity {100 * sparsity:.1f}%")

    if options.max_loss is not None:
        return _retrain_within_budget(original, inventory, targets, options, reader, evaluator, state, on_batch,
                                      checkpoint, resume)
    model, masks, history = iterative_prune(
        original, inventory, targets, reader, iterations=options.iterations, epochs=options.epochs, lr=options.lr,
        schedule=options.schedule, final_epochs=options.final_epochs, final_lr=options.final_lr,
        alternate=options.alternate, batch_size=options.train_batch_size, neuron_sparsity=options.neuron_sparsity,
        neuron_layers=options.neuron_layers, eval_fn=eval_fn, progress=on_batch, checkpoint=checkpoint, resume=resume, **_trainer_options(options))
    state.masks.update(masks)
    return model, history


def _trainer_options(options: PruneOptions) -> dict:
    return {"loss": options.loss, "temperature": options.temperature, "distill_weight": options.distill_weight,
            "label_smoothing": options.label_smoothing, "device": options.device, "seed": options.seed,
            "reg": options.reg, "reg_strength": options.reg_strength}


def _retrain_within_budget(original, inventory, targets, options, reader, evaluator, state, on_batch,
                           checkpoint=None, resume=None):
    """Keep the sparsest retrained round within --max-loss (the search: converter.budget)."""
    from onnxprune.converter.budget import BudgetSearch

    trainer_options = {k: v for k, v in _trainer_options(options).items() if k not in ("reg", "reg_strength")}
    search = BudgetSearch(original, inventory, targets, options, reader, evaluator, trainer_options, resume)
    for r in range(search.done + 1, options.iterations + 1):
        if search.round(r, on_batch)["fits"] and checkpoint is not None:
            checkpoint(r, search.trainer, search.history)
        if search.finished:
            break
    if search.best is None:  # even the first, gentlest round was over budget: never worse than one-shot
        return _one_shot_fallback(original, inventory, targets, options, evaluator, state), search.history
    state.masks.update(search.best[1])
    return search.best[0], search.history


def _one_shot_fallback(original, inventory, targets, options, evaluator, state: PruneState):
    """The one-shot model within --max-loss (measured, backed off from the allocation), with a note saying so."""
    from onnxprune.calibration.allocate import fit_to_budget, pruned_model

    sparsities = {n: float(t.sparsity or 0.0) for n, t in targets.items()}
    outcome = fit_to_budget(original, inventory, evaluator, sparsities, options.max_loss)
    model = pruned_model(original, outcome.sparsities)
    state.masks.update({n: ~((weight_array(model, n) == 0) & (weight_array(original, n) != 0))
                        for n in outcome.sparsities})
    state.notes.append(f"no retrained round met the --max-loss budget; the best one-shot model within it is kept "
                       f"({outcome.compression:.1f}x fewer weights, no retraining)")
    return model


# ------------------------------------------------------------------------------------------------ shrink, measure


def _shrink(model: onnx.ModelProto, options: PruneOptions, state: PruneState):
    """Dead-neuron removal (paper §3.5): smaller dense shapes. Returns the model and per-layer channel counts."""
    if not options.neurons:
        return model, None
    from onnxprune.passes.dead_neurons import remove_dead_neurons

    shrunk, report = remove_dead_neurons(model, gather_inputs=options.gather_inputs, crop_inputs=options.crop_inputs)
    state.notes.extend(report.blocked[:10])
    layers = {
        lay.weight or lay.node: {"node": lay.node, "op": lay.op, "before": lay.before, "after": lay.after}
        for lay in report.layers
    }
    return shrunk, {"layers": layers, "removed": report.removed, "folded": report.folded}


def measure(data: Data, final: onnx.ModelProto, options: PruneOptions) -> dict:
    """The metric of the input and the output model, and how far the outputs moved: on the data the choices were
    made on, and separately on the held-out data when given."""
    from onnxprune.calibration.metrics import output_error

    out = {}
    for key, evaluator in (("calibration", data.calibration), ("evaluation", data.evaluation)):
        if key == "evaluation" and options.eval_data is None:
            continue
        after = evaluator.evaluate(final)
        out[key] = {
            "data": evaluator.reader.description,
            "metric": evaluator.metric,
            "before": evaluator.dense,
            "after": after,
            "loss_pp": (evaluator.dense - after) * 100.0,
            "output_error": output_error(evaluator.reference, list(evaluator.run(final))),
        }
    headline = out.get("evaluation", out["calibration"])
    return {**headline, "sets": out}


def _add_activations(report: dict, original, pruned, inventory: Inventory, data: Data) -> None:
    """Act% per layer before and after (share of nonzero activations on the calibration data)."""
    from onnxprune.calibration.activations import activation_density

    before = activation_density(original, inventory, data.reader())
    after = activation_density(pruned, inventory, data.reader())
    for row in report["layers"]:
        row["act_before"] = before.get(row["weight"])
        row["act"] = after.get(row["weight"])
    report["act"] = after


def _check_budget(result: PruneResult, options: PruneOptions) -> None:
    if options.max_loss is None or "metrics" not in result.report:
        return
    measured = result.report["metrics"]["sets"]["calibration"]["loss_pp"]
    result.report["budget"] = {"max_loss_pp": options.max_loss, "measured_loss_pp": measured,
                               "met": measured <= options.max_loss + 1e-9}
    decision = result.report.get("auto", {}).get("decision")
    if decision is not None:  # the automatic search decided by its stated rule on this set (converter.auto.decide)
        result.report["budget"].update(met=bool(decision["within"]), decision_loss_pp=decision["loss_pp"],
                                       limit_pp=decision["limit_pp"], rule=result.report["auto"]["rule"])


def budget_error(report: dict) -> BudgetError | None:
    budget = report.get("budget")
    if budget and not budget["met"]:
        return BudgetError(
            f"measured loss {budget['measured_loss_pp']:.3f} pp exceeds --max-loss {budget['max_loss_pp']:g}; "
            "nothing written (pass --force to write it anyway, or raise --max-loss)."
        )
    return None


def _verification_feeds(data: Data | None, options: PruneOptions):
    """A few batches of the user's data when given (real inputs hit real activations), else random inputs."""
    if data is None:
        return None
    feeds = []
    for feed in data.reader():
        feeds.append(feed)
        if len(feeds) >= options.verify_batches:
            break
    return feeds or None


def _merge_rows(before: list[dict], after: list[dict], state: PruneState, targets: dict, original,
                neurons: dict | None) -> list[dict]:
    rows = []
    for b, a in zip(before, after):
        row = dict(b)
        row["nonzeros_before"] = b["nonzeros"]
        row["nonzeros"] = a["nonzeros"]
        row["density"] = a["density"]
        row["threshold"] = state.thresholds.get(b["weight"])
        sparsity = 1.0 - a["density"] if a["density"] is not None else None
        row["quality"] = (quality_for_sparsity(weight_array(original, b["weight"]), sparsity)
                          if sparsity else None)
        t = targets.get(b["weight"])
        channels = (neurons or {}).get("layers", {}).get(b["weight"])
        if channels:
            row["neurons_before"], row["neurons_after"] = channels["before"], channels["after"]
        row["target"] = None if t is None else ({"sparsity": t.sparsity} if t.sparsity is not None else {"quality": t.quality})
        rows.append(row)
    return rows


def _record_thresholds(model: onnx.ModelProto, state: PruneState) -> None:
    """After retraining, the effective threshold of a layer is its smallest surviving magnitude."""
    for name, mask in state.masks.items():
        if mask.any() and not mask.all():
            state.thresholds[name] = float(np.min(np.abs(weight_array(model, name)[mask].astype(np.float64))))


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out
