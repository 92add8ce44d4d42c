#!/usr/bin/env python3
"""Writes the golden reference data in tests/data/golden/ with the real Hugging Face stack.

For every case: a tiny model directory written by `save_pretrained`, a token batch, and the loss and gradient of every
trainable parameter computed by transformers' own LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM in float32
(eager attention, HF's loss: model(input_ids, labels=labels).loss), plus the same in float64 as a cleaner reference.
Run it with the venv of tools/setup-venv.sh:

    tools/setup-venv.sh && tools/.venv/bin/python tools/make_goldens.py

The output is deterministic for a given torch/transformers version and committed; `make test` never runs Python.
docs/goldens.md describes the layout, the cases and the measured fp32-vs-fp64 errors (printed at the end of a run and
written to tests/data/golden/errors.json).
"""

import argparse
import contextlib
import json
import shutil
import sys
from pathlib import Path

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
    Qwen3Config,
)
from transformers.models.llama import modeling_llama
from transformers.models.mistral import modeling_mistral
from transformers.models.qwen2 import modeling_qwen2
from transformers.models.qwen3 import modeling_qwen3

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "golden"

# Shared tiny shape: d=64, H=4, Hkv=2, D=16, I=56 (!= d, so a transposed MLP weight cannot pass), V=131 (prime:
# no chunk size divides it), 2 layers: ~250 KB in fp32, three such files per case keep the whole set under 6 MB.
BASE = dict(
    vocab_size=131,
    hidden_size=64,
    intermediate_size=56,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=128,
    rms_norm_eps=1e-5,
    bos_token_id=1,
    eos_token_id=2,
    tie_word_embeddings=False,
)

def tied_qwen():
    """Qwen2/Qwen3 shape with tied embeddings, rope_theta 1e6, eps 1e-6 (a fresh dict: transformers fills it in)."""
    return dict(
        BASE,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
        rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
        use_sliding_window=False,
    )


WEIGHT_NOTES = (
    "weights: N(0, 0.02) (HF initializer_range) except q_proj/k_proj N(0, 0.1) so attention is far from uniform; "
    "RMSNorm weights 1 + N(0, 0.1); biases N(0, 0.05). Inputs uniform over the vocab; labels = input_ids with -100 "
    "where stated. No attention_mask and default position_ids (0..S-1) are passed to the model."
)


def ignore_spans(seq_len, spans):
    """Labels mask: True where the label is kept. spans: list of (start, end) half-open, negative = from the end."""
    keep = [True] * seq_len
    for a, b in spans:
        a = a + seq_len if a < 0 else a
        b = b + seq_len if b <= 0 else b
        for i in range(a, b):
            keep[i] = False
    return keep


