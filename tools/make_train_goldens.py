#!/usr/bin/env python3
"""Writes the training-loop goldens (tests/data/golden/llama_basic/train_<case>/): three optimizer steps of
Hugging Face Trainer's arithmetic on a fixed token batch, computed with transformers + peft + torch.optim.AdamW.

What Trainer does for one step, written out: the loss of the batch (mean over its targets), backward,
torch.nn.utils.clip_grad_norm_ over the trained parameters, AdamW with Trainer's two parameter groups (no weight
decay for biases and norm weights: Trainer.get_decay_parameter_names) and the schedule of transformers.get_scheduler.
miniseq's `train` runs the same steps (tests/test_train_golden.cpp) and must end with the same trained tensors
within 1e-5 relative per tensor.

Cases (the tiny Llama of make_goldens.py, llama_basic/model):
  - lora: LongLoRA's LoRA+ (r 8, alpha 16, q/k/v/o, `--trainable_params embed,norm`), PEFT's own initialization of
    A (seeded) and B randomized as make_lora_goldens.py does, saved into adapter_init/ so that miniseq starts from
    the same adapter; the trained tensors after 3 steps under the names miniseq writes (adapter_model.safetensors
    names for LoRA, Hugging Face names for embed/norm) in trained.safetensors.
  - full: full fine-tuning, every parameter trained; trained.safetensors holds every weight after 3 steps.

Conditioning: the golden is kept well conditioned, checked here: torch's fp32 run is within 3e-6 of its fp64 run per
tensor, a third of the test's tolerance. Two choices make it so. B = 0 (PEFT's init) makes B's 3-step values pure
AdamW sign steps lr * g / (|g| + eps) of B's first gradients, whose small elements are summation-order noise in
fp32 (torch fp32 vs fp64: 1.2e-5 on a lora_B); and adam_epsilon 1e-6 with lr 1e-3 keeps gradient elements near
zero in AdamW's linear range (with 1e-8 one element of o_proj with |g| = 1e-5 x its tensor's spread took another
path: 1.8e-5 between torch fp32 and fp64). Both are ordinary flag values; the arithmetic tested is the same.

case.json holds the hyper-parameters (the test passes the same flags), the batch and the per-step losses and
gradient norms.

    tools/.venv/bin/python tools/make_train_goldens.py   # after make_goldens.py; a few seconds

Deterministic (fixed seeds, one thread); docs/goldens.md ("Training steps") describes it.
"""

import json
import sys
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import Trainer, get_scheduler

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_goldens as mg  # noqa: E402
import make_lora_goldens as mlg  # noqa: E402

MODEL_CASE = "llama_basic"
SEED = 2024
BATCH, SEQ, STEPS = 2, 24, 3
HYPER = dict(learning_rate=1e-3, weight_decay=0.01, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-6,
             max_grad_norm=1.0, lr_scheduler_type="cosine", warmup_steps=0)
LORA = dict(r=8, alpha=16, targets=["q_proj", "k_proj", "v_proj", "o_proj"], trainable="embed,norm")


def fixed_batch(vocab):
    gen = torch.Generator().manual_seed(SEED)
    return torch.randint(0, vocab, (BATCH, SEQ), generator=gen)


