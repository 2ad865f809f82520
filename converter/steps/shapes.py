"""Without real data: the shapes every random input of the run is drawn at, chosen once (calibration.shapes)."""

from __future__ import annotations

from onnxprune.converter.steps.base import RunState, Step, register_step
from onnxprune.converter.steps.data import DataConfig


@register_step("random-shapes")
class RandomShapesStep(Step):
    """Choose the size of the non-batch symbolic dims random inputs get (2, 32, 64 or 224: the first that runs)."""

    needs = ("original",)
    gives = ("random_shapes",)

    def __init__(self, data: DataConfig):
        super().__init__()
        self.data_config = data

    def settings(self) -> dict:
        from onnxprune.calibration.shapes import SIZE_LADDER

        return {"sizes": list(SIZE_LADDER), "input_shapes": dict(self.data_config.input_shapes)}

    def run(self, state: RunState) -> None:
        from onnxprune.calibration.shapes import choose_random_shapes

        chosen = choose_random_shapes(state.original, self.data_config.input_shapes, seed=self.data_config.seed)
        state.random_shapes = chosen.shapes
        if chosen.note:
            state.notes.append(chosen.note)

