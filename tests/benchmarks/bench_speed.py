"""Speed on real-sized models (issue #13 item 5): one-shot on a ~22M-parameter sentence encoder within 3 minutes.

The acceptance: `prune --max-loss 1 --one-shot` on any model of <= 25M parameters with <= 250 calibration samples
finishes in <= 3 minutes on 2 cores. The corpus's largest models are ~3M parameters, so this builds a MiniLM-sized
sentence encoder at benchmark time (BERT-style: word embedding 30522 x 384, learned positions 512 x 384, 6 layers,
hidden 384, 12 heads, FFN 1536, GELU, post-LayerNorm; mean pooling over attention_mask -> `sentence_embedding`,
plus `last_hidden_state`; inputs input_ids + attention_mask [N, 128] int64; 22.7M parameters), briefly trained
(SimCSE-style contrastive: two token-dropout views of a text, in-batch InfoNCE) on standard-library docstring lines
so the weights are not pure init, and exports it with torch.onnx (legacy, dynamo=False, opset 17; and the dynamo
exporter when onnxscript imports in --dynamo-python). Texts are tokenised by a stable word hash into the 30522-id
vocabulary (101 = [CLS], 102 = [SEP], 0 = padding); each calibration sample packs 1-8 docstring lines, so lengths
spread over 10..128 tokens with the rest padded and masked, as a batch of real sentences is.

Everything built (models, 240-sample calib.npz) is cached under ~/.cache/onnxprune-bench/ and never committed.
Then it runs, from this repository's root as a user would (the tool picks its own thread count):

    python -m onnxprune prune MODEL -o OUT --data CALIB.npz --max-loss 1 --one-shot
    python -m onnxprune prune MODEL -o OUT --data CALIB.npz --max-loss 1 --time-budget 3m

and prints for each: wall seconds, the child's CPU seconds (user + sys, from os.wait4), its peak RSS, the weight
ratio and the tool's own result lines. With --corpus it also runs the one-shot command on the corpus's two largest
models (nudenet_320n, rapidocr_rec; their calibration data as their card.json names it).

    python -m tests.benchmarks.bench_speed [--only oneshot,search,corpus] [--exporters legacy,dynamo]
        [--steps 30] [--dynamo-python /path/to/python] [--cache DIR] [--extra ARG ...]

Needs torch (CPU build) to build the encoder; the runs need only the project's own dependencies.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("ONNXPRUNE_BENCH_CACHE", Path.home() / ".cache" / "onnxprune-bench"))
CORPUS = Path(os.environ.get("ONNXPRUNE_CORPUS", Path.home() / ".cache" / "onnxprune-corpus"))
SEED = 0
VOCAB, HIDDEN, LAYERS, HEADS, FFN, MAX_POS, SEQ = 30522, 384, 6, 12, 1536, 512, 128
PAD, CLS, SEP, FIRST_WORD = 0, 101, 102, 1000
N_CALIB = 240
RESULT_LINES = ("weights ", "budget:", "verified", "search:", "error", "onnxprune: error")  # + every "(loss" line
SPEC = {"vocab": VOCAB, "hidden": HIDDEN, "layers": LAYERS, "heads": HEADS, "ffn": FFN, "seq": SEQ}


# ---------------------------------------------------------------------------------------------------- the data

def sentences(limit: int = 4000) -> list[str]:
    """First lines of standard-library docstrings (read with ast from the source files, seeded order)."""
    import ast
    import importlib.util
    out, seen = [], set()
    for mod in ("json", "os", "re", "collections", "email.message", "http.client", "xml.dom.minidom", "asyncio.tasks",
                "asyncio.events", "unittest.case", "pathlib", "argparse", "logging", "subprocess", "tarfile", "zipfile",
                "csv", "sqlite3", "socket", "threading", "decimal", "fractions", "statistics", "textwrap", "difflib",
                "shutil", "inspect", "dataclasses", "functools", "typing", "enum", "datetime", "calendar", "random",
                "string", "tempfile", "urllib.request", "urllib.parse", "smtplib", "ftplib", "pickle", "pydoc",
                "configparser", "optparse", "gettext", "locale", "codecs", "heapq", "bisect", "queue", "sched",
                "selectors", "ssl", "imaplib", "mailbox", "platform", "pdb", "bdb", "trace", "tracemalloc", "ast"):
        spec = importlib.util.find_spec(mod)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        for node in ast.walk(ast.parse(Path(spec.origin).read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    line = " ".join(doc.strip().split("\n\n")[0].split())
                    if 12 <= len(line) <= 400 and line.isprintable() and line not in seen:
                        seen.add(line)
                        out.append(line)
    np.random.default_rng(SEED).shuffle(out)
    return out[:limit]


def tokenize(text: str) -> list[int]:
    """Lower-cased words and punctuation, each to a stable id in [FIRST_WORD, VOCAB) (crc32)."""
    words = re.findall(r"\w+|[^\w\s]", text.lower())
    return [FIRST_WORD + zlib.crc32(w.encode()) % (VOCAB - FIRST_WORD) for w in words]


def encode(texts: list[str], seq: int = SEQ) -> tuple[np.ndarray, np.ndarray]:
    ids = np.full((len(texts), seq), PAD, np.int64)
    mask = np.zeros((len(texts), seq), np.int64)
    for i, t in enumerate(texts):
        tok = [CLS] + tokenize(t)[:seq - 2] + [SEP]
        ids[i, :len(tok)] = tok
        mask[i, :len(tok)] = 1
    return ids, mask


def packed_texts(sents: list[str], n: int, rng) -> list[str]:
    """n texts of 1-8 consecutive-in-shuffle docstring lines each (lengths spread up to the 128-token window)."""
    out = []
    for _ in range(n):
        k = int(rng.integers(1, 9))
        start = int(rng.integers(0, len(sents) - k))
        out.append(" ".join(sents[start:start + k]))
    return out


# ---------------------------------------------------------------------------------------------------- the model

def make_encoder():
    import torch
    from torch import nn

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(HIDDEN, HIDDEN) for _ in range(4))
            self.ln1, self.ln2 = nn.LayerNorm(HIDDEN, eps=1e-12), nn.LayerNorm(HIDDEN, eps=1e-12)
            self.up, self.down = nn.Linear(HIDDEN, FFN), nn.Linear(FFN, HIDDEN)

        def forward(self, h, bias):
            n, s, _ = h.shape
            split = lambda x: x.view(n, s, HEADS, HIDDEN // HEADS).transpose(1, 2)  # noqa: E731
            q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
            att = torch.softmax(q @ k.transpose(-1, -2) / (HIDDEN // HEADS) ** 0.5 + bias, dim=-1)
            ctx = (att @ v).transpose(1, 2).reshape(n, s, HIDDEN)
            h = self.ln1(h + self.o(ctx))
            return self.ln2(h + self.down(nn.functional.gelu(self.up(h))))

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.word, self.pos = nn.Embedding(VOCAB, HIDDEN), nn.Embedding(MAX_POS, HIDDEN)
            self.ln = nn.LayerNorm(HIDDEN, eps=1e-12)
            self.layers = nn.ModuleList(Layer() for _ in range(LAYERS))

        def forward(self, input_ids, attention_mask):
            pos = torch.arange(input_ids.shape[1], device=input_ids.device)
            h = self.ln(self.word(input_ids) + self.pos(pos)[None])
            bias = (1.0 - attention_mask[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min
            for layer in self.layers:
                h = layer(h, bias)
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return h, pooled

    torch.manual_seed(SEED)
    net = Encoder()
    for mod in net.modules():      # BERT's init: N(0, 0.02), zero biases
        if isinstance(mod, (nn.Linear, nn.Embedding)):
            nn.init.normal_(mod.weight, std=0.02)
            if getattr(mod, "bias", None) is not None:
                nn.init.zeros_(mod.bias)
    return net


def train_encoder(net, sents: list[str], steps: int, batch: int = 32, seq: int = 32) -> dict:
    """SimCSE-style: two views of each text (40% of its words dropped), in-batch InfoNCE on the pooled embedding."""
    import torch
    rng = np.random.default_rng(SEED)
    opt = torch.optim.AdamW(net.parameters(), lr=5e-4, weight_decay=0.01)
    net.train()
    t0, losses = time.perf_counter(), []
    for _ in range(steps):
        texts = packed_texts(sents, batch, rng)
        views = []
        for _view in range(2):
            kept = []
            for t in texts:
                words = t.split()
                keep = [w for w in words if rng.random() > 0.4] or words[:1]
                kept.append(" ".join(keep))
            views.append([torch.from_numpy(a) for a in encode(kept, seq)])
        _, a = net(*views[0])
        _, b = net(*views[1])
        a, b = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(b, dim=-1)
        loss = torch.nn.functional.cross_entropy(a @ b.T / 0.05, torch.arange(batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    net.eval()
    return {"steps": steps, "batch": batch, "train_seq": seq, "seconds": round(time.perf_counter() - t0, 1),
            "loss_first": round(losses[0], 3) if losses else None,
            "loss_last": round(losses[-1], 3) if losses else None}


def build(cache: Path, steps: int) -> dict:
    """Train (or load) the encoder's weights, write calib.npz; returns the build card (cached as card.json)."""
    import torch
    cache.mkdir(parents=True, exist_ok=True)
    card_path, weights = cache / "card.json", cache / "weights.pt"
    if card_path.exists() and weights.exists():
        card = json.loads(card_path.read_text())
        if card.get("spec") == SPEC and card.get("train", {}).get("steps") == steps:
            return card
    sents = sentences()
    n_train = len(sents) - 600            # the last 600 lines are never trained on: the calibration texts use them
    net = make_encoder()
    train = train_encoder(net, sents[:n_train], steps)
    torch.save(net.state_dict(), weights)
    ids, mask = encode(packed_texts(sents[n_train:], N_CALIB, np.random.default_rng(SEED + 1)))
    np.savez(cache / "calib.npz", input_ids=ids, attention_mask=mask)
    card = {"spec": SPEC, "params": sum(p.numel() for p in net.parameters()), "train": train,
            "torch": torch.__version__, "calib": {"n": N_CALIB, "tokens_mean": float(mask.sum(1).mean()),
                                                  "tokens_min": int(mask.sum(1).min()),
                                                  "tokens_max": int(mask.sum(1).max())}}
    card_path.write_text(json.dumps(card, indent=1))
    return card