def train(model, ids, names):
    """Trainer's steps over `model`'s trainable parameters; returns the per-step losses and gradient norms."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = set(Trainer.get_decay_parameter_names(None, model))
    groups = [
        {"params": [p for n, p in params if n in decay], "weight_decay": HYPER["weight_decay"]},
        {"params": [p for n, p in params if n not in decay], "weight_decay": 0.0},
    ]
    names["no_decay"] = sorted(mlg.miniseq_name(n) for n, _ in params if n not in decay)
    opt = torch.optim.AdamW(groups, lr=HYPER["learning_rate"], betas=(HYPER["adam_beta1"], HYPER["adam_beta2"]),
                            eps=HYPER["adam_epsilon"])
    sched = get_scheduler(HYPER["lr_scheduler_type"], opt, num_warmup_steps=HYPER["warmup_steps"],
                          num_training_steps=STEPS)
    losses, norms, lrs = [], [], []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_([p for _, p in params], HYPER["max_grad_norm"])
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
        losses.append(loss.item())
        norms.append(norm.item())
    return losses, norms, lrs


def run(case, dtype, out=None):
    """The case's 3 steps in `dtype`; returns (model, info, trained tensors by miniseq name)."""
    case_dir = mg.OUT / MODEL_CASE
    torch.manual_seed(SEED)
    model = mg.load(case_dir / "model")
    ids = fixed_batch(model.config.vocab_size)
    info = dict(case=case, model=f"{MODEL_CASE}/model", steps=STEPS, batch=BATCH, seq=SEQ, seed=SEED,
                input_ids=ids.tolist(), **HYPER)
    if case == "lora":
        cfg = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], target_modules=LORA["targets"], lora_dropout=0.0,
                         bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(model, cfg)  # PEFT's initialization: A Kaiming-uniform (seeded), B = 0 ...
        gen = torch.Generator().manual_seed(SEED)
        with torch.no_grad():  # ... then B randomized, as make_lora_goldens.py does (see the docstring)
            for n, p in sorted(model.named_parameters()):
                if "lora_B" in n:
                    p.copy_(0.05 * torch.randn(p.shape, generator=gen))
        keys = LORA["trainable"].split(",")
        [p.requires_grad_() for n, p in model.named_parameters() if any(k in n for k in keys)]  # LongLoRA's loop
        if out is not None:
            model.save_pretrained(out / "adapter_init")
            (out / "adapter_init" / "README.md").unlink(missing_ok=True)
        info.update(lora_r=LORA["r"], lora_alpha=LORA["alpha"], lora_target_modules=",".join(LORA["targets"]),
                    trainable_params=LORA["trainable"])
    model = model.to(dtype)
    losses, norms, lrs = train(model, ids, info)
    trained = {mlg.miniseq_name(n): p.detach().contiguous()
               for n, p in model.named_parameters() if p.requires_grad}
    info.update(losses=losses, grad_norms=norms, learning_rates=lrs, trained=sorted(trained))
    return info, trained


def write(case):
    out = mg.OUT / MODEL_CASE / f"train_{case}"
    out.mkdir(parents=True, exist_ok=True)
    info, trained = run(case, torch.float32, out)
    # The golden must be well conditioned: torch's own fp32 run within 3e-6 of its fp64 run per tensor, so that a
    # 1e-5 comparison measures the arithmetic and not summation-order noise amplified by AdamW's g / (sqrt(v) + eps)
    # on gradient elements near zero (with eps 1e-8 one element of o_proj with |g| = 1e-5 x its tensor's
    # spread flipped its path: 1.8e-5 between torch fp32 and fp64; eps 1e-6 keeps such elements linear).
    _, trained64 = run(case, torch.float64)
    cond = {k: mg.rel_err(trained[k], trained64[k]) for k in trained}
    worst = max(cond, key=cond.get)
    assert cond[worst] < 3e-6, (worst, cond[worst])
    info.update(torch_f32_vs_f64_max_rel_err=cond[worst], torch_f32_vs_f64_worst_tensor=worst)
    trained = {k: v.to(torch.float32) for k, v in trained.items()}
    losses, norms = info["losses"], info["grad_norms"]
    save_file(trained, out / "trained.safetensors", metadata={"losses": json.dumps(losses)})
    (out / "case.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    print(f"train_{case:5s} losses {', '.join(f'{x:.7f}' for x in losses)}; grad norms "
          f"{', '.join(f'{x:.4f}' for x in norms)}; {len(trained)} trained tensors; torch fp32 vs fp64 "
          f"{cond[worst]:.1e} ({worst})", flush=True)


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    for case in ("lora", "full"):
        write(case)


if __name__ == "__main__":
    main()
