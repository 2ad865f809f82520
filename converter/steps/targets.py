"""How hard to prune each layer: from the flags (--sparsity, --quality, --layer, --exclude), or, with a budget,
which layers the budget may allocate over and which are fixed by the user."""

from __future__ import annotations

from dataclasses import dataclass, field

from onnxprune.converter.steps.base import RunState, Step, StepConfig, register_step
from onnxprune.errors import CalibrationError, ConfigError
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
        reader = state.data.train_reader() if state.data is not None else None
        state.scoring = calibration_scoring(c.criterion, reader, seed=state.data.config.seed if reader else 0)
        if not self.budgeted:
            state.targets = resolve_targets(inventory, sparsity=c.sparsity, quality=c.quality, layers=c.layers,
                                            exclude=c.exclude)
            self._unreached(state)  # pruned as asked; the note says no sample checked them
            return
        fixed = list(c.exclude) + list(c.layers)
        unreached = self._unreached(state)
        keep = [w for w in inventory.prunable
                if not any(layer_matches(w, p) for p in fixed) and w.name not in unreached]
        if not keep and unreached:
            where = ", ".join(sorted(set(unreached.values()))[:2])
            raise CalibrationError(f"no sample of --data takes the branches that hold the weights ({where}): the "
                                   "budget has no evidence about any of them; add samples that take those branches.")
        if not keep:
            raise ConfigError("--exclude/--layer cover every prunable layer; nothing is left for --max-loss to "
                              "choose.")
        state.scannable = Inventory(prunable=keep, skipped=inventory.skipped)
        state.targets = resolve_targets(inventory, layers=c.layers) if c.layers else {}

    def _unreached(self, state: RunState) -> dict[str, str]:
        """Weights only If branches that no sample of --data takes read (converter/coverage.py), with the note."""
        if state.data is None or not any(n.op_type == "If" for n in all_nodes(state.original)):
            return {}
        from onnxprune.converter.coverage import branch_coverage

        cov = branch_coverage(state.original, state.inventory.prunable, state.data.reader())
        note = cov.note(self.budgeted)
        if note:
            state.notes.append(note)
        return cov.unreached
