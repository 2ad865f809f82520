"""Training backends: one process, or data-parallel over torch.distributed (DDP), chosen from the environment.

Launched the standard way, every process runs the same command line:

    torchrun --nproc-per-node 2 $(command -v onnxprune) prune model.onnx -o small.onnx --data train.npz --iterations 3

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; with WORLD_SIZE > 1 the `ddp` backend
joins the process group (gloo on CPU, nccl on CUDA, one GPU per LOCAL_RANK) and

  1. rank 0 alone scans, verifies, writes the model, the report and the checkpoints; every rank trains;
  2. a decision rank 0 takes (targets from the scan, a round's score in the budget search, a checkpoint to resume)
     is broadcast (`on_main`), so every rank follows the same path;
  3. masks are broadcast from rank 0 whenever they change, weights by DistributedDataParallel when it wraps the
     module at the start of every training call: masks and weights are identical on every rank;
  4. each global batch of --train-batch-size samples (the same seeded permutation on every rank) is split into
     disjoint slices, rank r taking samples r, r+W, r+2W, …; each rank's loss is weighted by its share of the
     batch, so DDP's gradient average is the gradient of the global batch and a recipe means the same at any W.

Without WORLD_SIZE > 1 the `one-process` backend does all of it in place, without importing torch.distributed.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import io
import json
import logging
import os
import sys
from typing import Callable

import numpy as np

from onnxprune import errors
from onnxprune.errors import ConfigError

log = logging.getLogger(__name__)

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
TIMEOUT_MINUTES = 30  # a rank waiting longer than this on the others gives up (torch.distributed's default)


class OneProcess:
    """Everything here, nothing to agree on."""

    name = "one-process"
    rank, world_size, local_rank = 0, 1, 0

    def __init__(self):
        self.samples = 0  # training samples seen, all processes together
        self.samples_per_process = 0  # by this process

    def count(self, local: int, total: int) -> None:
        self.samples_per_process += local
        self.samples += total

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str) -> str:
        return requested

    def wrap(self, module):
        """The module a training step runs forward through."""
        return module

    def shard(self, index):
        """This rank's part of a global batch (indices, or any sliceable of samples)."""
        return index

    def all_sum(self, values: list[float]) -> list[float]:
        return list(values)

    def broadcast_bytes(self, data: bytes | None) -> bytes:
        return data

    def broadcast_masks(self, masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return masks

    def on_main(self, fn: Callable, *args, encode=json.dumps, decode=json.loads, **kwargs):
        """Rank 0 runs `fn`; every rank returns its result (sent as `encode`d text/bytes: JSON by default)."""
        return fn(*args, **kwargs)

    def barrier(self) -> None:
        pass

    def report(self) -> dict:
        """What the run's report records: how many processes trained, and how many samples each saw."""
        return {"world_size": self.world_size,
                "training_backend": {"name": self.name, "comm": getattr(self, "comm", None),
                                     "samples": self.samples, "samples_per_process": self.samples_per_process}}


class DataParallel(OneProcess):
    """torch.distributed: one process per device, gradients averaged by DistributedDataParallel."""

    name = "ddp"

    def __init__(self, device: str = "auto"):
        import torch
        import torch.distributed as dist

        super().__init__()
        self.rank, self.world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        self.local_rank = int(os.environ.get("LOCAL_RANK", self.rank))
        self.cuda = device != "cpu" and torch.cuda.is_available()
        self.comm = "nccl" if self.cuda else "gloo"
        if self.cuda:
            torch.cuda.set_device(self.local_rank)
        if not dist.is_initialized():
            # Imported before the group exists: torch.distributed.nn.functional's functions take `group=group.WORLD`
            # as a default, evaluated at import, and DistributedDataParallel imports it on first use. Imported
            # then, they held the process group for the interpreter's life, destroy_process_group could not
            # release it, and its gloo threads ran into the interpreter's teardown ("terminate called without an
            # active exception" from a worker, seen once in the suite).
            import torch.distributed.nn  # noqa: F401

            with native_stdout_to_stderr():  # gloo says who it connected to on the process's stdout (torch 2.8-2.10)
                dist.init_process_group(self.comm, timeout=datetime.timedelta(minutes=TIMEOUT_MINUTES))
            atexit.register(_shutdown)
        self._dist, self._torch = dist, torch
        log.info("rank %d of %d (local %d) joined the %s process group", self.rank, self.world_size,
                 self.local_rank, self.comm)

    def device(self, requested: str) -> str:
        return f"cuda:{self.local_rank}" if self.cuda else "cpu"

    def wrap(self, module):
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if self.cuda else None
        return DistributedDataParallel(module, device_ids=ids)

    def shard(self, index):
        return index[self.rank :: self.world_size]

    def all_sum(self, values: list[float]) -> list[float]:
        t = self._torch.tensor(values, dtype=self._torch.float64, device=self._comm_device())
        self._dist.all_reduce(t)
        return t.cpu().tolist()

    def broadcast_bytes(self, data: bytes | None) -> bytes:
        """Rank 0's bytes on every rank (a length, then the bytes as a uint8 tensor): no pickling."""
        torch, dev = self._torch, self._comm_device()
        size = torch.tensor([len(data) if self.is_main else 0], dtype=torch.int64, device=dev)
        self._dist.broadcast(size, src=0)
        buf = (torch.frombuffer(bytearray(data), dtype=torch.uint8).to(dev) if self.is_main
               else torch.empty(int(size.item()), dtype=torch.uint8, device=dev))
        if int(size.item()):
            self._dist.broadcast(buf, src=0)
        return bytes(buf.cpu().numpy().tobytes())

    def _broadcast_json(self, obj):
        return json.loads(self.broadcast_bytes(json.dumps(obj).encode() if self.is_main else None))

    def broadcast_masks(self, masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = self._broadcast_json(sorted(masks) if self.is_main else None)
        if sorted(masks) != names:
            raise ConfigError(f"rank {self.rank} holds masks of other weights than rank 0; every rank must run the "
                              "same command on the same model.")
        out = {}
        for name in names:  # packed bits: 1/8 of a byte per weight on the wire
            m = np.asarray(masks[name], dtype=bool)
            t = self._torch.from_numpy(np.packbits(m.reshape(-1))).to(self._comm_device())
            self._dist.broadcast(t, src=0)
            out[name] = np.unpackbits(t.cpu().numpy(), count=m.size).astype(bool).reshape(m.shape)
        return out

    def on_main(self, fn: Callable, *args, encode=json.dumps, decode=json.loads, **kwargs):
        """Rank 0 runs `fn`, every rank gets its result (rank 0 its own object, the others `decode(encode(it))`);
        an error on rank 0 is raised on every rank, as the same class of the onnxprune.errors family."""
        result, error, payload = None, None, None
        if self.is_main:
            try:
                result = fn(*args, **kwargs)
                text = encode(result)
                payload = b"ok:" + (text.encode() if isinstance(text, str) else text)
            except Exception as exc:  # re-raised below on rank 0, named on the others
                error = exc
                kind = type(exc).__name__ if isinstance(exc, errors.ConverterError) else "ConverterError"
                payload = f"error:{kind}:{exc}".encode()
        payload = self.broadcast_bytes(payload)
        if error is not None:
            raise error
        if payload.startswith(b"error:"):
            _, kind, message = payload.decode().split(":", 2)
            raise getattr(errors, kind, errors.ConverterError)(f"rank 0 failed: {message}")
        return result if self.is_main else decode(payload[3:])

    def barrier(self) -> None:
        self._dist.barrier()

    def _comm_device(self):
        return self._torch.device(f"cuda:{self.local_rank}") if self.cuda else self._torch.device("cpu")


@contextlib.contextmanager
def native_stdout_to_stderr():
    """File descriptor 1 writes to 2 for the block: what native code prints, past Python's sys.stdout, goes to stderr.

    stdout is the tool's answer (`--json`: one document). torch 2.8's gloo writes "[Gloo] Rank 0 is connected to 1
    peer ranks. ..." there from C++ as the process group forms, every rank (also 2.9 and 2.10; 2.4-2.7 and 2.11-2.14
    say nothing). Python's buffers are flushed before, C's before the descriptor comes back; without a descriptor to
    move, nothing moves.
    """
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout
        saved = None
    try:
        if saved is not None:
            with contextlib.suppress(OSError):  # no stderr: 1 stays where it was
                os.dup2(2, 1)
        yield
    finally:
        if saved is not None:
            with contextlib.suppress(Exception):  # libc's fflush(NULL), every C stream (no such libc: none to flush)
                import ctypes

                ctypes.CDLL(None).fflush(None)
            os.dup2(saved, 1)
            os.close(saved)


def _shutdown() -> None:
    """Destroy the process group while the interpreter is whole: its backend (gloo's threads) goes with it, once
    the DistributedDataParallel wrappers training dropped (reference cycles: collected first) no longer hold it."""
    import gc

    import torch.distributed as dist

    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


BACKENDS: dict[str, Callable[[str], OneProcess]] = {
    "one-process": lambda device: OneProcess(),  # noqa: ARG005
    "ddp": DataParallel,
}

_current: OneProcess = OneProcess()


def launched_world_size() -> int:
    """WORLD_SIZE as torchrun set it (1 when not launched by torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE='{os.environ['WORLD_SIZE']}' is not a number; launch with torchrun.") from None


def setup(device: str = "auto", backend: str | None = None) -> OneProcess:
    """The backend of this run: `ddp` when launched with WORLD_SIZE > 1, else `one-process`. Idempotent."""
    global _current
    name = backend or ("ddp" if launched_world_size() > 1 else "one-process")
    if name not in BACKENDS:
        raise ConfigError(f"training backend '{name}' is not one of {', '.join(BACKENDS)}.")
    _current.samples = _current.samples_per_process = 0  # counted per run
    if _current.name != name:
        if name == "ddp":
            missing = [k for k in ENV if k not in os.environ and k != "LOCAL_RANK"]
            if missing:
                raise ConfigError(f"distributed run without {', '.join(missing)}; launch with torchrun "
                                  "--nproc-per-node N $(command -v onnxprune) prune ….")
        _current = BACKENDS[name](device)
    return _current


def current() -> OneProcess:
    return _current


def is_main() -> bool:
    """Rank 0 (or the only process); readable before `setup`, from torchrun's RANK."""
    return _current.is_main if _current.world_size > 1 else int(os.environ.get("RANK", "0") or 0) == 0


class MainOnly:
    """An evaluator whose `evaluate` runs on rank 0 alone, the score broadcast: every rank takes the same decision
    (a budget round kept or undone) from the same number. Everything else is the wrapped evaluator's."""

    def __init__(self, evaluator, backend: OneProcess | None = None):
        self._evaluator, self._backend = evaluator, backend or current()

    def evaluate(self, model, *args, **kwargs):
        return self._backend.on_main(self._evaluator.evaluate, model, *args, **kwargs)

    def judged(self, model, max_loss: float) -> tuple[float, dict]:
        """(score, the decision rule's verdict on `model` as a dict: converter.auto.decide.BudgetRule, the rule
        the budget check judges the written model by), both measured on rank 0 and sent to every rank."""
        def both():
            from onnxprune.converter.auto.decide import BudgetRule

            rules = self.__dict__.setdefault("_rules", {})
            if max_loss not in rules:
                rules[max_loss] = BudgetRule(self._evaluator, max_loss)
            return [self._evaluator.evaluate(model), rules[max_loss].judge(model).as_dict()]

        score, decision = self._backend.on_main(both, encode=lambda r: json.dumps(r, default=_plain))
        return float(score), decision

    def __getattr__(self, name):
        return getattr(self._evaluator, name)


def _plain(value):
    """A numpy scalar or array as JSON takes it (a decision's counts and flags, an allocation's figures): json's
    `default=` hook, so a NaN loss stays NaN on every rank (onnxprune.plain, the cleaner for files, writes it null)."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def local_rank() -> int:
    """This process's device index on its node (LOCAL_RANK from torchrun; 0 alone)."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0) if launched_world_size() > 1 else 0


# ------------------------------------------------------------------------------ what rank 0 decides, encoded


def encode_targets(chosen) -> str:
    """(targets {weight: Target}, what else rank 0 chose: a JSON-able dict or None) → JSON: the other ranks need
    the targets and the allocation the retraining steps read (`state.allocation`)."""
    targets, extra = chosen
    return json.dumps({"targets": {n: [t.sparsity, t.quality] for n, t in targets.items()}, "extra": extra},
                      default=_plain)


def decode_targets(data: bytes):
    from onnxprune.passes.magnitude import Target

    got = json.loads(data)
    return {n: Target(sparsity=s, quality=q) for n, (s, q) in got["targets"].items()}, got["extra"]


def encode_checkpoint(resume: dict | None) -> bytes:
    """A checkpoint (converter.checkpoint.Checkpoints.latest) as bytes: npz arrays + JSON + the model's protobuf."""
    if resume is None:
        return b"none"
    buf = io.BytesIO()
    arrays = {f"mask/{k}": v for k, v in resume["masks"].items()}
    arrays.update({f"trainer/{k}": np.asarray(v) for k, v in resume["trainer"].items()})
    arrays["model"] = np.frombuffer(resume["model"].SerializeToString(), dtype=np.uint8)
    arrays["meta"] = np.frombuffer(json.dumps({"round": resume["round"], "history": resume["history"]},
                                              default=float).encode(), dtype=np.uint8)
    np.savez(buf, **arrays)
    return buf.getvalue()


def decode_checkpoint(data: bytes) -> dict | None:
    import onnx

    if data == b"none":
        return None
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        meta = json.loads(npz["meta"].tobytes())
        return {"round": meta["round"], "history": meta["history"],
                "model": onnx.ModelProto.FromString(npz["model"].tobytes()),
                "masks": {k[5:]: npz[k].astype(bool) for k in npz.files if k.startswith("mask/")},
                "trainer": {k[8:]: npz[k] for k in npz.files if k.startswith("trainer/")}}
