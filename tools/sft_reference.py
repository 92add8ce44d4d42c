#!/usr/bin/env python3
"""Writes tests/data/sft/: the first optimizer step of LongLoRA's supervised-fine-tune.py, computed with transformers.

The data is built by LongLoRA's rules, written out here in Python (its PROMPT_DICT "prompt_input_llama2" /
"prompt_llama2", target = output + eos_token, source and source+target tokenized separately with truncation at
model_max_length, labels[:len(non-pad source tokens)] = -100, a batch right-padded with the pad token and labels
-100, attention_mask = input_ids != pad). The tokenizer is the Mistral one from ../shared/data/tokenizers/ loaded by
transformers' AutoTokenizer exactly as LongLoRA loads it (padding_side="right", use_fast=True), and it has no pad
token, so LongLoRA's smart_tokenizer_and_embedding_resize adds "[PAD]" and grows the model with mean rows.

The model is the one `miniseq tiny-model` writes for the arguments in reference.json (seeded, deterministic), so
nothing large is committed; tests/test_sft.cpp writes the same model, builds the same examples with miniseq and
runs `miniseq sft` for one step of batch 2 x 2 accumulation, and compares: every input_ids / labels exactly, the
loss within 1e-5. The loss is Hugging Face Trainer's for that step: the sum of token losses over all micro-batches
of the step divided by the number of target tokens of the step (num_items_in_batch), which does not depend on
how the four records are shuffled into the two micro-batches. tokenizers.json holds the examples of the same
records through the Llama-3 and Qwen3 tokenizers (byte-level; test_sft.cpp compares them too).

    tools/.venv/bin/python tools/sft_reference.py --miniseq build/miniseq
"""

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
import transformers

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "sft"
IGNORE_INDEX = -100

# LongLoRA supervised-fine-tune.py, PROMPT_DICT: the two templates its SupervisedDataset applies.
SYSTEM = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being safe.  "
    "Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal content. "
    "Please ensure that your responses are socially unbiased and positive in nature.\n\n"
    "If a question does not make any sense, or is not factually coherent, explain why instead of answering "
    "something not correct. If you don't know the answer to a question, please don't share false information.\n"
)
PROMPT_INPUT_LLAMA2 = "[INST] <<SYS>>\n" + SYSTEM + "<</SYS>> \n\n {instruction} \n{input} [/INST]"
PROMPT_LLAMA2 = "[INST]{instruction}[/INST]"

TINY_MODEL = ("--arch mistral --vocab_size 32000 --hidden_size 32 --intermediate_size 48 --num_attention_heads 2 "
              "--num_key_value_heads 1 --num_hidden_layers 2 --dtype float32 --seed 11")
MAX_LEN = 192
BATCH, ACCUM = 2, 2

LONG_OUTPUT = " ".join(f"Step {i}: stir the soup, taste it, and add a pinch of salt." for i in range(30))
LONG_INPUT = " ".join(f"Paragraph {i} of a long report about river levels in spring." for i in range(40))
RECORDS = [
    # input given: the Llama-2 chat template with the system prompt
    {"instruction": "Summarize the text in one sentence.",
     "input": "The grass is green and the sky is blue. Birds sing in the old oak tree.",
     "output": "Nature is colorful and lively."},
    # no "input" key, an output long enough to be truncated at MAX_LEN (the eos is cut too)
    {"instruction": "Write a recipe with many steps.", "output": LONG_OUTPUT},
    # "input": "" means no input; non-ASCII text and literal braces
    {"instruction": "Translate {input} to French: naïve café, 東京.", "input": "",
     "output": "« naïf café », Tōkyō {ok}"},
    # a prompt longer than MAX_LEN: no response token survives truncation, the record adds nothing to the loss
    {"instruction": "Which river rose first?", "input": LONG_INPUT, "output": "The Thames."},
]


def source_of(example):
    if example.get("input", "") != "":
        return PROMPT_INPUT_LLAMA2.format_map(example)
    return PROMPT_LLAMA2.format_map(example)


def tokenize(strings, tokenizer):
    out = [tokenizer(t, return_tensors="pt", padding="longest", max_length=tokenizer.model_max_length,
                     truncation=True) for t in strings]
    ids = [o.input_ids[0] for o in out]
    lens = [o.input_ids.ne(tokenizer.pad_token_id).sum().item() for o in out]
    return ids, lens