def export(cache: Path, exporter: str) -> Path:
    """Export the cached weights with torch.onnx (legacy: opset 17, dynamo=False; dynamo: external data)."""
    import torch
    out = cache / exporter / "model.onnx"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    net = make_encoder()
    net.load_state_dict(torch.load(cache / "weights.pt"))
    net.eval()
    ids, mask = encode(["an example sentence", "another, longer example sentence for the export"])
    args = (torch.from_numpy(ids), torch.from_numpy(mask))
    names = {"input_names": ["input_ids", "attention_mask"],
             "output_names": ["last_hidden_state", "sentence_embedding"]}
    with torch.no_grad():
        if exporter == "legacy":
            torch.onnx.export(net, args, str(out), opset_version=17, dynamo=False, **names,
                              dynamic_axes={"input_ids": {0: "batch"}, "attention_mask": {0: "batch"},
                                            "last_hidden_state": {0: "batch"}, "sentence_embedding": {0: "batch"}})
        else:
            torch.onnx.export(net, args, str(out), opset_version=17, dynamo=True, external_data=True, **names,
                              dynamic_shapes=({0: torch.export.Dim("batch")}, {0: torch.export.Dim("batch")}))
    return out


def has_onnxscript(python: str) -> bool:
    """onnxscript imports in `python`, whose torch exports with external_data and dynamic_shapes (2.4's does not)."""
    check = ("import inspect, onnxscript, torch; "
             "assert {'external_data', 'dynamic_shapes'} <= set(inspect.signature(torch.onnx.export).parameters)")
    return subprocess.run([python, "-c", check], capture_output=True).returncode == 0


