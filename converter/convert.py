"""Run, check the budget, write: what the command line and the Python API share below their fronts.

`convert` runs the plan, refuses a missed budget (unless forced), writes the model atomically (never over the
input), writes report.html/report.json/recipe.toml with the measured latency, and clears the checkpoints of a
completed run. It returns the result; showing it is the caller's business.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path

import onnx

from onnxprune.converter import modelio
from onnxprune.converter.pipeline import PruneResult, RunConfig, budget_error, run
from onnxprune.errors import CalibrationError, ConfigError, ModelError
from onnxprune.plain import nbytes

log = logging.getLogger(__name__)


def check_report_dir(report_dir: Path, flag: str = "--report") -> None:
    if report_dir.exists() and not report_dir.is_dir():
        raise ConfigError(f"{flag} '{report_dir}' is a file; give a folder.")
    if not report_dir.parent.exists():
        raise ConfigError(f"{flag} folder's parent '{report_dir.parent}' does not exist; create it first.")
    modelio.check_output_folder(report_dir, flag)  # /proc, read-only mounts: refused before any work


def preflight(model, output: Path | None, config: RunConfig, *, report_dir: Path | None = None) -> None:
    """The checks a run makes before any work: the model and data files exist; -o, --report and --checkpoint-dir can
    be written and are not the input model or its data. `prune --plan` makes them too (CI audit: a plan exited 0 for
    a missing model, a missing --data file, a missing output folder and -o equal to the input, each of which the run
    refuses in its first second)."""
    if isinstance(model, (str, os.PathLike)) and not Path(model).exists():
        raise ModelError(f"model file '{model}' does not exist; check the path.")
    d = config.data
    for source in (d.data, d.eval_data, d.val_data):
        if isinstance(source, (str, os.PathLike)) and str(source) != "random" and not Path(source).exists():
            raise CalibrationError(f"calibration data '{source}' does not exist; pass an .npz file, a folder or "
                                   "'random'.")
    protect = (Path(model),) if isinstance(model, (str, os.PathLike)) else ()
    if output is not None:
        modelio.check_output_path(Path(output), protect=protect)
        _not_the_data(Path(output), config)
        modelio.check_model_output(Path(output))
    if report_dir is not None:
        if output is None:
            raise ConfigError("report_dir needs output too: the report describes a written model.")
        if Path(report_dir).absolute() == Path(output).absolute():
            raise ConfigError(f"--report '{report_dir}' is the output model's path (-o); give the report a folder of "
                              "its own, such as 'report'.")
        check_report_dir(Path(report_dir))
    if config.retrain.checkpoint_dir:  # checked before any work, as -o and --report are (sweep 15)
        check_report_dir(Path(config.retrain.checkpoint_dir), "--checkpoint-dir")


# `--plan` reads all of --data as the run's first pass does (names, dtypes, shapes and labels of every file; the run
# refused a folder's 5th file in its targets step while the plan had looked only at the first) up to this size;
# a larger set is looked at by its first batch only, the plan staying a quick check
PLAN_READS_BYTES = 1 << 30


def _bytes_under(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return path.stat().st_size if path.exists() else 0


def data_opens(model, config: RunConfig) -> None:
    """`prune --plan`'s look into its data files: each real --data/--eval-data/--val-data opened against the model's
    inputs as the run's data step opens it, and read through as the run's first pass reads it (every file's names,
    ranks, dtypes and labels, up to PLAN_READS_BYTES), so the plan refuses
    what the run refuses in its first seconds (audit 39: a calibration file whose array was named 'image' where the
    model takes 'input' planned with exit 0 and the run failed with exit 1). Only the readers' own refusals count:
    a model or source the readers cannot judge without the run's load step is left to the run."""
    if not isinstance(model, (str, os.PathLike)):
        return
    from onnxprune.calibration.readers import open_data

    d = config.data
    sources = [s for s in (d.data, d.eval_data, d.val_data) if isinstance(s, (str, os.PathLike)) and str(s) != "random"]
    if not sources:
        return
    try:
        graph = onnx.load(str(model), load_external_data=False)
    except Exception:  # noqa: BLE001 - the run's load step says what is wrong with the model
        return
    for source in sources:
        try:
            reader = open_data(source, graph, labels=d.labels, batch_size=d.batch_size or 64, limit=d.limit,
                               seed=d.seed, shapes=d.input_shapes, warn=False)
            if _bytes_under(Path(source)) <= PLAN_READS_BYTES:
                for _ in reader.batches():  # every file as the run reads it: a bad 5th of 6 files is the plan's
                    pass
        except CalibrationError:
            raise
        except Exception:  # noqa: BLE001 - anything else is for the run to find and say
            log.debug("--plan: %s not checked against the model", source, exc_info=True)