def longlora_tokenizer(path):
    """AutoTokenizer as LongLoRA loads it, with its missing special tokens added; returns it and how many."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, model_max_length=MAX_LEN, padding_side="right",
                                                           use_fast=True)
    special = {}
    if tokenizer.pad_token is None: special["pad_token"] = "[PAD]"
    if tokenizer.eos_token is None: special["eos_token"] = "</s>"
    if tokenizer.bos_token is None: special["bos_token"] = "<s>"
    if tokenizer.unk_token is None: special["unk_token"] = "<unk>"
    return tokenizer, tokenizer.add_special_tokens(special)


def longlora_examples(tokenizer):
    """SupervisedDataset of RECORDS: input_ids, labels (prompt -100) and the prompt lengths."""
    sources = [source_of(r) for r in RECORDS]
    targets = [f"{r['output']}{tokenizer.eos_token}" for r in RECORDS]
    example_ids, _ = tokenize([s + t for s, t in zip(sources, targets)], tokenizer)
    _, source_lens = tokenize(sources, tokenizer)
    labels = []
    for ids, n in zip(example_ids, source_lens):
        lab = ids.clone()
        lab[:n] = IGNORE_INDEX
        labels.append(lab)
    return example_ids, labels, source_lens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--miniseq", default=str(ROOT / "build" / "miniseq"))
    ap.add_argument("--tokenizer", default=str(ROOT.parent / "shared" / "data" / "tokenizers" / "mistral"))
    args = ap.parse_args()
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        subprocess.run([args.miniseq, "tiny-model", "--out", str(model_dir)] + TINY_MODEL.split(), check=True)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(Path(args.tokenizer) / f, model_dir / f)

        model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                                  attn_implementation="eager")
        tokenizer, added = longlora_tokenizer(model_dir)
        model.resize_token_embeddings(len(tokenizer))
        if added > 0:
            for emb in (model.get_input_embeddings().weight.data, model.get_output_embeddings().weight.data):
                emb[-added:] = emb[:-added].mean(dim=0, keepdim=True)
        model.eval()  # dropout is 0 anyway; eval keeps it so

        example_ids, labels, source_lens = longlora_examples(tokenizer)

        def collate(idx):
            ids = torch.nn.utils.rnn.pad_sequence([example_ids[i] for i in idx], batch_first=True,
                                                  padding_value=tokenizer.pad_token_id)
            lab = torch.nn.utils.rnn.pad_sequence([labels[i] for i in idx], batch_first=True,
                                                  padding_value=IGNORE_INDEX)
            return ids, lab, ids.ne(tokenizer.pad_token_id)

        # One optimizer step over all records (BATCH x ACCUM of them), Trainer's loss: num_items_in_batch.
        micro = [list(range(k * BATCH, (k + 1) * BATCH)) for k in range(ACCUM)]
        n_items = sum(int((collate(m)[1][:, 1:] != IGNORE_INDEX).sum()) for m in micro)
        loss = 0.0
        with torch.no_grad():
            for m in micro:
                ids, lab, mask = collate(m)
                loss += model(input_ids=ids, attention_mask=mask, labels=lab,
                              num_items_in_batch=torch.tensor(n_items)).loss.item()
            # The same in float64 (Hugging Face's loss casts logits to float32, so by hand), for the size of the
            # fp32 rounding: reported, not compared.
            model64 = model.double()
            loss64 = 0.0
            for m in micro:
                ids, lab, mask = collate(m)
                logits = model64(input_ids=ids, attention_mask=mask).logits[:, :-1]
                loss64 += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                            lab[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX,
                                                            reduction="sum").item() / n_items
        first_ids, first_labels, _ = collate([0, 1])
        ref = {
            "generator": "tools/sft_reference.py",
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "tokenizer": "../shared/data/tokenizers/mistral",
            "tiny_model_args": TINY_MODEL,
            "model_max_length": MAX_LEN,
            "per_device_train_batch_size": BATCH,
            "gradient_accumulation_steps": ACCUM,
            "pad_token_id": tokenizer.pad_token_id,
            "vocab_size": len(tokenizer),
            "examples": [{"input_ids": e.tolist(), "labels": l.tolist()} for e, l in zip(example_ids, labels)],
            "batch_0_1": {"input_ids": first_ids.tolist(), "labels": first_labels.tolist()},
            "num_items_in_batch": n_items,
            "loss": loss,
            "loss_float64": loss64,
        }
    # The same records through the other tokenizer families (byte-level Llama-3: [PAD] and <unk> added; Qwen3:
    # a pad token, no BOS, <s> and <unk> added): the examples only.
    others = {}
    for name in ("llama3", "qwen3"):
        tok, _ = longlora_tokenizer(Path(args.tokenizer).parent / name)
        ids, labs, _ = longlora_examples(tok)
        others[name] = {"tokenizer": f"../shared/data/tokenizers/{name}", "pad_token_id": tok.pad_token_id,
                        "eos_token": tok.eos_token, "vocab_size": len(tok),
                        "examples": [{"input_ids": e.tolist(), "labels": l.tolist()} for e, l in zip(ids, labs)]}
        print(f"{name}: lengths {[len(e) for e in ids]}, vocabulary {len(tok)}, pad {tok.pad_token_id}")
    (OUT / "tokenizers.json").write_text(json.dumps(others) + "\n")
    (OUT / "records.json").write_text(json.dumps(RECORDS, indent=1, ensure_ascii=False) + "\n")
    (OUT / "records.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS))
    (OUT / "reference.json").write_text(json.dumps(ref) + "\n")
    print(f"loss {loss!r} (float64 {loss64!r}), {n_items} target tokens, lengths "
          f"{[len(e) for e in example_ids]}, prompt lengths {source_lens}")


if __name__ == "__main__":
    main()