# ---------------------------------------------------------------------------------------------------- the runs

def timed(cmd: list[str], log: Path, env: dict | None = None) -> dict:
    """Run cmd from the repository root; wall time, the child's own CPU time and peak RSS (os.wait4)."""
    with open(log, "w") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=env)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    ratio = next((m.group(1) for ln in lines if (m := re.search(r"\((\d+(?:\.\d+)?x) fewer\)", ln))), None)
    said = [ln for ln in lines if ln.startswith(RESULT_LINES) or " (loss " in ln] or lines[-3:]  # refused: its last
    return {"exit": proc.returncode, "wall_s": round(wall, 1), "cpu_s": round(ru.ru_utime + ru.ru_stime, 1),
            "user_s": round(ru.ru_utime, 1), "sys_s": round(ru.ru_stime, 1), "peak_rss_mb": round(ru.ru_maxrss / 1024),
            "ratio": ratio, "lines": said}


def prune(model: Path, data: Path, extra: list[str], tag: str, outdir: Path, args_extra: list[str]) -> dict:
    out = outdir / f"{tag}.onnx"
    cmd = [sys.executable, "-m", "onnxprune", "prune", str(model), "-o", str(out), "--data", str(data),
           "--max-loss", "1", *extra, *args_extra]
    res = timed(cmd, outdir / f"{tag}.log")
    res["cmd"] = " ".join(["python"] + cmd[1:])
    return res


