#!/usr/bin/env python3
"""S²-Attn (LongLoRA's shifted sparse attention) reference, and its goldens in tests/data/golden/s2/.

Written from LongLoRA's description (paper §3.2 and llama_attn_replace.py of dvlab-research/LongLoRA), not from its
code: in training the sequence of S tokens is split into groups of G = int(S / 4) positions (group_size_ratio 1/4).
Query heads [0, H // 2) attend causally within groups [0, G), [G, 2G), ...; heads [H // 2, H) within groups shifted
by G // 2: [0, G/2), [G/2, G/2 + G), ... The shifted half's first G // 2 positions form a group of their own.
LongLoRA's flash-attention path (its default) draws exactly these boundaries with cu_seqlens; its roll-based eager
path rolls the shifted heads by -G/2, which puts the first half group into one group with the last, so the first
G // 2 queries of every shifted head also see the last G // 2 keys (issues #15, #90): the leak, not reproduced here.
When G does not divide S (LongLoRA refuses such S), the last group (and the last shifted group) is partial.

The reference is one attention function registered with transformers' AttentionInterface: the eager attention of
transformers (repeat_kv, scaled scores, the model's own causal / sliding-window mask, fp32 softmax), with the group
mask of each query head added. Plugged into LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM unchanged, it
gives the S²-Attn loss and every gradient. The same function, on the same q/k/v inside the model, also runs
LongLoRA's roll-based algorithm (re-implemented from its description) and counts the query rows where the two
differ: exactly the first G // 2 queries of every shifted head, B · (H - H // 2) · (G // 2) rows per layer.

    tools/.venv/bin/python tools/s2_attn_reference.py

writes, per case, tests/data/golden/s2/<case>/ with the layout of docs/goldens.md (model/, batch.jsonl,
grads.safetensors, grads_f64.safetensors, case.json); the grads' metadata also holds "loss_full" (the same model and
batch with transformers' full causal attention: what evaluation must give) and "s2_group". s2/errors.json holds the
fp32-vs-fp64 errors and the roll comparison. docs/s2attn.md describes the convention.
"""

import json
import shutil
import sys
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from transformers import AttentionInterface, AutoModelForCausalLM
from transformers.masking_utils import AttentionMaskInterface, eager_mask
from transformers.models.llama.modeling_llama import repeat_kv

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_goldens as mg  # noqa: E402  (the shared tiny shapes, weight init, fp64 patches)

OUT = mg.OUT / "s2"
IMPL = "s2_reference"
GROUP_SIZE_RATIO = 4  # LongLoRA: group_size = int(q_len * 1/4)