CASES = [
    dict(
        name="llama_basic",
        arch="LlamaForCausalLM",
        config=dict(BASE),
        seq_len=37,
        batch=1,
        description="Llama with GQA (4 heads, 2 kv heads), batch 1, S=37 (prime: no chunk count divides it).",
    ),
    dict(
        name="llama_batch2_ignore",
        arch="LlamaForCausalLM",
        config=dict(BASE),
        seq_len=45,
        batch=2,
        ignore=[
            # row 0: -100 at both ends and a fully ignored run of 16 consecutive labels in the middle
            [(0, 3), (12, 28), (-4, 0)],
            # row 1: scattered -100 and the last label ignored
            [(5, 6), (9, 11), (30, 31), (-1, 0)],
        ],
        description="Llama, batch 2 with -100 label spans: ends, a run of 16 ignored labels, scattered ones. The "
        "loss is the mean over all kept (shifted) labels of both rows together.",
    ),
    dict(
        name="llama_rope_linear",
        arch="LlamaForCausalLM",
        config=dict(BASE, rope_parameters=dict(rope_type="linear", factor=2.0, rope_theta=500000.0)),
        seq_len=53,
        batch=1,
        classic_config="llama2",
        description="Llama with linear RoPE scaling (position interpolation, factor 2.0) and rope_theta 500000. "
        "config.json is in the classic hub format (rope_theta + rope_scaling {type: linear, factor: 2.0}, "
        "torch_dtype, no head_dim): the key set of Llama-2-7b-hf plus rope_theta, as LongLoRA writes it.",
    ),
    dict(
        name="llama_bf16",
        arch="LlamaForCausalLM",
        config=dict(BASE),
        seq_len=29,
        batch=1,
        save_dtype=torch.bfloat16,
        description="Llama saved as bfloat16 safetensors; the goldens are computed from the weights loaded back "
        "in float32 (bf16 -> f32, exactly what our loader does).",
    ),
    dict(
        name="mistral_window",
        arch="MistralForCausalLM",
        config=dict(BASE, sliding_window=8),
        seq_len=41,
        batch=1,
        classic_config="mistral",
        description="Mistral with sliding_window 8 < S=41. Attended pairs: 0 <= i - j < 8 (see docs/goldens.md). "
        "config.json has exactly the key set of Mistral-7B-v0.1's (rope_theta, torch_dtype, no head_dim, no rope_scaling).",
    ),
    dict(
        name="qwen2_bias_tied",
        arch="Qwen2ForCausalLM",
        config=tied_qwen(),
        seq_len=33,
        batch=1,
        description="Qwen2 with q/k/v biases and tie_word_embeddings: the file has no lm_head.weight; "
        "grads hold model.embed_tokens.weight = embedding gradient + LM-head gradient.",
    ),
    dict(
        name="llama_sharded",
        arch="LlamaForCausalLM",
        config=dict(BASE),
        seq_len=23,
        batch=1,
        max_shard_size="100KB",
        description="Llama saved by save_pretrained with max_shard_size=100KB: model.safetensors.index.json and "
        ">= 3 shards, as the real library writes them.",
    ),
    dict(
        name="llama_attn_bias",
        arch="LlamaForCausalLM",
        config=dict(BASE, attention_bias=True),
        seq_len=31,
        batch=1,
        description="Llama with attention_bias true: biases on q, k, v and o projections.",
    ),
    # pad_token_id in config.json: HF builds nn.Embedding(V, d, padding_idx=pad_token_id), so lookups of the pad id
    # add nothing to that row's gradient. Row 0 has pad ids inside the text (labels kept), row 1 is right-padded
    # with ignored labels, as the trainer pads. Fixed seeds: independent of where the cases sit in this list.
    dict(
        name="llama_pad",
        arch="LlamaForCausalLM",
        config=dict(BASE, pad_token_id=3),
        seq_len=39,
        batch=2,
        pad=[[0, 5, 6, 21, 33], list(range(30, 39))],
        ignore=[[], [(30, 0)]],
        grown=[[10, 11, 25], list(range(30, 39))],
        seed=2001,
        description="Llama with pad_token_id 3 in config.json (nn.Embedding padding_idx 3): row 0 holds the pad id at "
        "positions 0, 5, 6, 21, 33 with their labels kept, row 1 is right-padded from position 30 with labels -100. "
        "The pad row of model.embed_tokens.weight gets no gradient. grown/: the same model after the trainer's "
        "vocabulary growth with a new [PAD] (id 131, rows = mean of the old), which HF's embedding does not treat as "
        "its padding_idx (still 3): grown/batch.jsonl has id 131 at row 0 positions 10, 11, 25 (labels kept) and as "
        "row 1's padding.",
    ),
    dict(
        name="llama_pad_tied",
        arch="LlamaForCausalLM",
        config=dict(BASE, pad_token_id=3, tie_word_embeddings=True),
        seq_len=39,
        batch=2,
        pad=[[0, 5, 6, 21, 33], list(range(30, 39))],
        ignore=[[], [(30, 0)]],
        seed=2002,
        description="llama_pad with tie_word_embeddings: the pad row of model.embed_tokens.weight holds the LM-head "
        "gradient only (its lookups add nothing).",
    ),
    # RoPE types of today's checkpoints (docs/rope.md) and Qwen3. original_max_position_embeddings (or, for dynamic
    # NTK, max_position_embeddings) is below seq_len, so every scaling is in effect. Fixed seeds.
    dict(
        name="llama31_rope_llama3",
        arch="LlamaForCausalLM",
        config=dict(
            BASE,
            rope_parameters=dict(
                rope_type="llama3",
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=32,
                rope_theta=500000.0,
            ),
        ),
        seq_len=47,
        batch=1,
        classic_config="llama31",
        seed=3001,
        description="Llama-3.1-style llama3 RoPE (factor 8, frequency factors 1 / 4, original context 32 < S=47, "
        "rope_theta 500000): high, medium (smoothed) and low (divided) frequency bands all occur at D=16. config.json "
        "in the hub's classic layout of Llama-3.1-8B (rope_theta + the full rope_scaling dict, torch_dtype).",
    ),
    dict(
        name="qwen2_rope_yarn",
        arch="Qwen2ForCausalLM",
        config=dict(
            BASE,
            rms_norm_eps=1e-6,
            rope_parameters=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=16, rope_theta=10000.0),
            use_sliding_window=False,
        ),
        seq_len=53,
        batch=1,
        seed=3002,
        description="Qwen2 with YaRN RoPE (factor 4, original context 16 < S=53; cos/sin scaled by the attention "
        "factor 0.1 ln 4 + 1), transformers-5 layout (rope_parameters), q/k/v biases.",
    ),
    dict(
        name="llama_rope_dynamic",
        arch="LlamaForCausalLM",
        config=dict(BASE, max_position_embeddings=32, rope_parameters=dict(rope_type="dynamic", factor=2.0, rope_theta=10000.0)),
        seq_len=45,
        batch=1,
        seed=3003,
        description="Llama with dynamic NTK RoPE (factor 2): S=45 > max_position_embeddings 32, so transformers "
        "recomputes inv_freq from seq_len 45 in the forward.",
    ),
    dict(
        name="qwen3_tied",
        arch="Qwen3ForCausalLM",
        config=tied_qwen(),
        seq_len=41,
        batch=1,
        seed=3004,
        description="Qwen3 with tied embeddings: per-head RMSNorm q_norm / k_norm [D] on queries and keys before "
        "RoPE, no biases.",
    ),
    dict(
        name="qwen3_yarn_bias",
        arch="Qwen3ForCausalLM",
        config=dict(
            BASE,
            head_dim=24,
            rms_norm_eps=1e-6,
            attention_bias=True,
            rope_parameters=dict(rope_type="yarn", factor=2.0, original_max_position_embeddings=24, rope_theta=1000000.0),
            use_sliding_window=False,
        ),
        seq_len=43,
        batch=2,
        ignore=[[(0, 4)], [(-6, 0)]],
        seed=3005,
        description="Qwen3 untied, head_dim 24 (H·D = 96 != hidden 64, as Qwen3's explicit head_dim allows), "
        "attention_bias (biases on q, k, v and o), YaRN RoPE factor 2 over an original context of 24 < S=43, "
        "batch 2 with ignored labels.",
    ),
]

