"""Masked-diffusion training (a script, never imported by the server).

Owns: the objective (t ~ U(0,1) stratified over the batch, mask each target with probability t,
cross-entropy on masked positions weighted 1/t; with --expand-delete, DreamOn's expand and delete
tokens on the infill examples, training/expand.py), the batch mix of full-sequence masking windows
and infill-shaped examples (several noisy copies of each span over one shared context), the
wall-clock warmup-stable-decay schedule, validation, checkpoints (save_pretrained in bf16 shards
under 16 MiB, optimizer state as safetensors), resume, and several GPUs via torchrun.

Usage:
  python -m training.train --data data/ --out runs/x --minutes 30 [--resume model/weights]
  torchrun --nproc-per-node 8 -m training.train ...
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from model import cpu_threads

cpu_threads.set_spin_count()  # libgomp reads it once, when torch loads it: before `import torch`

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from model.length import LengthHead
from model.tokenizer import CodeTokenizer
from training import expand
from training.data import (
    CONTEXT_GROUP,
    DEFAULT_TOKENIZER,
    INFILL_FILE,
    MAX_COPIES,
    SEQ_LEN,
    STREAM_FILE,
    TOKEN_DTYPE,
)
from training.hf import ParafillConfig, ParafillForMaskedDiffusion
from training.length_train import head_loss


# ----------------------------------------------------------------------------- data on device
class Batches:
    """Holds one split's shards (training/data.py's format) on the training device and draws
    masked batches from them."""

    def __init__(
        self,
        split_dir: Path,
        seq_len: int,
        device: torch.device,
        mask_id: int,
        pad_id: int,
        expand_id: int | None = None,
    ):
        self.seq_len, self.device, self.mask_id, self.pad_id = seq_len, device, mask_id, pad_id
        self.expand_id = expand_id  # not None: the expand and delete objective on infill examples
        self.last_infill = None  # the last draw's infill examples as stored (length head)
        stream = np.fromfile(split_dir / STREAM_FILE, dtype=TOKEN_DTYPE)
        if stream.size <= seq_len:
            raise SystemExit(f"{split_dir / STREAM_FILE} has only {stream.size} tokens")
        self.stream = torch.from_numpy(stream.astype(np.int32)).to(device)
        f = split_dir / INFILL_FILE
        if f.exists():
            z = np.load(f)
            if z["tokens"].shape[1] != seq_len:
                raise SystemExit(
                    f"{f} holds examples of {z['tokens'].shape[1]} tokens, the model trains on "
                    f"{seq_len}: build the data with the same length (training/data.py's SEQ_LEN)"
                )
            self.inf_tok = torch.from_numpy(z["tokens"].astype(np.int32)).to(device)
            self.inf_pos = torch.from_numpy(z["pos"].astype(np.int32)).to(device)
            self.inf_grp = torch.from_numpy(z["group"].astype(np.int32)).to(device)
        else:
            self.inf_tok = None
        self.ar = torch.arange(seq_len, device=device)

    @property
    def n_infill(self) -> int:
        return 0 if self.inf_tok is None else self.inf_tok.shape[0]

    def draw(self, n_full: int, n_inf: int, g: torch.Generator):
        """(input_ids, targets, pos, group, loss_weight, eligible) for one batch: n_full
        full-sequence windows, then n_inf infill examples (kept as stored in `last_infill`)."""
        dev, L = self.device, self.seq_len
        parts = []
        if n_full:
            off = torch.randint(0, self.stream.numel() - L, (n_full,), device=dev, generator=g)
            tok = self.stream[off[:, None] + self.ar].long()
            t = _strat_t(n_full, dev, g)[:, None]
            masked = torch.rand(n_full, L, device=dev, generator=g) < t
            pos = self.ar.expand(n_full, L)
            grp = masked.long()
            w = (1.0 / t).expand(n_full, L)
            parts.append(self._masked(tok, masked, pos, grp, w, torch.ones_like(masked)))
        if n_inf and self.n_infill:
            idx = torch.randint(0, self.n_infill, (n_inf,), device=dev, generator=g)
            tok, pos, grp = (
                self.inf_tok[idx].long(),
                self.inf_pos[idx].long(),
                self.inf_grp[idx].long(),
            )
            self.last_infill = (tok, pos, grp)
            if self.expand_id is not None:
                t = _strat_t(n_inf, dev, g)
                parts.append(
                    expand.expand_delete(
                        tok,
                        pos,
                        grp,
                        t,
                        expand.merge_probs(n_inf, t, g),
                        g,
                        mask_id=self.mask_id,
                        pad_id=self.pad_id,
                        expand_id=self.expand_id,
                    )
                )
            else:
                # one t per noisy copy (groups 1..MAX_COPIES); context and filler carry no loss
                t_groups = _strat_t(n_inf * MAX_COPIES, dev, g).view(n_inf, MAX_COPIES)
                gi = grp.clamp(1, MAX_COPIES) - 1
                t = t_groups.gather(1, gi)
                span = (grp > CONTEXT_GROUP) & (grp <= MAX_COPIES)
                masked = (torch.rand(n_inf, L, device=dev, generator=g) < t) & span
                parts.append(self._masked(tok, masked, pos, grp, 1.0 / t, span))
        return tuple(torch.cat(x) for x in zip(*parts))

    def _masked(self, tok, masked, pos, grp, w, elig):
        inp = torch.where(masked, torch.full_like(tok, self.mask_id), tok)
        return inp, tok, pos, grp, w * masked, elig


def _strat_t(n: int, dev, g, eps: float = 0.02) -> torch.Tensor:
    u = (torch.rand(1, device=dev, generator=g) + torch.arange(n, device=dev) / n) % 1.0
    return eps + (1 - eps) * u[torch.randperm(n, device=dev, generator=g)]


def diffusion_loss(model, batch) -> tuple[torch.Tensor, dict]:
    inp, tgt, pos, grp, w, elig = batch
    h = model(inp, position_ids=pos, group_ids=grp, hidden_only=True)
    sel = w > 0
    logits = model.lm_head(h[sel]).float()
    ce = F.cross_entropy(logits, tgt[sel], reduction="none")
    loss = (ce * w[sel]).sum() / elig.sum().clamp(min=1)
    return loss, {"ce": ce.mean().item() if ce.numel() else 0.0, "masked": int(sel.sum())}


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(model, out: Path, tok_path: Path | Tokenizer, state: dict, opt=None) -> None:
    """The model, its tokenizer (a file copied as it is, or a grown tokenizer saved), the train
    state and optionally the optimizer state, written to `out` through a temporary folder."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tied = set(model._tied_weights_keys) if model.config.tie_word_embeddings else set()
    sd = {  # a tied LM head is the embedding: saving it again would add 8 MB and a shard
        k: v.detach().to(torch.bfloat16).cpu()
        for k, v in model.state_dict().items()
        if k not in tied
    }
    model.save_pretrained(tmp, state_dict=sd, max_shard_size="15MB")
    if isinstance(tok_path, Tokenizer):
        tok_path.save(str(tmp / "tokenizer.json"))
    else:
        shutil.copy(tok_path, tmp / "tokenizer.json")
    (tmp / "train_state.json").write_text(json.dumps(state, indent=2))
    if opt is not None:
        from safetensors.torch import save_file

        names = {id(p): n for n, p in model.named_parameters()}
        tensors = {}
        for grp in opt.param_groups:
            for p in grp["params"]:
                st = opt.state.get(p)
                if st:
                    tensors[names[id(p)] + ".exp_avg"] = st["exp_avg"].float().cpu().contiguous()
                    tensors[names[id(p)] + ".exp_avg_sq"] = (
                        st["exp_avg_sq"].float().cpu().contiguous()
                    )
        save_file(tensors, str(tmp / "optimizer.safetensors"))
    for f in out.iterdir():
        if f.is_file():
            f.unlink()
    for f in tmp.iterdir():
        shutil.move(str(f), out / f.name)
    tmp.rmdir()


