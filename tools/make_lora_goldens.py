#!/usr/bin/env python3
"""Writes the LoRA / LoRA+ golden data (tests/data/golden/<case>/lora/) with transformers + peft.

For a few of the golden models of make_goldens.py (their model/ and batch.jsonl are reused): a PEFT LoRA adapter
as LongLoRA's fine-tune.py builds it (LoraConfig(r, lora_alpha, target_modules, lora_dropout=0, bias="none",
task_type="CAUSAL_LM"), then `[p.requires_grad_() for n, p in model.named_parameters() if any(k in n for k in
"embed,norm".split(","))]`), PEFT's own initialization of A and then B randomized (B = 0 would leave every gradient
of A zero), saved with save_pretrained into lora/adapter/; and the loss and the gradient of every trainable tensor
in float32 (HF + peft, eager attention) and float64 (make_goldens.pure_float64), under the names miniseq uses: LoRA
tensors as adapter_model.safetensors names them, base tensors under their Hugging Face names.

    tools/.venv/bin/python tools/make_lora_goldens.py   # after make_goldens.py; a few seconds

Deterministic (fixed seeds, one thread); docs/goldens.md ("LoRA") describes it.
"""

import json
import sys
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_goldens as mg  # noqa: E402

CASES = [
    dict(case="llama_basic", r=8, alpha=16, targets=["q_proj", "k_proj", "v_proj", "o_proj"], trainable="embed,norm",
         note="LongLoRA's defaults: r 8, alpha 16, q/k/v/o, LoRA+ (embed,norm)"),
    dict(case="mistral_window", r=4, alpha=12,
         targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], trainable="embed,norm",
         note="every linear adapted (scale 3), sliding window 8"),
    dict(case="qwen2_bias_tied", r=8, alpha=16, targets=["q_proj", "k_proj", "v_proj", "o_proj"],
         trainable="embed,norm",
         note="q/k/v biases frozen under their adapted linears; tied embeddings: the one matrix is trained through "
         "the embedding and the LM head"),
    dict(case="qwen3_tied", r=4, alpha=8, targets=["q_proj", "v_proj", "down_proj"], trainable="norm",
         note="LoRA+ with 'norm' only: Qwen3's q_norm / k_norm match the substring too (trained); the tied "
         "embedding stays frozen"),
]
SEED = 4321


def read_batch(case_dir):
    rows = [json.loads(line) for line in (case_dir / "batch.jsonl").read_text().splitlines() if line.strip()]
    ids = torch.tensor([r["input_ids"] for r in rows])
    labels = torch.tensor([r.get("labels", r["input_ids"]) for r in rows])
    return ids, labels


def miniseq_name(peft_name):
    """PEFT parameter name -> the name in miniseq's gradient file."""
    n = peft_name.replace(".default.", ".")
    if ".lora_" in n:
        return n if n.startswith("base_model.model.") else "base_model.model." + n
    for prefix in ("base_model.model.",):
        if n.startswith(prefix):
            n = n[len(prefix):]
    return n.replace(".base_layer.", ".")


def peft_model(model, spec):
    cfg = LoraConfig(r=spec["r"], lora_alpha=spec["alpha"], target_modules=spec["targets"], lora_dropout=0.0,
                     bias="none", task_type="CAUSAL_LM")
    pm = get_peft_model(model, cfg)
    keys = spec["trainable"].split(",")
    [p.requires_grad_() for n, p in pm.named_parameters() if any(k in n for k in keys)]  # LongLoRA's loop
    return pm


def trainable_grads(model):
    return {miniseq_name(n): p.grad.detach().to(torch.float32).contiguous()
            for n, p in model.named_parameters() if p.requires_grad}


def write(spec):
    case_dir = mg.OUT / spec["case"]
    out = case_dir / "lora"
    model_dir = case_dir / "model"
    ids, labels = read_batch(case_dir)
    torch.manual_seed(SEED)
    pm = peft_model(mg.load(model_dir), spec)
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for n, p in sorted(pm.named_parameters()):
            if "lora_B" in n:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    (out / "adapter").mkdir(parents=True, exist_ok=True)
    pm.save_pretrained(out / "adapter")
    (out / "adapter" / "README.md").unlink(missing_ok=True)

    # float32: HF + peft as they run.
    pm.zero_grad(set_to_none=True)
    loss32 = pm(input_ids=ids, labels=labels).loss
    loss32.backward()
    g32 = trainable_grads(pm)
    frozen_with_grad = [n for n, p in pm.named_parameters() if not p.requires_grad and p.grad is not None]
    assert not frozen_with_grad, frozen_with_grad

    # float64: the same adapter loaded the way users load it, then pure float64 (make_goldens.pure_float64).
    from peft import PeftModel

    m64 = PeftModel.from_pretrained(mg.load(model_dir), out / "adapter", is_trainable=True)
    keys = spec["trainable"].split(",")
    [p.requires_grad_() for n, p in m64.named_parameters() if any(k in n for k in keys)]
    m64 = m64.double()
    m64.zero_grad(set_to_none=True)
    with mg.pure_float64() as calls:
        logits = m64(input_ids=ids).logits
        shift = torch.nn.functional.pad(labels, (0, 1), value=-100)[..., 1:]
        loss64 = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), shift.reshape(-1),
                                                   ignore_index=-100)
        loss64.backward()
    assert calls["softmax"] == m64.config.num_hidden_layers, calls
    g64 = trainable_grads(m64)
    assert g32.keys() == g64.keys(), (g32.keys() ^ g64.keys())

    save_file(g32, out / "grads.safetensors", metadata={"loss": repr(loss32.item())})
    save_file({k: v.float() for k, v in g64.items()}, out / "grads_f64.safetensors",
              metadata={"loss_f64": repr(loss64.item())})
    errors = {k: mg.rel_err(g32[k], g64[k]) for k in g32}
    worst = max(errors, key=errors.get)
    info = dict(case=spec["case"], r=spec["r"], lora_alpha=spec["alpha"], target_modules=spec["targets"],
                trainable_params=spec["trainable"], note=spec["note"], loss=loss32.item(), loss_f64=loss64.item(),
                grad_rel_err=errors, max_grad_rel_err=errors[worst], worst_tensor=worst,
                trained=sorted(g32.keys()), seed=SEED)
    (out / "case.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    print(f"{spec['case']:18s} lora loss {loss32.item():.9f} (f64 {loss64.item():.12f}) {len(g32)} tensors, "
          f"max grad rel err {errors[worst]:.2e} ({worst})", flush=True)


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    for spec in CASES:
        write(spec)


if __name__ == "__main__":
    main()