CONFIG_CLASSES = {
    "LlamaForCausalLM": LlamaConfig,
    "MistralForCausalLM": MistralConfig,
    "Qwen2ForCausalLM": Qwen2Config,
    "Qwen3ForCausalLM": Qwen3Config,
}
RMSNORM_CLASSES = (
    modeling_llama.LlamaRMSNorm,
    modeling_mistral.MistralRMSNorm,
    modeling_qwen2.Qwen2RMSNorm,
    modeling_qwen3.Qwen3RMSNorm,
)


def init_weights(model, gen):
    """Deterministic realistic-scale weights (see WEIGHT_NOTES), filled in parameter-name order."""
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith(".bias"):
                p.copy_(0.05 * noise)
            elif name.endswith(("q_proj.weight", "k_proj.weight")):
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.02 * noise)


def make_batch(case, vocab, gen):
    b, s = case["batch"], case["seq_len"]
    ids = torch.randint(0, vocab, (b, s), generator=gen)
    for row, positions in enumerate(case.get("pad", [])):
        ids[row, positions] = case["config"]["pad_token_id"]
    labels = ids.clone()
    for row, spans in enumerate(case.get("ignore", [])):
        keep = torch.tensor(ignore_spans(s, spans))
        labels[row][~keep] = -100
    return ids, labels


