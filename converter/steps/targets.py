"""How hard to prune each layer: from the flags (--sparsity, --quality, --layer, --exclude), or, with a budget,
which layers the budget may allocate over and which are fixed by the user."""

from __future__ import annotations

from dataclasses import dataclass, field

from onnxprune.converter.steps.base import RunState, Step, StepConfig, register_step
from onnxprune.errors import CalibrationError, ConfigError
from onnxprune.passes.magnitude import layer_matches, resolve_targets
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
        reader = state.data.train_reader() if state.data is not None else None
        state.scoring = calibration_scoring(c.criterion, reader, seed=state.data.config.seed if reader else 0)
        if not self.budgeted:
            state.targets = resolve_targets(inventory, sparsity=c.sparsity, quality=c.quality, layers=c.layers,
                                            exclude=c.exclude)
            return
        fixed = list(c.exclude) + list(c.layers)
        keep = [w for w in inventory.prunable if not any(layer_matches(w, p) for p in fixed)]
        if not keep:
            raise ConfigError("--exclude/--layer cover every prunable layer; nothing is left for --max-loss to "
                              "choose.")
        keep = _exercised(state, keep)
        state.scannable = Inventory(prunable=keep, skipped=inventory.skipped)
        state.targets = resolve_targets(inventory, layers=c.layers) if c.layers else {}


def _exercised(state: RunState, weights: list) -> list:
    """The weights the decision data reaches: those read only in an If branch it never takes stay dense (a budget
    cannot measure them), with a note naming the branch (calibration/branches.py)."""
    if state.data is None or not any(w.scope.startswith("If '") for w in weights):
        return weights
    from onnxprune.calibration.branches import untaken_weights

    untaken = untaken_weights(state.original, weights, (feeds for feeds, _ in state.data.calibration.batches()))
    if not untaken:
        return weights
    by_branch: dict[str, list[str]] = {}
    for name, branch in untaken.items():
        by_branch.setdefault(branch, []).append(name)
    for branch, names in by_branch.items():
        shown = ", ".join(f"'{n}'" for n in names[:3]) + (", …" if len(names) > 3 else "")
        state.notes.append(f"{len(names)} weight(s) read only in {branch} left dense: the data never takes that "
                           f"branch, so no budget can measure them ({shown}); add samples that take it to prune "
                           "them.")
    kept = [w for w in weights if w.name not in untaken]
    if not kept:
        raise CalibrationError("every prunable weight is read only in If branches your data never takes ("
                          + ", ".join(sorted(by_branch)) + "); give --data samples that take them.")
    return kept
