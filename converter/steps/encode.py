"""Storage: pruned weights written sparse where that makes the file smaller (passes.sparse_encode)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.converter.steps.base import RunState, Step, StepConfig, register_step
from onnxprune.converter.steps.prune import copy_model
from onnxprune.converter.summary import layer_rows, totals
from onnxprune.errors import ConfigError
from onnxprune.plain import listed
from onnxprune.passes.base import run_passes
from onnxprune.passes.bypass_identity import reshare
from onnxprune.passes.sparse_encode import FORMATS, SparseEncode
from onnxprune.passes.scopes import FLOAT_TYPES, constant_homes
from onnxprune.passes.storage import describe_model, packing
from onnxprune.passes.storage.coo import old_opset_note, scatter_pays_off
from onnxprune.passes.storage.decoder import MIN_OPSET
from onnxprune.passes.storage.graphs import default_opset, fed_inputs
from onnxprune.passes.weights import constant_tensors, find_prunable, unname_nodes


@dataclass
class EncodeConfig(StepConfig):
    sparse_format: str | None = None  # None: the input's own kept format (storage.kept_formats), else DEFAULT_FORMAT

    def validate(self) -> None:
        if self.sparse_format is not None and self.sparse_format not in FORMATS:
            raise ConfigError(f"--sparse-format '{self.sparse_format}' is not one of {', '.join(FORMATS)}.")


@register_step("encode")
class EncodeStep(Step):
    """Encode the pruned weights in the chosen storage format (the oracle `pruned` stays dense)."""

    main_only = True
    needs = ("shrunk", "pruned", "inventory")
    gives = ("final",)

    def __init__(self, config: EncodeConfig):
        super().__init__(config)
        self.config = config

    def run(self, state: RunState) -> None:
        written = totals(layer_rows(state.shrunk, find_prunable(state.shrunk, with_macs=False)))  # as inspect counts
        state.params_after_shrink, state.nonzeros_after_shrink = written["params"], written["nonzeros"]
        # the oracle stays dense; a new graph (after a shrink) is ours to encode in place
        final = copy_model(state.shrunk) if state.shrunk is state.pruned else state.shrunk
        state.shrunk = None
        if state.quantized:  # folded QDQ weights back on their grid (int8 stays dense: no sparse int format pays)
            from onnxprune.passes.quantized_weights import restore

            note = grid_kept_note(final, state.quantized)  # read while they are float
            restore(final, state.quantized, state.slices)
            if note:
                state.prune.notes.append(note)
        reshare(final, state.prune.copies)  # the load step's bias copies still equal to another: one again
        present = set(constant_tensors(final))
        names = [w.name for w in state.inventory.prunable if w.name in present]
        from onnxprune.converter.steps.verify import parity_feeds

        fmt = state.sparse_format = self.config.sparse_format or self._default_format(state, final)
        note = float_values_note(state, final, fmt)
        if note:
            state.prune.notes.append(note)
        final, raise_failed = raised_for_storage(final, names, fmt, state.prune.notes, lambda: parity_feeds(state, 1))
        run_passes([SparseEncode(names, fmt)], final, state.prune)
        note = codebooks_dropped_note(state, final)
        if note:
            state.prune.notes.append(note)
        if fmt in COO_FORMATS and not raise_failed:  # compact would need the raise that failed
            note = dense_kept_note(final, names)
            if note:
                state.prune.notes.append(note)
        if state.unfed:  # the optional inputs --data left out: the written model takes them again
            from onnxprune.converter.modelio import inputs_back

            inputs_back(final, state.unfed)
        unname_nodes(final, state.loaded.named if state.loaded is not None else ())  # the input's own names
        state.final = final

    @staticmethod
    def _default_format(state: RunState, model) -> str:
        """Without --sparse-format: the format the input itself stored weights in where a run keeps it (compact: a
        model pruned with --sparse-format compact and pruned again had grown 333 KB -> 585 KB in the default's COO);
        else, with --weight-bits, a format that stores the values in their width (compact: the default's COO wrote
        LeNet-5's 4-bit codes as float32, 857 KB, the same file as without them, for a 34% change of a layer's range;
        86.6 KB compact; not below IR 4, where compact writes COO); else DEFAULT_FORMAT. Each choice but the last is
        said."""
        kept = state.loaded.formats if state.loaded is not None else []
        if kept:
            state.prune.notes.append(f"pruned weights are stored in the input's own format, --sparse-format "
                                     f"{kept[0]} (--sparse-format {DEFAULT_FORMAT} for the default)")
            return kept[0]
        bits = getattr(getattr(state.config, "quantize", None), "weight_bits", None)
        narrow = [f.name for f in FORMATS.values() if f.narrow and model.ir_version >= f.min_ir]
        if bits is None or not narrow:  # below its IR (compact: 4) a narrow format would write COO anyway
            return DEFAULT_FORMAT
        state.prune.notes.append(f"--weight-bits {bits}: pruned weights are stored --sparse-format {narrow[0]}, which "
                                 f"keeps their values in that width (--sparse-format {DEFAULT_FORMAT} writes them as "
                                 "float32)")
        return narrow[0]


def float_values_note(state: RunState, model, fmt: str) -> str | None:
    """--weight-bits with a --sparse-format named that stores no narrow values (constant, initializer, dense): the
    fp16 or codebook values are written as float32, so the file is no smaller for them while the outputs moved
    (sweep 34: a FiLM CNN at --sparsity 0.5 --weight-bits 16 --sparse-format dense, 133.11 KB -> 132.80 KB, "5
    weight(s) quantized (fp16)" and nothing else). Said, with the format that keeps them in their width; None where
    no width was kept, the format is narrow, or no narrow format reaches the model's IR."""
    bits = (state.quantize or {}).get("weight_bits")
    narrow = [f.name for f in FORMATS.values() if f.narrow and model.ir_version >= f.min_ir]
    if bits is None or FORMATS[fmt].narrow or not narrow:
        return None
    what = "fp16 values" if bits == 16 else f"{bits}-bit codebook values"
    return (f"--weight-bits {bits}: --sparse-format {fmt} writes the {what} as float32, so the file is no smaller "
            f"for them (their change to the outputs is measured all the same); --sparse-format {narrow[0]} keeps "
            "them in that width")


def codebooks_dropped_note(state: RunState, final) -> str | None:
    """Weights the input stored on n-bit codebooks (an earlier run's --weight-bits n) that `final` stores as plain
    float32 values (a refit or retraining moved them off, or a format without codebooks): the file can grow (the
    shipped LeNet-5 at 0.8, 4-bit codebooks, compact, 86.6 KB, pruned again by --data --max-loss 1: 2.64x fewer
    weights, 138 KB). Said, with the flag that writes codebooks again; None otherwise."""
    stored = state.loaded.storage if state.loaded is not None else {}
    coded = {k: v["codebook_bits"] for k, v in stored.items() if v.get("codebook_bits")}
    if not coded:
        return None
    written = describe_model(final)
    dropped = sorted(k for k in coded if k in written and not written[k].get("codebook_bits"))
    if not dropped:
        return None
    bits = max(coded[k] for k in dropped)
    return (f"the input stored {listed(dropped, 2)} on {bits}-bit codebooks (--weight-bits); this run writes "
            f"{'them' if len(dropped) > 1 else 'it'} as float32 values: --weight-bits {bits} writes codebooks again "
            "(their change measured within the budget)")


DEFAULT_FORMAT = "constant"  # without --sparse-format, and an input stored in no kept format
COO_FORMATS = ("constant", "initializer")
# the lowest opset each format's ops exist at: "constant"'s scatter chain (passes/storage/coo.py), compact's decoder
# (CumSum, ScatterND, BitShift); "initializer" (a sparse initializer) and "dense" at any
STORAGE_OPSET = {"constant": 9, "compact": MIN_OPSET}
COMPACT_NODES = 400  # bytes: about what a compact decoder's nodes and record cost beside its arrays


def raised_for_storage(model: onnx.ModelProto, names: list[str], fmt: str, notes: list[str],
                       feeds: Callable[[], list | None] = lambda: None) -> tuple[onnx.ModelProto, bool]:
    """A model below opset 9 (the ONNX zoo's classic CNNs are opset 7; old exporters wrote 7 and 8) has no op that
    holds a sparse weight, so every pruned weight stayed dense and the file did not shrink (sweep 29's L4); compact's
    decoder needs opset 11. Where a pruned weight would be smaller in the format, the model is raised to the format's
    opset (STORAGE_OPSET) by onnx.version_converter (Upsample's scales become an input, then a Resize; ...), kept
    only when onnxruntime gives the same outputs on `feeds()` (a batch of the data, read only when a raise is tried;
    seeded random inputs without it), as the verify step then checks again; otherwise it stays as it is, and the
    note says why. Returns the model and whether a raise was tried and failed."""
    from onnx import version_converter

    from onnxprune.passes.storage.graphs import first_line

    if model.ir_version < FORMATS[fmt].min_ir:  # compact writes COO there (passes/storage/compact.py)
        fmt = "constant"
    opset, target = default_opset(model), STORAGE_OPSET.get(fmt, 0)
    if opset >= target:
        return model, False
    tensors, inputs = constant_tensors(model), fed_inputs(model)

    def smaller(name: str) -> bool:
        values = numpy_helper.to_array(tensors[name])
        if fmt == "compact":
            return packing.candidates(values)[0].nbytes + COMPACT_NODES < values.nbytes
        return scatter_pays_off(values, name)

    pays = [n for n in names if n in tensors and n not in inputs and tensors[n].data_type in FLOAT_TYPES
            and smaller(n)]
    if not pays:
        return model, False
    from onnxprune.converter.verify import check_parity

    try:
        raised = version_converter.convert_version(model, target)
        onnx.checker.check_model(raised)
        check_parity(raised, model, feeds())
    except Exception as exc:  # noqa: BLE001 - any failure keeps the model as it is, and says so
        if opset < STORAGE_OPSET["constant"]:
            notes.append(old_opset_note(opset, first_line(exc)))
        else:  # compact at opset 9-10: the scatter chain instead (passes/storage/compact.py says so)
            notes.append(f"raising the model to opset {target} for --sparse-format compact's decoder failed "
                         f"({first_line(exc)})")
        return model, True
    why = (f"no op below opset {target} holds a sparse weight" if fmt == "constant" else
           f"compact's decoder needs opset {target}")
    notes.append(f"opset raised {opset} -> {target} by onnx.version_converter (onnxruntime gives the same outputs), "
                 f"so that {len(pays)} pruned weight(s) are stored {'sparse' if fmt == 'constant' else 'compact'}: "
                 f"{why}; --sparse-format dense keeps opset {opset}")
    return raised, False


def grid_kept_note(model: onnx.ModelProto, folded) -> str | None:
    """Why an integer-quantized model's file did not shrink with its nonzeros (sweep 30: quantize_dynamic's LeNet-5,
    "3.16x fewer" nonzeros and "file 431.13 KB -> 431.13 KB", nothing said): a pruned integer weight is written back
    dense on its own grid, a pruned entry as its zero point, since no sparse form of integer weights is written.
    None when no such weight lost an entry. Read before `restore`, while the folded weights are float."""
    from onnxprune.passes.quantized_weights import _along

    tensors = constant_tensors(model)
    count = entries = kept = nbytes = 0
    kinds = set()
    for w in folded:
        if w.lowp or w.name not in tensors:
            continue
        values = numpy_helper.to_array(tensors[w.name])
        nonzeros = int(np.count_nonzero(values))
        stored = numpy_helper.to_array(w.integer).astype(np.int64)
        zero = 0 if w.zero_point is None else numpy_helper.to_array(w.zero_point).astype(np.int64)
        axis = w.axis if np.size(zero) > 1 else None
        if stored.shape != values.shape or nonzeros >= np.count_nonzero(stored != _along(np.asarray(zero), axis,
                                                                                         stored.ndim)):
            continue  # none pruned (an entry at its zero point in the input is none; a shrunk one is not compared)
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(w.integer.data_type).itemsize
        count, entries, kept = count + 1, entries + values.size, kept + nonzeros
        nbytes += values.size * itemsize
        kinds.add(onnx.TensorProto.DataType.Name(w.integer.data_type).lower())
    if not count:
        return None
    return (f"{count} pruned integer-quantized weight(s) ({_size(nbytes)} of {'/'.join(sorted(kinds))}, "
            f"{kept / entries:.0%} of their entries kept) stay dense in the file: each is written back on its own "
            "grid, a pruned entry as its zero point, and no sparse form of integer weights is written: the file "
            "shrinks only by the neurons removed whole")


def dense_kept_note(model: onnx.ModelProto, names: list[str]) -> str | None:
    """Why a pruned model's file did not shrink, where that is so: COO (int64 index + value per nonzero) pays only
    below about a third of the weights kept, so at the densities a budget often ends at (30-70%) the pruned weights
    stay dense, zeros and all. Says how many, and what `compact` (a bitmask or relative indices plus the nonzeros,
    measured on these very weights, without its few decoder nodes) would store them in (below opset 11, after
    raising the model to 11: raised_for_storage); None when that saves under 10% or under 1 KB. Weights that are
    graph inputs too stay dense in every format: then the note says that instead."""
    tensors, homes = constant_tensors(model), constant_homes(model)
    graph_inputs = fed_inputs(model)
    count = entries = kept = dense = compact = 0
    as_inputs: list[int] = []  # bytes of pruned weights that are graph inputs too
    itemsizes = set()
    for name in names:
        if name not in tensors or homes[name][0] is not model.graph:  # encoded sparse, or in a body (COO there)
            continue
        values = numpy_helper.to_array(tensors[name])
        nonzeros = int(np.count_nonzero(values))
        if values.dtype not in packing.FLOATS or nonzeros == values.size:
            continue
        if name in graph_inputs:
            as_inputs.append(values.nbytes)
            continue
        count, entries, kept, dense = count + 1, entries + values.size, kept + nonzeros, dense + values.nbytes
        itemsizes.add(values.dtype.itemsize)
        compact += min(packing.candidates(values)[0].nbytes, values.nbytes)
    if as_inputs:
        # sweep 26: the note blamed COO's cost at 10% kept and offered compact for weights no sparse form may replace
        return (f"{len(as_inputs)} pruned weight(s) ({_size(sum(as_inputs))}) stay dense in the file: they are graph "
                "inputs too, which a caller may feed and no sparse form may replace (torch.onnx writes them so with "
                "keep_initializers_as_inputs=True); re-export without them as inputs (torch.onnx: "
                "keep_initializers_as_inputs=False) to store them sparse")
    if not count or dense - compact < max(0.1 * dense, 1024):
        return None
    opset = default_opset(model)
    # COO pays below itemsize / (itemsize + 8) kept: a third for float32, a fifth for float16
    shares = " or ".join(_BREAK_EVEN.get(k, f"{k / (k + 8):.0%}") for k in sorted(itemsizes, reverse=True))
    head = (f"{count} pruned weight(s) ({_size(dense)}, {kept / entries:.0%} of their entries kept) stay dense in "
            f"the file: sparse COO storage costs an int64 index beside each nonzero and pays only below about {shares} "
            "kept; ")
    least = FORMATS["compact"].min_ir  # its arrays are initializers, which IR 3 lists among the inputs
    if model.ir_version < least:
        return head + (f"--sparse-format compact would store them in about {_size(compact)} but needs IR >= {least} "
                       f"(this model has IR {model.ir_version})")
    return head + (f"--sparse-format compact stores them in about {_size(compact)} (exact; onnxruntime decodes them "
                   "at load" + (f"; it raises the model from opset {opset} to {MIN_OPSET}, where the outputs stay the "
                                "same)" if opset < MIN_OPSET else ")"))


_BREAK_EVEN = {8: "half", 4: "a third", 2: "a fifth"}  # itemsize -> the share kept below which COO pays


def _size(n: int) -> str:
    return f"{n / 2**20:.2f} MB" if n >= 2**20 else f"{n / 1024:.1f} KB"