def load(model_dir, dtype=torch.float32):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="eager")
    model.train()  # dropout is 0 in every config: train() only mirrors how the trainer runs it
    return model


def grads_of(model):
    """fp32 copies of the gradient of every trainable parameter, under HF names (tied weights appear once)."""
    return {n: p.grad.detach().to(torch.float32).contiguous() for n, p in model.named_parameters() if p.requires_grad}


def hf_loss_and_grads(model, ids, labels):
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, labels=labels).loss
    loss.backward()
    return loss.item(), grads_of(model)


@contextlib.contextmanager
def pure_float64():
    """Makes the float64 run float64 throughout: HF upcasts RMSNorm and softmax to float32, which in a float64 model
    is a *down*cast. Same formulas, evaluated in the input dtype. RoPE cos/sin stay HF's own float32 tables (cast to
    f64), so both runs see identical position encodings. Yields a call counter to prove the patches ran."""
    calls = {"rmsnorm": 0, "softmax": 0}
    orig_softmax = torch.nn.functional.softmax
    orig_forwards = [cls.forward for cls in RMSNORM_CLASSES]

    def softmax(x, dim=None, _stacklevel=3, dtype=None):
        if x.dtype == torch.float64 and dtype == torch.float32:
            calls["softmax"] += 1
            dtype = None
        return orig_softmax(x, dim=dim, dtype=dtype)

    def rmsnorm_forward(self, hidden_states):
        calls["rmsnorm"] += 1
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))

    torch.nn.functional.softmax = softmax
    for cls in RMSNORM_CLASSES:
        cls.forward = rmsnorm_forward
    try:
        yield calls
    finally:
        torch.nn.functional.softmax = orig_softmax
        for cls, fwd in zip(RMSNORM_CLASSES, orig_forwards):
            cls.forward = fwd


def f64_loss_and_grads(model_dir, ids, labels, prepare=None):
    """Float64 reference. The loss is HF's formula (shift, cross-entropy mean over labels != -100) evaluated on the f64
    logits, because HF's loss function upcasts logits with .float() (a downcast here). prepare(model), when given, runs
    on the fp32 model before the cast."""
    model = load(model_dir)
    if prepare:
        prepare(model)
    model = model.double()
    model.zero_grad(set_to_none=True)
    with pure_float64() as calls:
        logits = model(input_ids=ids).logits
        shift_labels = torch.nn.functional.pad(labels, (0, 1), value=-100)[..., 1:]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), shift_labels.reshape(-1), ignore_index=-100
        )
        loss.backward()
    n_layers = model.config.num_hidden_layers
    norms_per_layer = 4 if model.config.model_type == "qwen3" else 2  # Qwen3: + q_norm, k_norm
    assert calls["rmsnorm"] == norms_per_layer * n_layers + 1 and calls["softmax"] == n_layers, calls
    return loss.item(), grads_of(model)


def rel_err(a, ref):
    a, ref = a.double(), ref.double()
    return ((a - ref).norm() / ref.norm()).item() if ref.norm() > 0 else (a - ref).norm().item()


# Keys that the classic hub configs (Mistral-7B-v0.1, Llama-2-7b-hf) do not have; their defaults are the values here.
CLASSIC_ABSENT = ("head_dim", "attention_dropout", "pad_token_id", "attention_bias", "mlp_bias")