def load_optimizer(opt, model, path: Path, step: int) -> bool:
    f = path / "optimizer.safetensors"
    if not f.exists():
        return False
    from safetensors.torch import load_file

    t = load_file(str(f))
    for n, p in model.named_parameters():
        if n + ".exp_avg" in t:
            opt.state[p] = {
                "step": torch.tensor(float(step)),
                "exp_avg": _rows(t[n + ".exp_avg"], p),
                "exp_avg_sq": _rows(t[n + ".exp_avg_sq"], p),
            }
    return True


def _rows(saved: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """A saved moment on the parameter's device, with zero rows for those the parameter has
    gained since (the embedding grown by the expand token)."""
    saved = saved.to(p.device)
    if saved.shape[0] < p.shape[0] and saved.shape[1:] == p.shape[1:]:
        saved = torch.cat([saved, saved.new_zeros(p.shape[0] - saved.shape[0], *p.shape[1:])])
    return saved


# ----------------------------------------------------------------------------- schedule
def lr_at(frac: float, peak: float, warm: float, decay: float, floor: float = 0.05) -> float:
    """Warmup-stable-decay over the fraction of the wall-clock budget used."""
    if frac < warm:
        return peak * max(frac / warm, 0.01)
    if frac < 1 - decay:
        return peak
    return peak * (floor + (1 - floor) * max(0.0, (1 - frac) / decay))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="default: the --resume checkpoint's tokenizer.json, else the shipped one",
    )
    ap.add_argument("--resume", type=Path, default=None, help="checkpoint dir to continue from")
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--deadline", type=float, default=0, help="unix time to stop by (overrides)")
    ap.add_argument(
        "--steps", type=int, default=0, help="stop after this many steps (and the schedule by them)"
    )
    ap.add_argument("--batch", type=int, default=32, help="sequences per step per device")
    ap.add_argument("--full-frac", type=float, default=0.5, help="share of full-sequence masking")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=float, default=0.03)
    ap.add_argument("--decay", type=float, default=0.25)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--ffn", type=int, default=1024)
    ap.add_argument("--seq", type=int, default=SEQ_LEN, help="window of a new model")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (default on CUDA)")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--eval-every", type=float, default=60.0, help="seconds")
    ap.add_argument("--save-every", type=float, default=300.0, help="seconds")
    ap.add_argument("--save-optimizer", action="store_true")
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument(
        "--length-head",
        type=int,
        default=16,
        help="train the length head (model/length.py) of this hidden width, adding one to a "
        "checkpoint that has none; 0: no length head",
    )
    ap.add_argument("--length-every", type=int, default=4, help="steps between head updates")
    ap.add_argument(
        "--expand-delete",
        action="store_true",
        help="DreamOn's expand and delete tokens on the infill examples (training/expand.py); "
        "adds <|expand|> to the tokenizer and the network when they have none",
    )
    a = ap.parse_args(argv)

    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = int(os.environ.get("RANK", "0"))
    if ddp:
        torch.distributed.init_process_group("nccl")
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dev = torch.device(
        f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"
    )
    if a.threads:
        torch.set_num_threads(a.threads)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    use_bf16 = a.bf16 or dev.type == "cuda"
    if a.tokenizer is None:
        own = a.resume / "tokenizer.json" if a.resume else None
        a.tokenizer = own if own is not None and own.is_file() else DEFAULT_TOKENIZER
    tok = CodeTokenizer.from_file(a.tokenizer)
    tok_source: Path | Tokenizer = a.tokenizer  # what the checkpoints' tokenizer.json is
    if a.expand_delete and tok.expand_id is None:
        tok = expand.add_expand_token(tok)
        tok_source = tok.tok
    state = {"tokens_seen": 0, "supervised_tokens": 0, "steps": 0, "train_seconds": 0.0, "runs": []}
    if a.resume:
        model = ParafillForMaskedDiffusion.from_pretrained(a.resume, dtype=torch.float32)
        sf = a.resume / "train_state.json"
        if sf.exists():
            state.update(json.loads(sf.read_text()))
    else:
        cfg = ParafillConfig(
            vocab_size=tok.vocab_size,
            hidden_size=a.d,
            num_hidden_layers=a.layers,
            num_attention_heads=a.heads,
            intermediate_size=a.ffn,
            pad_token_id=tok.pad_id,
            mask_token_id=tok.mask_id,
            sep_token_id=tok.sep_id,
            train_seq_len=a.seq,
        )
        torch.manual_seed(a.seed)
        model = ParafillForMaskedDiffusion(cfg)
    if a.expand_delete:
        expand.grow_vocab(model, tok.vocab_size)
        model.config.expand_token_id = tok.expand_id
    if a.length_head and model.length_head is None:
        model.config.length_head_hidden = a.length_head
        model.length_head = LengthHead(a.length_head)
    model.to(dev).train()
    seq = model.config.train_seq_len
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if n.startswith("length_head."):
            continue  # its own optimizer, its own loss (training/length_train.py)
        (decay if p.dim() >= 2 and "embed" not in n else no_decay).append(p)
    head_opt = None
    if a.length_head and model.length_head is not None:
        head_opt = torch.optim.Adam(model.length_head.parameters(), lr=3e-3)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": a.wd}, {"params": no_decay, "weight_decay": 0.0}],
        lr=a.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
        fused=dev.type == "cuda",
    )
    resumed_opt = bool(a.resume) and load_optimizer(opt, model, a.resume, state["steps"])
    fwd_model = model
    if ddp:
        fwd_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index])
    step_model = fwd_model
    if a.compile:
        step_model = torch.compile(fwd_model)

    expand_id = tok.expand_id if a.expand_delete else None
    train = Batches(a.data / "train", seq, dev, tok.mask_id, tok.pad_id, expand_id)
    val = Batches(a.data / "val", seq, dev, tok.mask_id, tok.pad_id, expand_id)
    n_full = round(a.batch * a.full_frac) if train.n_infill else a.batch
    n_inf = a.batch - n_full
    nl_ids = tok.newline_ids
    g = torch.Generator(device=dev)
    g.manual_seed(a.seed * 1000 + rank + state["steps"])
    vg = torch.Generator(device=dev)
    val_batches = []
    vg.manual_seed(12345)
    for _ in range(8):
        val_batches.append(val.draw(16, 16 if val.n_infill else 0, vg))

    def evaluate() -> dict:
        model.eval()
        tot = {"full": [], "infill": []}
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
            for b in val_batches:
                nf = 16
                for name, sl in (("full", slice(0, nf)), ("infill", slice(nf, None))):
                    part = tuple(x[sl] for x in b)
                    if part[0].shape[0]:
                        tot[name].append(diffusion_loss(model, part)[0].item())
        model.train()
        return {k: round(float(np.mean(v)), 4) for k, v in tot.items() if v}

    t_start = time.time()
    budget = a.minutes * 60
    if a.deadline:
        budget = min(budget, a.deadline - t_start)
    if rank == 0:
        print(
            f"[train] {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params on {dev} "
            f"bf16={use_bf16} batch={a.batch} (full {n_full}, infill {n_inf}) budget {budget:.0f}s "
            f"train tokens {train.stream.numel():,} infill examples {train.n_infill:,} "
            f"resumed_opt={resumed_opt}",
            flush=True,
        )
    run = {
        "start_step": state["steps"],
        "device": str(torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"),
    }
    last_eval = last_save = time.time()
    ema = None
    step0, tok0, t_log = state["steps"], 0, time.time()
    vl = {}
    compile_ok = True
    while True:
        el = time.time() - t_start
        done = (state["steps"] - step0) / a.steps if a.steps else el / budget
        if el >= budget or done >= 1:
            break
        lr = lr_at(done, a.lr, a.warmup, a.decay)
        for grp_ in opt.param_groups:
            grp_["lr"] = lr
        batch = train.draw(n_full, n_inf, g)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
            try:
                loss, info = diffusion_loss(step_model, batch)
            except Exception as e:  # torch.compile failure: fall back to eager once
                if step_model is fwd_model or not compile_ok:
                    raise
                print(f"[train] compile failed ({type(e).__name__}: {e}); eager", flush=True)
                compile_ok, step_model = False, fwd_model
                loss, info = diffusion_loss(step_model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if head_opt is not None and n_inf and state["steps"] % a.length_every == 0:
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
                hl, _ = head_loss(model, *train.last_infill, nl_ids)
            head_opt.zero_grad(set_to_none=True)
            hl.backward()
            head_opt.step()
            state["length_head_loss"] = round(hl.item(), 4)
        state["steps"] += 1
        state["tokens_seen"] += a.batch * seq
        state["supervised_tokens"] += info["masked"]
        tok0 += a.batch * seq
        if state["steps"] % a.log_every == 0 and rank == 0:
            lv = loss.item()
            ema = lv if ema is None else 0.9 * ema + 0.1 * lv
            dt = time.time() - t_log
            bar = "#" * int(30 * min(1.0, el / budget))
            print(
                f"[train] [{bar:<30}] {el:6.0f}/{budget:.0f}s step {state['steps']} loss {ema:.3f} "
                f"ce {info['ce']:.3f} lr {lr:.2e} {tok0 / dt:,.0f} tok/s "
                f"length head {state.get('length_head_loss', '-')}",
                flush=True,
            )
            tok0, t_log = 0, time.time()
        if rank == 0 and time.time() - last_eval > a.eval_every:
            vl = evaluate()
            print(f"[train] val {vl}", flush=True)
            last_eval = time.time()
        if rank == 0 and time.time() - last_save > a.save_every:
            state["val_loss"] = vl
            save_checkpoint(model, a.out, tok_source, state, opt if a.save_optimizer else None)
            last_save = time.time()
    if rank == 0:
        vl = evaluate()
        state["val_loss"] = vl
        state["train_seconds"] = state.get("train_seconds", 0) + (time.time() - t_start)
        run.update(
            end_step=state["steps"],
            seconds=round(time.time() - t_start, 1),
            val_loss=vl,
            batch=a.batch,
            full_frac=a.full_frac,
            lr=a.lr,
            expand_delete=a.expand_delete,
        )
        state["runs"] = state.get("runs", []) + [run]
        save_checkpoint(model, a.out, tok_source, state, opt if a.save_optimizer else None)
        print(
            f"[train] done: {state['steps'] - step0} steps, val {vl}, saved to {a.out}", flush=True
        )
    if ddp:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