def show(tag: str, res: dict) -> None:
    print(f"\n== {tag}\n   $ {res['cmd']}")
    print(f"   exit {res['exit']}  wall {res['wall_s']} s  cpu {res['cpu_s']} s (user {res['user_s']} + sys "
          f"{res['sys_s']})  peak RSS {res['peak_rss_mb']} MB  ratio {res['ratio']}")
    for ln in res["lines"]:
        print("   | " + ln[:220])
    sys.stdout.flush()


def corpus_data(name: str) -> tuple[Path, Path]:
    root = CORPUS / name
    card = json.loads((root / "card.json").read_text())
    return root / card["model"], root / card["data"]["calib"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="oneshot,search,corpus", help="which runs: oneshot, search, corpus")
    ap.add_argument("--exporters", default="legacy,dynamo")
    ap.add_argument("--steps", type=int, default=30, help="contrastive training steps (0 = BERT init only)")
    ap.add_argument("--dynamo-python", default=sys.executable, help="interpreter with onnxscript for the dynamo export")
    ap.add_argument("--cache", type=Path, default=CACHE / "minilm")
    ap.add_argument("--out", type=Path, default=None, help="where the pruned models and logs go (default: a temp dir)")
    ap.add_argument("--extra", action="append", default=[], help="one more argument for every prune command")
    ap.add_argument("--export-only", choices=["legacy", "dynamo"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.export_only:
        print(export(args.cache, args.export_only))
        return
    only = set(args.only.split(","))
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}  cores {os.cpu_count()}  load "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    models: dict[str, tuple[Path, Path]] = {}
    if only & {"oneshot", "search"}:
        t0 = time.perf_counter()
        card = build(args.cache, args.steps)
        print(f"# encoder: {card['params']:,} parameters, trained {card['train']}, calib {card['calib']} "
              f"(build {time.perf_counter() - t0:.0f} s, cached in {args.cache})")
        for exporter in args.exporters.split(","):
            if exporter == "legacy":
                models["minilm-legacy"] = export(args.cache, "legacy"), args.cache / "calib.npz"
            elif has_onnxscript(args.dynamo_python):
                subprocess.run([args.dynamo_python, "-m", "tests.benchmarks.bench_speed", "--export-only", "dynamo",
                                "--cache", str(args.cache)], cwd=REPO, check=True, capture_output=True)
                models["minilm-dynamo"] = args.cache / "dynamo" / "model.onnx", args.cache / "calib.npz"
            else:
                print(f"# dynamo exporter skipped: onnxscript does not import in {args.dynamo_python}, or its torch is "
                      "older than the export's external_data")
    with tempfile.TemporaryDirectory() as tmp:
        outdir = args.out or Path(tmp)
        outdir.mkdir(parents=True, exist_ok=True)
        results = {}
        for name, (model, data) in models.items():
            size = sum(p.stat().st_size for p in model.parent.iterdir())
            print(f"# {name}: {model} ({size / 1e6:.1f} MB with external data)")
            if "oneshot" in only:
                results[f"{name} one-shot"] = r = prune(model, data, ["--one-shot"], f"{name}-oneshot", outdir,
                                                        args.extra)
                show(f"{name} one-shot", r)
            if "search" in only:
                results[f"{name} search 3m"] = r = prune(model, data, ["--time-budget", "3m"], f"{name}-search",
                                                         outdir, args.extra)
                show(f"{name} search --time-budget 3m", r)
        if "corpus" in only:
            for name in ("nudenet_320n", "rapidocr_rec"):
                if not (CORPUS / name / "card.json").exists():
                    print(f"# {name}: not in {CORPUS} (build it with tests/corpus/build_corpus.py)")
                    continue
                model, data = corpus_data(name)
                results[f"{name} one-shot"] = r = prune(model, data, ["--one-shot"], f"{name}-oneshot", outdir,
                                                        args.extra)
                show(f"{name} one-shot", r)
        print(f"\n# done {time.strftime('%H:%M:%S UTC', time.gmtime())}  load "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