def s2_group_size(seq_len):
    return max(1, seq_len // GROUP_SIZE_RATIO)


def group_index(seq_len, group, shift):
    """Group number of every position: groups of `group` positions starting at 0 (shift 0), or, shifted, a first
    group [0, shift) and then groups of `group` starting at shift."""
    p = torch.arange(seq_len)
    if shift == 0:
        return p // group
    return torch.where(p < shift, 0, 1 + (p - shift) // group)


def s2_same_group(num_heads, seq_len):
    """[H, S, S] bool: query i and key j of head h are in one group."""
    group = s2_group_size(seq_len)
    masks = []
    for h in range(num_heads):
        shift = group // 2 if h >= num_heads // 2 else 0
        g = group_index(seq_len, group, shift)
        masks.append(g[:, None] == g[None, :])
    return torch.stack(masks)


# What the attention calls saw: per call, the rows where the roll-based attention differs (see roll_compare).
ROLL_LOG = []
ROLL_COMPARE = {"on": False}


def s2_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """transformers' eager attention (modeling_llama.eager_attention_forward) plus the S² group mask per query head.
    query [B, H, S, D], key/value [B, Hkv, S, D]; attention_mask: the model's eager float mask [B, 1, S, S] (0 where
    causal and, for Mistral, inside the sliding window; the dtype's minimum elsewhere)."""
    B, H, S, _ = query.shape
    key_states = repeat_kv(key, module.num_key_value_groups)
    value_states = repeat_kv(value, module.num_key_value_groups)
    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    same = s2_same_group(H, S)[None]  # [1, H, S, S]
    attn_weights = attn_weights.masked_fill(~same, torch.finfo(attn_weights.dtype).min)
    attn_weights = torch.nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = torch.nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value_states)  # [B, H, S, D]
    if ROLL_COMPARE["on"]:
        window = getattr(module.config, "sliding_window", None) or 0
        ROLL_LOG.append(roll_compare(query, key_states, value_states, attention_mask, scaling, attn_output, window))
    return attn_output.transpose(1, 2).contiguous(), attn_weights


def longlora_roll_attention(query, key, value, attention_mask, scaling):
    """LongLoRA's roll-based S²-Attn (llama_attn_replace.py, forward_noflashattn), re-implemented from its description
    on [B, H, S, D] tensors (kv heads already repeated): roll the shifted heads by -G/2 along the sequence, attend
    within consecutive groups of G with the mask of the first G positions, roll the output back. Needs G | S."""
    B, H, S, D = query.shape
    G = s2_group_size(S)
    assert S % G == 0
    half = H // 2

    def shift(x):
        x = x.clone()
        x[:, half:] = x[:, half:].roll(-(G // 2), dims=2)
        return x.transpose(1, 2).reshape(B * (S // G), G, H, D).transpose(1, 2)

    q, k, v = shift(query), shift(key), shift(value)
    w = torch.matmul(q, k.transpose(2, 3)) * scaling
    if attention_mask is not None:
        w = w + attention_mask[:, :, :G, :G].repeat(S // G, 1, 1, 1)
    w = torch.nn.functional.softmax(w, dim=-1, dtype=torch.float32).to(query.dtype)
    out = torch.matmul(w, v).transpose(1, 2).reshape(B, S, H, D)
    out[:, :, half:] = out[:, :, half:].roll(G // 2, dims=1)
    return out.transpose(1, 2)  # [B, H, S, D]


def roll_compare(query, key, value, attention_mask, scaling, ours, window):
    """Rows (b, h, i) where LongLoRA's roll-based output differs from ours, and whether they are exactly the leaked
    ones: h >= H // 2 and i < G // 2, the first half group of a shifted head, which the roll joins to the last half
    group. With a sliding window W the roll's mask is the window in the rolled coordinates, so query i (at rolled
    offset G/2 + i of that group) reaches back into the last half group only while i < W - 1."""
    B, H, S, _ = query.shape
    G = s2_group_size(S)
    if S % G:
        return {"seq_len": S, "group": G, "skipped": "LongLoRA refuses S not divisible by its group"}
    with torch.no_grad():
        roll = longlora_roll_attention(query, key, value, attention_mask, scaling)
        diff = (roll - ours).abs().amax(dim=-1)  # [B, H, S]
        tol = 1e-5 * ours.abs().max().item()
        differ = diff > tol
        leaked = torch.zeros_like(differ)
        n_leaked = G // 2 if window <= 0 else min(G // 2, window - 1)
        leaked[:, H // 2 :, :n_leaked] = True
    return {
        "seq_len": S,
        "group": G,
        "rows": B * H * S,
        "rows_differing": int(differ.sum()),
        "leaked_rows_expected": B * (H - H // 2) * n_leaked,
        "window": window,
        "differing_rows_are_the_leaked_ones": bool(torch.equal(differ, leaked)),
        "max_abs_diff_elsewhere": float(diff[~leaked].max()),
        "min_abs_diff_on_leaked_rows": float(diff[leaked].min()) if leaked.any() else 0.0,
    }


AttentionInterface.register(IMPL, s2_attention)
AttentionMaskInterface.register(IMPL, eager_mask)  # the model's causal / sliding-window mask, as for eager


def load_s2(model_dir):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=IMPL)
    model.train()
    return model


def s2_f64_loss_and_grads(model_dir, ids, labels):
    """make_goldens' float64 reference (pure_float64: no fp32 downcasts in norms and softmax) with the S² attention."""
    model = load_s2(model_dir).double()
    model.zero_grad(set_to_none=True)
    with mg.pure_float64() as calls:
        logits = model(input_ids=ids).logits
        shift_labels = torch.nn.functional.pad(labels, (0, 1), value=-100)[..., 1:]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), shift_labels.reshape(-1), ignore_index=-100
        )
        loss.backward()
    assert calls["softmax"] == model.config.num_hidden_layers, calls
    return loss.item(), mg.grads_of(model)


CASES = [
    dict(
        name="llama_gqa",
        arch="LlamaForCausalLM",
        config=dict(mg.BASE),
        seq_len=40,
        batch=2,
        ignore=[[(0, 2)], [(17, 23), (-1, 0)]],
        seed=4001,
        description="Llama, 4 heads and 2 kv heads (kv head 0 serves the unshifted heads 0-1, kv head 1 the shifted "
        "2-3), batch 2 with ignored labels; S=40: groups of 10, shifted by 5.",
    ),
    dict(
        name="mistral_window",
        arch="MistralForCausalLM",
        config=dict(mg.BASE, sliding_window=5),
        seq_len=48,
        batch=1,
        seed=4002,
        description="Mistral with sliding_window 5 < the group of 12 (S=48): a query attends keys that are in its "
        "group and in its window (both must allow).",
    ),
    dict(
        name="qwen2_kv1_partial",
        arch="Qwen2ForCausalLM",
        config=dict(mg.tied_qwen(), num_key_value_heads=1),
        seq_len=45,
        batch=1,
        seed=4003,
        description="Qwen2 with q/k/v biases, tied embeddings and 1 kv head for 4 query heads (fewer than H/2: the "
        "kv head serves shifted and unshifted heads); S=45 is not a multiple of 4: groups of 11 (45 // 4), the last "
        "one [44, 45) partial, shifted by 5 (last shifted group [38, 45)). LongLoRA refuses this length.",
    ),
]


def write_case(case):
    name = case["name"]
    case_dir = OUT / name
    model_dir = case_dir / "model"
    if case_dir.exists():
        shutil.rmtree(case_dir)
    model_dir.mkdir(parents=True)
    seed = case["seed"]
    gen = torch.Generator().manual_seed(seed)
    config = mg.CONFIG_CLASSES[case["arch"]](**case["config"])
    config.architectures = [case["arch"]]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    mg.init_weights(model, gen)
    model.save_pretrained(model_dir)

    ids, labels = mg.make_batch(case, config.vocab_size, gen)
    with open(case_dir / "batch.jsonl", "w") as f:
        for row in range(ids.shape[0]):
            f.write(json.dumps({"input_ids": ids[row].tolist(), "labels": labels[row].tolist()}) + "\n")

    ROLL_LOG.clear()
    ROLL_COMPARE["on"] = True
    loss32, g32 = mg.hf_loss_and_grads(load_s2(model_dir), ids, labels)
    ROLL_COMPARE["on"] = False
    roll = list(ROLL_LOG)
    assert len(roll) == config.num_hidden_layers, len(roll)
    loss64, g64 = s2_f64_loss_and_grads(model_dir, ids, labels)
    loss_full, _ = mg.hf_loss_and_grads(mg.load(model_dir), ids, labels)  # transformers' own eager attention
    assert g32.keys() == g64.keys()
    assert abs(loss_full - loss32) > 1e-3 * abs(loss_full), "S² must change the loss of this case"

    group = s2_group_size(case["seq_len"])
    meta = {"loss": repr(loss32), "loss_f64": repr(loss64), "loss_full": repr(loss_full), "s2_group": str(group)}
    save_file(g32, case_dir / "grads.safetensors", metadata=meta)
    save_file(g64, case_dir / "grads_f64.safetensors", metadata=meta)
    n_kept = int((torch.nn.functional.pad(labels, (0, 1), value=-100)[..., 1:] != -100).sum())
    info = {
        "description": case["description"],
        "arch": case["arch"],
        "seq_len": case["seq_len"],
        "batch": case["batch"],
        "s2_group": group,
        "s2_shift": group // 2,
        "notes": f"{mg.WEIGHT_NOTES} Attention: S²-Attn reference (tools/s2_attn_reference.py) in the training "
        f"forward; loss_full is transformers' eager attention. Loss = HF ForCausalLMLoss over the {n_kept} kept "
        f"labels. Seed {seed}.",
        "n_loss_tokens": n_kept,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
    }
    (case_dir / "case.json").write_text(json.dumps(info, indent=2) + "\n")
    errs = {n: mg.rel_err(g32[n], g64[n]) for n in g32}
    worst = max(errs, key=errs.get)
    return {
        "loss": loss32,
        "loss_f64": loss64,
        "loss_full": loss_full,
        "loss_rel_err": abs(loss32 - loss64) / abs(loss64),
        "max_grad_rel_err": errs[worst],
        "worst_tensor": worst,
        "grad_rel_err": errs,
        "roll_comparison": roll,
    }


def check_group_mask():
    """The group rule on small cases, against hand-written group lists."""
    def groups(S, H):
        same = s2_same_group(H, S)
        out = []
        for h in range(H):
            ids = sorted({tuple(same[h, i].nonzero().flatten().tolist()) for i in range(S)})
            out.append([(g[0], g[-1] + 1) for g in ids])
        return out

    assert groups(8, 2) == [[(0, 2), (2, 4), (4, 6), (6, 8)], [(0, 1), (1, 3), (3, 5), (5, 7), (7, 8)]]
    assert groups(10, 3)[0] == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]  # H // 2 = 1 unshifted head
    assert groups(10, 3)[1] == groups(10, 3)[2] == [(0, 1), (1, 3), (3, 5), (5, 7), (7, 9), (9, 10)]
    assert groups(9, 2) == [[(0, 2), (2, 4), (4, 6), (6, 8), (8, 9)], [(0, 1), (1, 3), (3, 5), (5, 7), (7, 9)]]
    assert groups(3, 2) == [[(0, 1), (1, 2), (2, 3)]] * 2  # G = 1: every token alone, no shift


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    check_group_mask()
    OUT.mkdir(parents=True, exist_ok=True)
    summary = {"cases": {}}
    for case in CASES:
        res = write_case(case)
        summary["cases"][case["name"]] = res
        r = res["roll_comparison"][0]
        roll_note = (
            f"roll differs on {r['rows_differing']} of {r['rows']} rows per layer (leaked {r['leaked_rows_expected']}, "
            f"exactly those: {r['differing_rows_are_the_leaked_ones']})"
            if "skipped" not in r
            else "roll: " + r["skipped"]
        )
        print(
            f"s2/{case['name']:18s} loss {res['loss']:.9f} (f64 {res['loss_f64']:.12f}, full {res['loss_full']:.9f}) "
            f"max grad rel err {res['max_grad_rel_err']:.2e}; {roll_note}",
            flush=True,
        )
        for r in res["roll_comparison"]:
            if "skipped" not in r:
                assert r["differing_rows_are_the_leaked_ones"], r
    summary["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    (OUT / "errors.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