def to_classic_config(config_path, saved_copy, style):
    """Rewrites a transformers-5 config.json into the classic hub format (rope_theta / rope_scaling / torch_dtype,
    no head_dim) of Mistral-7B-v0.1, Llama-2 and Llama-3.1 (style "mistral", "llama2", "llama31"); keeps the original
    next to case.json."""
    cfg = json.loads(config_path.read_text())
    shutil.copyfile(config_path, saved_copy)
    assert cfg["head_dim"] == cfg["hidden_size"] // cfg["num_attention_heads"]
    assert not cfg.get("attention_bias") and not cfg.get("mlp_bias") and not cfg["attention_dropout"]
    rope = cfg.pop("rope_parameters")
    out = {k: v for k, v in cfg.items() if k not in CLASSIC_ABSENT and k != "dtype"}
    out["torch_dtype"] = cfg["dtype"]
    out["rope_theta"] = rope["rope_theta"]
    if style == "llama31":  # Llama-3.1-8B: the whole dict under rope_scaling, keyed by rope_type
        out["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    elif rope["rope_type"] != "default":
        out["rope_scaling"] = {"type": rope["rope_type"], "factor": rope["factor"]}
    elif style == "llama2":
        out["rope_scaling"] = None
    config_path.write_text(json.dumps(dict(sorted(out.items())), indent=2) + "\n")


def write_case(case, seed):
    name = case["name"]
    case_dir = OUT / name
    model_dir = case_dir / "model"
    if case_dir.exists():
        shutil.rmtree(case_dir)
    model_dir.mkdir(parents=True)

    gen = torch.Generator().manual_seed(seed)
    config = CONFIG_CLASSES[case["arch"]](**case["config"])
    config.architectures = [case["arch"]]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    init_weights(model, gen)
    save_dtype = case.get("save_dtype", torch.float32)
    save_kwargs = {"max_shard_size": case["max_shard_size"]} if "max_shard_size" in case else {}
    model.to(save_dtype).save_pretrained(model_dir, **save_kwargs)

    config_note = f"config.json exactly as transformers {transformers.__version__} saved it."
    if case.get("classic_config"):
        before = load(model_dir).config
        to_classic_config(model_dir / "config.json", case_dir / "config_as_saved.json", case["classic_config"])
        after = load(model_dir).config
        assert before.rope_parameters["rope_theta"] == after.rope_parameters["rope_theta"]
        assert before.rope_parameters["rope_type"] == after.rope_parameters["rope_type"]
        assert before.rope_parameters.get("factor") == after.rope_parameters.get("factor")
        assert before.dtype == after.dtype, (before.dtype, after.dtype)
        config_note = (
            "config.json hand-converted to the classic hub format (rope_theta, rope_scaling, torch_dtype, no head_dim); "
            f"config_as_saved.json is what transformers {transformers.__version__} wrote. Both load to the same model "
            "(checked: same rope parameters and dtype, bit-identical loss)."
        )

    ids, labels = make_batch(case, config.vocab_size, gen)
    with open(case_dir / "batch.jsonl", "w") as f:
        for row in range(ids.shape[0]):
            f.write(json.dumps({"input_ids": ids[row].tolist(), "labels": labels[row].tolist()}) + "\n")

    loss32, g32 = hf_loss_and_grads(load(model_dir), ids, labels)
    loss64, g64 = f64_loss_and_grads(model_dir, ids, labels)
    assert g32.keys() == g64.keys()
    if config.tie_word_embeddings:
        assert "lm_head.weight" not in g32 and "model.embed_tokens.weight" in g32
    if case.get("classic_config"):
        shutil.copyfile(model_dir / "config.json", case_dir / "config_classic.tmp")
        shutil.copyfile(case_dir / "config_as_saved.json", model_dir / "config.json")
        loss_saved, _ = hf_loss_and_grads(load(model_dir), ids, labels)
        shutil.move(case_dir / "config_classic.tmp", model_dir / "config.json")
        assert loss_saved == loss32, (loss_saved, loss32)

    pad_effect = None
    if "pad" in case:
        pad = config.pad_token_id
        model = load(model_dir)
        assert model.model.embed_tokens.padding_idx == pad, model.model.embed_tokens.padding_idx
        if not config.tie_word_embeddings:
            assert g32["model.embed_tokens.weight"][pad].abs().max() == 0 and g64["model.embed_tokens.weight"][pad].abs().max() == 0
        # What the rule changes: the same run with padding_idx None (the pad lookups' gradient added).
        model.model.embed_tokens.padding_idx = None
        _, g_nopad = hf_loss_and_grads(model, ids, labels)
        pad_effect = rel_err(g_nopad["model.embed_tokens.weight"], g32["model.embed_tokens.weight"])

    meta = {"loss": repr(loss32), "loss_f64": repr(loss64)}
    save_file(g32, case_dir / "grads.safetensors", metadata=meta)
    save_file(g64, case_dir / "grads_f64.safetensors", metadata=meta)
    if case.get("grown"):
        pad_effect_grown = write_grown(case, case_dir, ids, labels)

    # What transformers counts, tied weights once: `miniseq inspect` must report the same total.
    num_parameters = AutoModelForCausalLM.from_pretrained(case_dir / "model").num_parameters()
    n_kept = int((torch.nn.functional.pad(labels, (0, 1), value=-100)[..., 1:] != -100).sum())
    info = {
        "description": case["description"],
        "arch": case["arch"],
        "seq_len": case["seq_len"],
        "batch": case["batch"],
        "notes": f"{WEIGHT_NOTES} {config_note} Loss = HF ForCausalLMLoss: shift by one inside the model, mean over "
        f"the {n_kept} kept labels. Seed {seed}.",
        "saved_dtype": str(save_dtype).removeprefix("torch."),
        "n_loss_tokens": n_kept,
        "num_parameters": num_parameters,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
    }
    (case_dir / "case.json").write_text(json.dumps(info, indent=2) + "\n")

    errs = {n: rel_err(g32[n], g64[n]) for n in g32}
    worst = max(errs, key=errs.get)
    extra = {} if pad_effect is None else {"embed_rel_diff_without_padding_idx": pad_effect}
    if case.get("grown"):
        extra["grown"] = pad_effect_grown
    return extra | {
        "loss": loss32,
        "loss_f64": loss64,
        "loss_rel_err": abs(loss32 - loss64) / abs(loss64),
        "max_grad_rel_err": errs[worst],
        "worst_tensor": worst,
        "median_grad_rel_err": sorted(errs.values())[len(errs) // 2],
        "grad_rel_err": errs,
    }


def grow_vocabulary(model, n_new):
    """LongLoRA's smart_tokenizer_and_embedding_resize after tokenizer.add_special_tokens({"pad_token": "[PAD]"}):
    resize_token_embeddings(len(tokenizer)), then the new embedding and LM-head rows = the mean of the old ones."""
    model.resize_token_embeddings(model.config.vocab_size + n_new)
    with torch.no_grad():
        inp = model.get_input_embeddings().weight.data
        out = model.get_output_embeddings().weight.data
        inp[-n_new:] = inp[:-n_new].mean(dim=0, keepdim=True)
        out[-n_new:] = out[:-n_new].mean(dim=0, keepdim=True)


def write_grown(case, case_dir, ids, labels):
    """The trainer's vocabulary growth: the tokenizer has no pad token, so "[PAD]" is added as id V and the model grows
    to V + 1 rows (grow_vocabulary); the Trainer then sets config.pad_token_id = V (align_special_tokens). The
    embedding module keeps its padding_idx (the config.json pad_token_id): resize_token_embeddings copies the new
    weights into the old nn.Embedding. Batch: the case's, with the new id V in the text of row 0 (labels kept) and as
    the right padding of row 1. Writes case_dir/grown/{batch.jsonl, grads.safetensors, grads_f64.safetensors}."""
    pad_old = case["config"]["pad_token_id"]
    v = case["config"]["vocab_size"]
    ids, labels = ids.clone(), labels.clone()
    for row, positions in enumerate(case["grown"]):
        ids[row, positions] = v
        labels[row, positions] = torch.where(labels[row, positions] == -100, -100, v)
    out = case_dir / "grown"
    out.mkdir()
    with open(out / "batch.jsonl", "w") as f:
        for row in range(ids.shape[0]):
            f.write(json.dumps({"input_ids": ids[row].tolist(), "labels": labels[row].tolist()}) + "\n")

    def prepare(model):
        grow_vocabulary(model, 1)
        model.config.pad_token_id = v  # what the Trainer's align_special_tokens does; the module is not rebuilt
        assert model.model.embed_tokens.padding_idx == pad_old, model.model.embed_tokens.padding_idx

    model = load(case_dir / "model")
    prepare(model)
    loss32, g32 = hf_loss_and_grads(model, ids, labels)
    loss64, g64 = f64_loss_and_grads(case_dir / "model", ids, labels, prepare)
    assert g32["model.embed_tokens.weight"].shape[0] == v + 1
    assert g32["model.embed_tokens.weight"][pad_old].abs().max() == 0  # untied: the kept padding_idx
    assert g32["model.embed_tokens.weight"][v].abs().max() > 0  # the new [PAD] is an ordinary row
    meta = {"loss": repr(loss32), "loss_f64": repr(loss64)}
    save_file(g32, out / "grads.safetensors", metadata=meta)
    save_file(g64, out / "grads_f64.safetensors", metadata=meta)
    errs = {n: rel_err(g32[n], g64[n]) for n in g32}
    worst = max(errs, key=errs.get)
    return {
        "loss": loss32,
        "loss_f64": loss64,
        "loss_rel_err": abs(loss32 - loss64) / abs(loss64),
        "max_grad_rel_err": errs[worst],
        "worst_tensor": worst,
        "grad_rel_err": errs,
    }


def check_sliding_window_convention():
    """Proves numerically which (i, j) pairs Mistral's eager path attends: build HF's mask, compare with hand-written
    ones, and compare model outputs under HF's mask and explicit 4D masks."""
    from transformers.masking_utils import create_sliding_window_causal_mask

    w, s = 8, 41
    model = load(OUT / "mistral_window" / "model")
    cfg = model.config
    i = torch.arange(s)[:, None]
    j = torch.arange(s)[None, :]
    candidates = {
        "0 <= i-j < W": (j <= i) & (i - j < w),
        "0 <= i-j <= W": (j <= i) & (i - j <= w),
        "0 <= i-j < W-1": (j <= i) & (i - j < w - 1),
        "causal (no window)": j <= i,
    }
    hf = create_sliding_window_causal_mask(
        config=cfg,
        inputs_embeds=torch.zeros(1, s, cfg.hidden_size),
        attention_mask=None,
        cache=None,
        position_ids=torch.arange(s)[None],
    )
    hf_bool = hf[0, 0] == 0
    mask_match = {k: bool(torch.equal(hf_bool, v)) for k, v in candidates.items()}

    ids = torch.tensor([json.loads(line)["input_ids"] for line in open(OUT / "mistral_window" / "batch.jsonl")])
    with torch.no_grad():
        ref = model(input_ids=ids).logits
        out_diff = {}
        for k, allowed in candidates.items():
            m = torch.where(allowed, 0.0, torch.finfo(torch.float32).min)[None, None]
            out_diff[k] = (model(input_ids=ids, attention_mask=m).logits - ref).abs().max().item()
    return {"window": w, "seq_len": s, "hf_mask_equals": mask_match, "max_abs_logit_diff_vs_hf": out_diff}


def rope_table_effect():
    """How much the gradients move if RoPE cos/sin are computed exactly (f64) instead of HF's fp32 tables, for
    the longest case (llama_rope_linear, S=53). Tells C++ how exactly it must reproduce HF's table."""
    case_dir = OUT / "llama_rope_linear"
    rows = [json.loads(line) for line in open(case_dir / "batch.jsonl")]
    ids = torch.tensor([r["input_ids"] for r in rows])
    labels = torch.tensor([r["labels"] for r in rows])
    _, g64 = f64_loss_and_grads(case_dir / "model", ids, labels)

    orig = modeling_llama.LlamaRotaryEmbedding.forward

    def exact_forward(self, x, position_ids):
        cfg = self.config.rope_parameters
        d = self.inv_freq.shape[0] * 2
        inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.float64) / d)) / cfg.get("factor", 1.0)
        freqs = position_ids[..., None].double() * inv
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

    modeling_llama.LlamaRotaryEmbedding.forward = exact_forward
    try:
        _, g64_exact = f64_loss_and_grads(case_dir / "model", ids, labels)
    finally:
        modeling_llama.LlamaRotaryEmbedding.forward = orig
    errs = {n: rel_err(g64_exact[n], g64[n]) for n in g64}
    worst = max(errs, key=errs.get)
    return {"case": "llama_rope_linear", "max_grad_rel_diff": errs[worst], "worst_tensor": worst}


