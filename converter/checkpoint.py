"""Round checkpoints for long retraining: `--resume` continues where an interrupted run stopped.

After every prune → retrain round the folder gets `round-NNN.onnx` (the model with the trained weights written
back), `round-NNN.npz` (masks and the trainer's random-generator state) and `state.json` (round, history and
the run's fingerprint), each written atomically, `state.json` last: a round is there only when all three are.
Resuming restores weights, masks and the shuffling stream, so the result equals an uninterrupted run with the same
seed. A fingerprint of the input model and the options refuses a checkpoint of another run.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import onnx

from onnxprune.errors import ConfigError
from onnxprune.plain import dumps
from onnxprune.converter.modelio import atomic_write_bytes, make_folder, output_flag


def fingerprint(input_sha256: str | None, recipe: dict) -> str:
    text = json.dumps({"input": input_sha256, "options": recipe}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Checkpoints:
    def __init__(self, folder: str | Path, run_fingerprint: str):
        self.folder = Path(folder)
        self.fingerprint = run_fingerprint

    def save(self, round_: int, model: onnx.ModelProto, masks: dict[str, np.ndarray], history: list[dict],
             trainer_state: dict) -> None:
        with output_flag("--checkpoint-dir"):  # a full disk or a read-only mount names the flag (sweep 15)
            make_folder(self.folder, parents=True)
            atomic_write_bytes(self.folder / f"round-{round_:03d}.onnx", model.SerializeToString())
            buf = io.BytesIO()
            arrays = {f"mask/{k}": v for k, v in masks.items()}
            arrays.update({f"trainer/{k}": np.asarray(v) for k, v in trainer_state.items()})
            np.savez(buf, **arrays)
            atomic_write_bytes(self.folder / f"round-{round_:03d}.npz", buf.getvalue())
            state = {"fingerprint": self.fingerprint, "round": round_, "history": history}
            atomic_write_bytes(self.folder / "state.json", dumps(state).encode())
        for old in self.folder.glob("round-*"):
            if not old.name.startswith(f"round-{round_:03d}."):
                old.unlink(missing_ok=True)

    def latest(self) -> dict | None:
        """The last complete round, or None when there is nothing to resume."""
        state_file = self.folder / "state.json"
        if not state_file.is_file():
            return None
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            raise ConfigError(f"checkpoint '{state_file}' is unreadable; delete {self.folder} and run again.") from None
        if state.get("fingerprint") != self.fingerprint:
            raise ConfigError(
                f"checkpoint in '{self.folder}' belongs to another model or other options; run without --resume "
                f"or delete {self.folder}."
            )
        r = int(state["round"])
        model = onnx.load_model(str(self.folder / f"round-{r:03d}.onnx"))
        with np.load(self.folder / f"round-{r:03d}.npz", allow_pickle=False) as npz:
            masks = {k[5:]: npz[k].astype(bool) for k in npz.files if k.startswith("mask/")}
            trainer = {k[8:]: npz[k] for k in npz.files if k.startswith("trainer/")}
        return {"round": r, "model": model, "masks": masks, "history": state["history"], "trainer": trainer}

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
