"""How hard to prune each layer: from the flags (--sparsity, --quality, --layer, --exclude), or, with a budget,
which layers the budget may allocate over and which are fixed by the user."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from onnxprune.converter.steps.base import RunState, Step, StepConfig, register_step
from onnxprune.converter.steps.data import draws_random_inputs
from onnxprune.errors import CalibrationError, ConfigError
from onnxprune.plain import listed
from onnxprune.passes.magnitude import layer_matches, resolve_targets
from onnxprune.passes.scopes import all_nodes
from onnxprune.passes.weights import Inventory


@dataclass
class TargetsConfig(StepConfig):
    sparsity: float | None = None
    quality: float | None = None
    layers: dict[str, float] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()
    criterion: str = "magnitude"  # which weights go first (passes.criteria): magnitude | wanda | obd | taylor

    def validate(self) -> None:
        from onnxprune.passes.criteria import get_criterion

        get_criterion(self.criterion)  # unknown: a ConfigError listing the registered ones
        if self.quality is not None and self.criterion != "magnitude":
            raise ConfigError(f"--quality is the paper's magnitude rule (|w| <= q x std); it cannot rank by "
                              f"--criterion {self.criterion}: use --sparsity or --layer NAME=S with it, or drop "
                              "--criterion.")
        if self.sparsity is not None and not 0.0 <= self.sparsity < 1.0:
            raise ConfigError(f"--sparsity {self.sparsity} is outside [0, 1); use e.g. 0.9 to remove 90% of the "
                              "weights.")
        if self.sparsity is not None and self.quality is not None:
            raise ConfigError("--sparsity and --quality contradict each other; pass only one of them.")
        for name, value in self.layers.items():
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"--layer '{name}={value}': sparsity must be in [0, 1).")


def excluded_all(inventory: Inventory, exclude) -> bool:
    return bool(exclude) and all(any(layer_matches(w, p) for p in exclude) for w in inventory.prunable)


@register_step("targets")
class TargetsStep(Step):
    """Per-layer targets from the flags; with a budget, the layers it allocates over (the rest fixed)."""

    needs = ("inventory",)
    gives = ("targets", "scannable", "scoring")
    optional = ("scannable",)

    def __init__(self, config: TargetsConfig, *, budgeted: bool = False):
        super().__init__(config)
        self.config, self.budgeted = config, budgeted

    def check(self, state: RunState) -> None:
        c = self.config
        if excluded_all(state.inventory, c.exclude):
            raise ConfigError(f"--exclude {' '.join(c.exclude)} leaves no layer to prune; exclude fewer layers.")

    def run(self, state: RunState) -> None:
        from onnxprune.converter.criteria import calibration_scoring

        c, inventory = self.config, state.inventory
        if state.data is not None and not draws_random_inputs(state.data.config):  # said after pruning (shrink)
            from onnxprune.converter.coverage import feature_coverage

            state.features = feature_coverage(state.original, inventory.prunable, state.data.reader())
        reader = state.data.train_reader() if state.data is not None else None
        state.scoring = calibration_scoring(c.criterion, reader, seed=state.data.config.seed if reader else 0)
        if not self.budgeted:
            state.targets = resolve_targets(inventory, sparsity=c.sparsity, quality=c.quality, layers=c.layers,
                                            exclude=c.exclude)
            self._unreached(state)  # pruned as asked; the note says no sample checked them
            return
        fixed = list(c.exclude) + list(c.layers)
        unreached = {**self._unreached(state), **self._unscored(state)}
        keep = [w for w in inventory.prunable
                if not any(layer_matches(w, p) for p in fixed) and w.name not in unreached]
        if not keep and unreached:
            from onnxprune.passes.opfacts import QUANTIZED_HOW

            where = ", ".join(sorted(set(unreached.values()))[:2])
            quantized = sum(s.reason.endswith(QUANTIZED_HOW) for s in inventory.skipped)
            also = (f" The model's other {quantized} weights are integer-quantized: {QUANTIZED_HOW}." if quantized
                    else "")  # a dynamically quantized encoder: only its token-type table is float (sweep 13)
            raise CalibrationError(f"--data gives no evidence about any prunable weight ({where}): the budget "
                                   "cannot judge them; add samples that take those branches or read those rows."
                                   + also)
        if not keep:
            raise ConfigError("--exclude/--layer cover every prunable layer; nothing is left for --max-loss to "
                              "choose.")
        state.scannable = Inventory(prunable=keep, skipped=inventory.skipped)
        state.targets = resolve_targets(inventory, layers=c.layers) if c.layers else {}

    def _unreached(self, state: RunState) -> dict[str, str]:
        """Weights the data gives no evidence about (converter/coverage.py), with the notes: those only If branches
        that no sample of --data takes read, and embedding tables some of whose rows no sample reads."""
        if state.data is None:
            return {}
        from onnxprune.converter.coverage import branch_coverage, row_coverage

        unreached = {}
        if any(n.op_type == "If" for n in all_nodes(state.original)):
            cov = branch_coverage(state.original, state.inventory.prunable, state.data.reader())
            unreached.update(cov.unreached)
            self._say(state, cov.note(self.budgeted))
        rows = row_coverage(state.original, state.inventory.prunable, state.data.reader())
        val = state.data.config.val_data
        if rows.partial and val is not None:  # a row the decision set alone reads is read
            rows = rows.merge(row_coverage(state.original, state.inventory.prunable, state.data.reader(val)))
        # under a budget, a table whose rows the data does not all read is pruned on its read rows, the unread ones
        # given their input values back after pruning (steps/rows.py); rows on the stored axis 0: no op between the
        # table and its lookup
        if self.budgeted and not draws_random_inputs(state.data.config):
            tables = {w.name: w.shape for w in state.inventory.prunable if not w.via}
            state.unread_rows = {n: np.broadcast_to((~read).reshape(-1, *[1] * (len(tables[n]) - 1)), tables[n]).copy()
                                 for n, read in rows.read.items() if n in tables}
            state.scoring.last = state.unread_rows  # a sparsity is a share of the read entries: counts stay exact
        unreached.update({n: why for n, why in rows.reasons().items() if n not in state.unread_rows})
        self._say(state, rows.note(self.budgeted, state.unread_rows))
        return unreached

    def _unscored(self, state: RunState) -> dict[str, str]:
        """Weights that reach no scored output (--metric names only other outputs): the budget sees no loss when
        they are pruned, so a search would empty them and the outputs they feed with them. Left as they are, said.
        Sweep 9: a recommender's `rating` head (r.weight) fed only the unscored output; emptied, the run failed."""
        if state.data is None:
            return {}
        from onnxprune.calibration.sensitivity import unscored_weights

        outputs = state.data.scored_outputs()  # no dense pass: the one-shot plan's split runs its own (choose-apart)
        self._say(state, unscored_outputs_note(state.original, outputs))
        found = unscored_weights(state.original, state.inventory, outputs)
        if found:
            scored = ", ".join(o for o in outputs if o)
            names = listed(f"'{n}'" for n in found)
            state.notes.append(f"{len(found)} weight(s) reach no scored output ({names}; scored: {scored}) and were "
                               "left as they are: the budget has no evidence about them; score the outputs they "
                               "feed (--metric OUTPUT=KIND for each) to prune them")
        return dict.fromkeys(found, "reaches no scored output")

    @staticmethod
    def _say(state: RunState, note: str | None) -> None:
        if note:
            state.notes.append(note)


def unscored_outputs_note(model, scored: list[str]) -> str | None:
    """The graph outputs --metric left out that pruning can change (a weighted layer reaches them), said by name:
    the layers they share with the scored outputs are pruned with nothing holding them. Sweep 32: a DETR-style head
    run with `--metric center=rel_l2` changed 3.00% of its held-out `class_logits` classes, and the only line about
    it named the one weight left alone ("reach no scored output ('cls.weight'; scored: center)")."""
    from onnxprune.calibration.metric_choice import untouched_outputs

    if not all(scored):  # "" = the first output, no reference: nothing was named
        return None
    fixed = set(untouched_outputs(model))
    left = [o.name for o in model.graph.output if o.name not in scored and o.name not in fixed]
    if not left:
        return None
    many = len(left) > 1
    return (f"output{'s' if many else ''} {listed(repr(n) for n in left)} {'are' if many else 'is'} not scored: "
            f"--metric names only {listed(repr(n) for n in scored)}, so the layers shared with "
            f"{'them' if many else 'it'} are pruned with nothing holding {'them' if many else 'it'}; name every "
            "output that matters (--metric OUTPUT=KIND for each), or drop --metric and give one output a budget of "
            "its own with --max-loss OUTPUT=L")