def convert(model, output: Path | None, config: RunConfig, *, report_dir: Path | None = None, force: bool = False,
            progress=None, command=None, on_budget_error=None, started: float | None = None) -> PruneResult | None:
    """Run the plan; with `output`, write the model (and with `report_dir` the report). A missed budget raises
    BudgetError after `on_budget_error(report)` (so a caller can still show the numbers); with `force` the model
    is written and `budget_error(result.report)` tells the caller. `started`: when the run's clock starts
    (pipeline.run)."""
    from onnxprune.calibration import readers

    readers.new_run()  # what a run says once, said again by the next run in this process
    preflight(model, output, config, report_dir=report_dir)
    protect = (Path(model),) if isinstance(model, (str, os.PathLike)) else ()
    from onnxprune.converter import distributed, streaming

    if output is not None and streaming.applies(model, config):  # big one-shot: tensor by tensor, bounded memory
        return _streamed(model, Path(output), config, report_dir, progress, command) if distributed.is_main() else None
    from onnxprune.calibration.runtime import arena_scope

    # on the command line a library that prints (onnx-graphsurgeon) must not break --json: its stdout goes to stderr.
    # An API run leaves the caller's sys.stdout alone (audit 40: it was stderr for the whole call, so the caller's
    # other threads printed there too). The data step may turn the arena off
    api = list(command or []) == [API_COMMAND]
    quiet = contextlib.nullcontext() if api else contextlib.redirect_stdout(sys.stderr)
    with quiet, arena_scope():
        result = run(model, config, progress, started, reports=output is not None and report_dir is not None)
    if result is None:  # a torchrun process other than rank 0: it trained; rank 0 writes
        return None
    report = result.report
    report["command"] = list(command or [])
    from onnxprune.converter.steps.data import list_outputs

    if list_outputs(config.data.metric):  # every sample a request (a feed's rows read as one list): said so
        _notes_in_request_words(report)
    if api:
        _notes_in_api_words(report)
    failed = budget_error(report)
    if failed is not None and not force:
        if on_budget_error is not None:
            on_budget_error(report)
        raise failed
    if output is not None:
        output = Path(output)
        t0 = time.perf_counter()
        modelio.save_model(result.model, output, protect=protect)
        report["output"] = str(output)
        report["file_size_after"] = modelio.saved_size(output)  # with its external data
        _input_as_given(model, output, report, protect, storage_asked=config.encode.sparse_format is not None
                        or config.quantize.weight_bits is not None)
        if report_dir is None:
            _count_write(report, time.perf_counter() - t0)
        else:
            with _report_writes(output), _one_report_at_a_time(Path(report_dir)):
                write_report(result, Path(report_dir), config)
                _count_write(report, time.perf_counter() - t0)
                _final_times(Path(report_dir) / "report.json", report)
    if config.retrain.checkpoint_dir:
        from onnxprune.converter.checkpoint import Checkpoints

        Checkpoints(config.retrain.checkpoint_dir, "").clear()  # the run is complete: its checkpoints can go
    return result  # forced past a missed budget: budget_error(result.report) still says so


API_COMMAND = "onnxprune.prune"  # the command a run of the Python API records


def _notes_in_request_words(report: dict) -> None:
    """Every notes list of a run whose samples are requests (--metric OUTPUT=list@T, set@T, top@K) in requests
    (`decide.in_requests`): "the 50 choosing samples" of a one-shot run were requests of 40 rows each."""
    from onnxprune.converter.auto.decide import in_requests

    for key, value in report.items():
        if key == "notes" and isinstance(value, list):
            report[key] = [in_requests(n) if isinstance(n, str) else n for n in value]
        elif isinstance(value, dict):
            _notes_in_request_words(value)


def _notes_in_api_words(report: dict) -> None:
    """Every notes list of an API run's report in prune()'s keywords (audit 40's Left: "cannot certify --max-loss 1"
    and "more --data gives the search a final exam" reached a caller who wrote max_loss= and data=), as its errors
    and warnings are (`api.api_words`); report.json and report.html are written from the same report."""
    from onnxprune.converter.api import api_words

    for key, value in report.items():
        if key == "notes" and isinstance(value, list):
            report[key] = [api_words(n) if isinstance(n, str) else n for n in value]
        elif isinstance(value, dict):
            _notes_in_api_words(value)