def verify_readback(case, case_dir):
    """Re-reads every written file with the libraries: safetensors headers/metadata, index, from_pretrained."""
    model_dir = case_dir / "model"
    model = load(model_dir)
    params = dict(model.named_parameters())
    with safe_open(case_dir / "grads.safetensors", "pt") as f:
        meta = f.metadata()
        float(meta["loss"]), float(meta["loss_f64"])
        keys = set(f.keys())
        assert keys == set(params), keys ^ set(params)
        for k in keys:
            assert f.get_tensor(k).shape == params[k].shape and f.get_tensor(k).dtype == torch.float32
    shards = sorted(model_dir.glob("*.safetensors"))
    if "max_shard_size" in case:
        index = json.loads((model_dir / "model.safetensors.index.json").read_text())
        assert len(shards) >= 3 and set(index["weight_map"].values()) == {p.name for p in shards}, shards
    else:
        assert [p.name for p in shards] == ["model.safetensors"], shards
    want = str(case.get("save_dtype", torch.float32)).removeprefix("torch.")
    dtypes = set()
    for p in shards:
        with safe_open(p, "pt") as f:
            dtypes |= {f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes == {"BF16" if want == "bfloat16" else "F32"}, dtypes
    return sum(p.stat().st_size for p in shards)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--only", nargs="*", help="case names to regenerate (default: all)")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # fixed summation order: the committed files are reproducible bit for bit

    OUT.mkdir(parents=True, exist_ok=True)
    errors_path = OUT / "errors.json"
    summary = json.loads(errors_path.read_text()) if errors_path.exists() else {}
    summary.setdefault("cases", {})
    for k, case in enumerate(CASES):
        if args.only and case["name"] not in args.only:
            continue
        res = write_case(case, case.get("seed", args.seed + k))
        res["model_bytes"] = verify_readback(case, OUT / case["name"])
        summary["cases"][case["name"]] = res
        print(
            f"{case['name']:22s} loss {res['loss']:.9f} (f64 {res['loss_f64']:.12f}) "
            f"max grad rel err {res['max_grad_rel_err']:.2e} ({res['worst_tensor']}) model {res['model_bytes']} B",
            flush=True,
        )
    summary["sliding_window"] = check_sliding_window_convention()
    summary["rope_fp32_table_vs_exact"] = rope_table_effect()
    summary["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    errors_path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(json.dumps(summary["sliding_window"], indent=2))
    print(json.dumps(summary["rope_fp32_table_vs_exact"], indent=2))
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"total size of {OUT.relative_to(ROOT)}: {total} bytes")
    sw = summary["sliding_window"]
    if not (sw["hf_mask_equals"]["0 <= i-j < W"] and sw["max_abs_logit_diff_vs_hf"]["0 <= i-j < W"] == 0.0):
        sys.exit("sliding-window convention check failed")


if __name__ == "__main__":
    main()
