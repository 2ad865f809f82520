"""Read the model and list what can be pruned."""

from __future__ import annotations

import onnx

from onnxprune.converter import modelio
from onnxprune.converter.steps.base import RunState, Step, register_step
from onnxprune.converter.verify import input_session
from onnxprune.errors import ConverterError, ModelError
from onnxprune.plain import listed, more
from onnxprune.passes import quantized_weights
from onnxprune.passes.loading import (CHANCE_FIX, chance_nodes, run_load_passes, training_mode_fix,
                                      training_mode_nodes)
from onnxprune.passes.opfacts import QUANTIZED_HOW
from onnxprune.passes.weights import Inventory, attribute_parameters, find_prunable, name_nodes


def load(source) -> modelio.LoadedModel:
    """The model read and checked, its nodes named; refused at once when onnxruntime cannot load it (a custom-domain
    op, an IR version newer than it reads): every later step measures in onnxruntime."""
    loaded = modelio.from_proto(source) if isinstance(source, onnx.ModelProto) else modelio.load_model(source)
    loaded.named = name_nodes(loaded.model)
    input_session(loaded.model)
    refuse_training_mode(loaded.model)
    return loaded


def refuse_training_mode(model: onnx.ModelProto) -> None:
    """A model exported in training mode, or whose outputs a random op reaches, is refused at once, naming its nodes:
    those outputs are no function of the sample, so no loss can be measured (sweep 30: 24 s of work, then "differs
    from the dense model ... report it with --debug"; sweep 33: a VAE's sampling, chance_nodes)."""
    found = training_mode_nodes(model)
    if found:
        raise ModelError(
            f"The model was exported in training mode: {listed(found, 2)} make{'s' if len(found) == 1 else ''} every "
            f"output depend on chance or on the rest of the batch, so nothing can be measured against it. "
            f"{training_mode_fix(found)}")
    drawn = chance_nodes(model)
    if drawn:
        raise ModelError(
            f"The model draws random numbers: {listed(drawn, 2)} draws new values on every run, so those outputs are "
            f"no function of the input and nothing can be measured against them. {CHANCE_FIX}")


def inventory_of(model: onnx.ModelProto, *, where: str) -> Inventory:
    inventory = find_prunable(model)
    if not inventory.prunable:
        largest = sorted(inventory.skipped, key=lambda s: -s.size)  # what the user would most want pruned first
        how = f": {QUANTIZED_HOW}"  # what integer weights would take: said once, after the weights it concerns
        reasons = "; ".join(f"{s.name} ({s.size:,} values): {s.reason.removesuffix(how)}" for s in largest[:3])
        reasons = reasons or "no weights at all"
        rest = more(len(largest), 3, "smaller")
        quantized = sum(s.reason.endswith(how) for s in largest)
        if quantized:
            rest += (f". {quantized} of the {len(largest)} weights seen are integer-quantized"
                     f"{' (all)' if quantized == len(largest) else ''}: {QUANTIZED_HOW}")
        computed = ""
        if inventory.computed:  # e.g. onnx's "light" test models: every Conv weight is a ConstantOfShape fill
            computed = (f" Weights that are not stored tensors cannot be pruned: {listed(inventory.computed, 1)}; "
                        "export the model with its weights as initializers.")
        # e.g. skl2onnx's LinearClassifier: the coefficients are node attributes, not tensors; a small linear model's
        # (sweep 32: Ridge on 10 features, 10 coefficients) too, which were "no weights at all"
        held = attribute_parameters(model) or attribute_parameters(model, least=2)
        if held:
            extra = more(len(held), 1, "more attribute" + ("s" if len(held) > 2 else ""))
            computed += (f" Parameters held in node attributes cannot be pruned: {held[0][1]}{extra}; only weight "
                         "tensors (initializers or Constant nodes) feeding these ops can.")
            reasons = reasons.replace("no weights at all", "no weight tensors")
        raise ConverterError(
            f"'{where}' has no prunable weights (float weights of Conv/ConvTranspose/Gemm/MatMul/LSTM/GRU/RNN, or an "
            f"embedding table a Gather reads with ids). "
            f"Largest seen: {reasons}{rest}.{computed} Nothing to do."
        )
    return inventory


def where(state: RunState) -> str:
    return str(state.loaded.path) if state.loaded.path else "<model>"


@register_step("load")
class LoadStep(Step):
    """Read and check the model (external data, sparse initializers densified, an Identity between a weight and
    its layer dropped and bit-identical weight copies merged, so a weight used several times is one tied weight:
    passes/bypass_identity.py, passes/merge_copies.py)."""

    needs = ("source",)
    gives = ("loaded", "original")

    def run(self, state: RunState) -> None:
        state.loaded = load(state.source)
        if state.loaded.inlined:  # torch's export_modules_as_functions: the weights are read inside the functions
            from onnxprune.converter.inspect import inlined_text

            state.prune.notes.append(inlined_text(state.loaded.inlined, state.loaded.folded))
        if state.loaded.model is not state.source:  # never the caller's own ModelProto (one over 2 GB is not copied)
            run_load_passes(state.loaded.model, state.prune)
        if quantized_weights.foldable(state.loaded.model):  # QDQ: pruned as floats, written back on their grid
            if state.loaded.model is state.source:
                from onnxprune.converter.steps.prune import copy_model

                state.loaded.model = copy_model(state.loaded.model)
            state.quantized = quantized_weights.fold(state.loaded.model)
            integer = [w for w in state.quantized if not w.lowp]
            if integer:
                state.prune.notes.append(
                    f"{len(integer)} integer-quantized weight(s) ({quantized_weights.kinds(integer)}) are pruned as "
                    "float and written back on their own grid (same scales and zero points; a pruned weight is the "
                    "zero point)")
            if len(integer) < len(state.quantized):
                state.prune.notes.append(
                    f"{len(state.quantized) - len(integer)} tensor(s) stored as "
                    f"{quantized_weights.lowp_kinds(state.quantized)} and read through a Cast (weights, biases) are "
                    "pruned, refit and shrunk in float32 and written back in their stored type (a changed value "
                    "rounded to it; the budget is checked on the model as written)")
        state.original = state.loaded.model


@register_step("inventory")
class InventoryStep(Step):
    """Find the prunable weights; say what is left alone and why."""

    needs = ("original",)
    gives = ("inventory",)

    def run(self, state: RunState) -> None:
        state.inventory = inventory_of(state.original, where=where(state))