def _input_as_given(model, output: Path, report: dict, protect, storage_asked: bool = False) -> None:
    """The input model kept unpruned, nothing shrunk and no storage asked for (--weight-bits, --sparse-format): the
    input is written as it was given (same outputs, bit for bit), and said. Sweep 49's L7: a MADE whose masks made
    half its weights zeros, kept, was written as given with `--sparse-format compact`, which the run's own note
    had advised for those zeros. Sweep 30's L2: a QOperator model, read in its QDQ form, was
    kept at 1.00x and written 65.84 KB -> 71.09 KB. Real models 51's L2: chython-rxnmap's rewrite (Identity nodes
    bypassed, 47 Mul, 16 Div, 16 Gather and 16 Shape folded) was 30 KB smaller and was written; its attention moved
    by 3.7e-7, and chython's greedy atom mapping, which breaks near-ties, changed on 66 of 100 held-out reactions.
    Real models 52: SwiftF0's smaller rewrite, whose frame count a since-fixed fold had made 1, returned one frame a
    clip."""
    before, after = report.get("before") or {}, report.get("after") or {}
    if not ((report.get("budget") or {}).get("kept_input") and report.get("file_size_before")
            and not storage_asked and before.get("nonzeros") == after.get("nonzeros")
            and report.get("params_after_shrink") in (None, before.get("params"))):
        return
    given = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    modelio.save_model(given, output, protect=protect)
    from onnxprune.passes.merge_copies import FILE_SAVING

    # the copies merged at load are the input's again: their notes' savings are not in this file
    report["notes"] = [n for n in report.get("notes") or [] if not (isinstance(n, str) and n.endswith(FILE_SAVING))]
    rewritten, report["file_size_after"] = report["file_size_after"], modelio.saved_size(output)
    if "storage" in report:
        from onnxprune.passes.storage import describe_model

        report["storage"] = describe_model(given)  # per weight, as written
    why = ""
    if rewritten > report["file_size_after"]:
        why = (f", and its file ({nbytes(report['file_size_after'])}) is smaller than the rewritten one "
               f"({nbytes(rewritten)})")
    elif rewritten < report["file_size_after"]:
        why = (", and its outputs stay the input's bit for bit (the model rewritten as it was read, "
               f"{nbytes(rewritten)}, folds and bypasses nodes, which can move outputs in the last digits)")
    report.setdefault("notes", []).append(f"the input model is written as it was given: nothing was pruned{why}")
    report["written_as_given"] = True  # write_report times no file against itself


@contextlib.contextmanager
def _report_writes(output: Path):
    """The report's writes, after the model's: their errors name --report and say the model was written (it stays)."""
    try:
        with modelio.output_flag("--report"):
            yield
    except ConfigError as exc:
        raise ConfigError(f"the model was written to '{output}', but the report was not: {exc}") from None


@contextlib.contextmanager
def _one_report_at_a_time(folder: Path):
    """One run's report files at a time in a --report folder (CI audit: two runs writing one folder at once left
    recipe.toml of one and report.json of the other): an advisory lock on the folder itself (flock on its
    descriptor: no file of ours left in it), where the system has one; else, or where it cannot be taken, none."""
    modelio.make_folder(folder)
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without locks: as before
            pass
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _not_the_data(output: Path, config: RunConfig) -> None:
    """Refuse an output that is one of the run's data files (CI audit: `-o calib.npz --data calib.npz` replaced the
    calibration data with the model): the user's inputs are never overwritten."""
    d = config.data
    for flag, source in (("--data", d.data), ("--eval-data", d.eval_data), ("--val-data", d.val_data)):
        if (isinstance(source, (str, os.PathLike)) and output.exists() and Path(source).is_file()
                and os.path.samefile(output, source)):
            raise ConfigError(f"output '{output}' is the {flag} file; choose another output path (-o).")


def _final_times(path: Path, report: dict) -> None:
    """report.json's timings and time budget with the write counted (the model, the report and its latency: known
    only once the report is written; sweep 17 read total_s 119.5 of a 120 s budget for a run of 128 s). The page
    keeps the steps it was rendered with."""
    import json

    from onnxprune.plain import dumps

    doc = json.loads(path.read_text())
    run = doc.setdefault("run", {})
    for key in ("seconds_by_step", "time_budget"):
        if report.get(key) is not None:
            run[key] = report[key]
    modelio.atomic_write_bytes(path, (dumps(doc, indent=2) + "\n").encode())


def _count_write(report: dict, seconds: float) -> None:
    """The write (model, and the report with its latency) in the run's timings and its time budget."""
    steps = report.setdefault("seconds_by_step", {})
    steps["write"] = round(seconds, 3)
    spent = report.get("time_budget")
    if spent is not None:
        spent["write_s"] = round(seconds, 1)
        spent["after_search_s"] = round(spent["after_search_s"] + seconds, 1)
        spent["total_s"] = round(spent["total_s"] + seconds, 1)
        # judged on the steps' own seconds (timing.spent's sum, the write's with them), not on the figures rounded to
        # a tenth: a 0.04 s run of a 0.001 s budget summed to 0.0 and was "within"
        spent["within"] = sum(v for k, v in steps.items() if k != "total") <= spent["budget_s"]


def _streamed(model, output: Path, config: RunConfig, report_dir, progress, command):
    """The streamed one-shot path (converter.streaming): written as it is pruned; report.json only."""
    from onnxprune.converter import streaming
    from onnxprune.plain import dumps

    config.validate()
    report = streaming.prune_file(model, output, config, progress)
    report["command"] = list(command or [])
    if report_dir is not None:
        with _report_writes(output):
            modelio.make_folder(Path(report_dir))
            modelio.atomic_write_bytes(Path(report_dir) / "report.json", dumps(report, indent=2).encode())
    return streaming.StreamedResult(report)


SLOWER = 0.95  # a measured speedup below this is said: the pruned model runs slower than the input model


def slower_note(latency: dict) -> str | None:
    """A note when the pruned model ran slower than the input model at some batch size (newcomer audit: a CNN with
    1.65x fewer MACs ran 0.72x at batch 64, said only as a figure in the latency line)."""
    slow = [b for b in latency.get("batches") or [] if b.get("speedup") and b["speedup"] < SLOWER]
    if not slow:
        return None
    runs = ", ".join(f"batch {b['batch']}: {b['speedup']:.2f}x" for b in slow)
    return (f"the pruned model ran slower than the input model in onnxruntime here ({runs}): fewer weights and MACs "
            "do not always mean less time on this runtime; where latency matters more than size, measure before "
            "deploying it (the latency line above is the median of interleaved runs)")


SAME_FILE_LATENCY = ("not measured: the written model is the input model as given, so its latency is the input "
                     "model's")


def _measure_latency(result: PruneResult, config: RunConfig) -> None:
    """report["latency"]: the input and the written model timed interleaved, on the data's shapes; a note when the
    pruned model ran slower."""
    from onnxprune.converter.latency import feeds_from_data, measure_latency

    d = config.data
    random = result.report.get("random_inputs")  # without real data: the run's random shapes (steps.shapes)
    feeds = feeds_from_data(result.original, d.data, labels=d.labels, shapes=random or d.input_shapes,
                            seed=d.seed)  # the data's shapes, not invented ones
    from onnxprune.converter.auto.timing import latency_plan

    pace = (result.report.get("auto") or {}).get("time", {}).get("pass_ms_per_sample")
    kw, kept, note = latency_plan(result.deadline, list(feeds or (1, 64)), pace / 1e3 if pace else None)
    if feeds:
        feeds = {b: feeds[b] for b in kept}
    elif kw:
        kw["batches"] = tuple(kept)  # measure_latency's own random inputs, at the sizes kept
    result.report["latency"] = measure_latency(result.original, result.model, feeds, **kw)
    if note:
        result.report["latency"].setdefault("notes", []).append(note)
    # a model kept unpruned is no pruned model that could run slower: its figure is the runtime's noise (real
    # models 57: a wake-word CNN kept as given read 0.94x at batch 1 under load, and a note said it ran slower)
    kept = (result.report.get("budget") or {}).get("kept_input")
    slower = None if kept else slower_note(result.report["latency"])
    if slower:
        result.report.setdefault("notes", []).append(slower)


def write_report(result: PruneResult, report_dir: Path, config: RunConfig) -> None:
    from onnxprune.converter.recipe import dump_recipe
    from onnxprune.converter.report import write_report as write_html

    modelio.make_folder(report_dir)
    try:
        if result.report.get("written_as_given"):
            # the written file is the input's: timing it against the input times the runtime's noise (real models 58:
            # a DnCNN kept as given, under load, read "batch 1 446368.4 -> 356056.6 us (1.25x)")
            result.report["latency"] = {"batches": [], "notes": [SAME_FILE_LATENCY]}
        else:
            _measure_latency(result, config)
    except Exception as exc:  # latency is information, never a reason to fail a run
        log.warning("latency not measured: %s", " ".join(str(exc).split())[:300] or type(exc).__name__)
    dump_recipe(result.report["options"], report_dir / "recipe.toml", model_sha256=result.report.get("input_sha256"),
                report=result.report, model=result.report.get("model"))
    html, _ = write_html(result.report, report_dir, original_model=result.original,
                         pruned_dense_model=result.dense_model, sensitivity=result.report.get("sensitivity"),
                         history=result.history, latency=result.report.get("latency"))
    result.report["report"] = str(html)
