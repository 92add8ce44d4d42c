#!/usr/bin/env python3
"""Writes the tokenizer reference data that tests/test_tokenizer_reference.cpp compares miniseq against.

  tests/data/tokenizer/corpus.json         the corpus: tricky strings and a few real-looking documents
  tests/data/tokenizer/reference_NAME.json ids from Hugging Face `tokenizers` for each vocabulary NAME
                                           (with and without special tokens) and the decoded text

The ids come from `tokenizers.Tokenizer.from_file(DIR/tokenizer.json)`; transformers' AutoTokenizer is run as a cross
check (its BOS/EOS come from tokenizer_config.json) and any disagreement is printed and recorded. Run it in the
venv of tools/setup-venv.sh (`make test` never needs it; its outputs are committed):

    tools/.venv/bin/python tools/tokenizer_reference.py [--data ../shared/data/tokenizers]
"""
import argparse
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "tests", "data", "tokenizer")
VOCABS = ["mistral", "llama3", "qwen3"]

DOCUMENTS = [
    # English prose
    "The Mini-Sequence Transformer splits the sequence into chunks for the MLP and the language-model head. "
    "Peak memory drops because the S x I intermediates never exist at once; the gradients are identical up to "
    "floating-point summation order.\n\nIn practice, Llama-3-8B trains at 60K tokens on one 80 GB GPU "
    "(12x the vanilla length), while throughput stays within a few percent.\n",
    # Markdown with lists, tables and a URL
    "# Release notes (v0.1.0)\n\n- Added `miniseq tokenize --tokenizer DIR`\n- Fixed: loss was 2.0x too large when "
    "S % M != 0\n\n| model | vocab | bos |\n|---|---|---|\n| Mistral-7B | 32000 | 1 |\n| Llama-3 | 128256 | 128000 |\n\n"
    "See https://huggingface.co/docs/tokenizers/index?lang=en#quick-tour for details.\n",
    # Code
    "def rmsnorm(x, w, eps=1e-5):\n    \"\"\"Root-mean-square norm.\"\"\"\n    var = (x * x).mean(-1, keepdim=True)\n"
    "    return x * torch.rsqrt(var + eps) * w\n\n\nfor i in range(10):\n\tprint(f\"{i:>4d}: {rmsnorm(i)!r}\")  # tab\n"
    "int main(int argc, char** argv) { return argc > 1 ? 0 : -1; }\r\n",
    # JSON
    '{"text": "It\'s a test -- isn\'t it?", "ids": [1, 22557, 1526], "nested": {"a": null, "b": true}, '
    '"price": "$1,234.56", "date": "2024-07-21T12:34:56Z"}\n',
    # Multilingual
    "Français : l'été dernier, nous sommes allés à Zürich. Español: ¿Dónde está el niño? Deutsch: Größe, Straße.\n"
    "Русский: Съешь же ещё этих мягких французских булок. Ελληνικά: Καλημέρα κόσμε.\n"
    "中文：我们在北京大学学习自然语言处理。日本語：東京は日本の首都です。한국어: 안녕하세요, 세계!\n"
    "العربية: مرحبا بالعالم. עברית: שלום עולם. हिन्दी: नमस्ते दुनिया। ไทย: สวัสดีชาวโลก\n",
    # Chat-style text with special-token strings
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
    "<|im_start|>assistant\n<think>\nSimple.\n</think>\n\n4<|im_end|>\n<|endoftext|>",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant"
    "<|end_header_id|>\n\nHello.<|eot_id|><|end_of_text|>",
    "<s>[INST] Summarize the text. [/INST] It says hello.</s><s>[INST] Again [/INST]",
]

TRICKY = [
    "", " ", "  ", "   ", "\t", "\n", "\r\n", "\n\n\n", " \n ", "\t\t\tx", "a\tb\tc", "a  b   c    d",
    "Hello", "Hello world", " Hello world", "  Hello world  ", "Hello\nworld", "Hello\n\nworld\n",
    "hello    \n   world", "trailing spaces   ", "   leading spaces", "x\u00a0y", "a\u3000b", "a\u2028b\u2029c",
    "a\u0085b", "a\x0bb\x0cc", "a\x1cb\x1dc\x1ed\x1fe", "a\u180eb", "a\u200bb\u200dc\ufeffd",
    "0", "7", "42", "123", "1234", "12345", "1234567890", "3.14159265358979", "1,000,000", "-273.15",
    "0x1F600", "v1.2.3-rc4", "2024-07-21", "31415926535897932384626433832795028841971693993751058209",
    "१२३४ ٣٤٥ ①②③ ½ ²³", "Ⅻ Ⅳ",
    "don't", "DON'T", "I'm we're they've she'll he'd it's", "I'M WE'RE THEY'VE", "'s 's 'S", "rock'n'roll",
    "ſ'ſ", "Hello, world! How are you?", "...", "?!?!", "a.b,c;d:e", "(parens) [brackets] {braces} <angles>",
    "#hashtag @mention $dollar %percent ^caret &amp *star", "~`|\\/", "__init__", "--flag=value", "e.g.",
    "é", "e\u0301", "café", "cafe\u0301", "Å", "A\u030a", "\u212b", "\u1e9b\u0323", "a\u0323\u0302", "a\u0302\u0323",
    "\u1ec7", "e\u0323\u0302", "\u1100\u1161\u11a8", "\uac00\u11a8", "\u0344", "\u0958", "\u2126", "\u00c5\u0301",
    "ñ vs n\u0303", "Ω ω", "ﬁ ﬂ", "Ｆｕｌｌｗｉｄｔｈ", "İstanbul", "ǅ ǈ",
    "中文", "日本語のテキスト", "한국어 텍스트", "漢字かなカナ混じり文", "繁體中文測試", "𠀀𠀁𠀂",
    "😀", "😀😃😄", "👍🏽", "👨‍👩‍👧‍👦", "🇺🇸🇫🇷", "emoji 🤗 in text", "🤗🤗🤗🤗", "\U0001f600 and \U0001f9d1\u200d\U0001f4bb",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝟘𝟙𝟚", "\U00010348\U00010349", "\ufffd", "a\ufffdb", "\ue000\uf8ff", "\U000e0001",
    "<s>", "</s>", "<unk>", "<s> hello </s>", "a<s>b</s>c", "<<s>>", "<s<s>>", "< s >", "<s>\n", " <s>",
    "<|begin_of_text|>", "<|end_of_text|>", "<|begin_of_text|>Hello", "x<|end_of_text|>y", "<|reserved_special_token_5|>",
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|im_start", "im_start|>", "<think>", "</think>",
    "<think></think>", "<|im_start|><|im_end|>", "<|vision_pad|><|image_pad|>",
    "a" * 300, "ab" * 200, "supercalifragilisticexpialidocious", "Pneumonoultramicroscopicsilicovolcanoconiosis",
    "x" * 1000 + " y", "1" * 100, " " * 50, "\n" * 20, "\t" * 10 + "x", "-" * 80, "=" * 40, "." * 64,
    "https://example.com/a/b?c=d&e=f#g", "user@example.org", "C:\\Program Files\\miniseq\\bin",
    "x" + " " * 7 + "y", "a \n b", " \t \n ", "\n \n", "end with newline\n", "  \n\n  \n",
    "▁", "▁▁", "a▁b", "▁hello", "hello▁", "Ġ", "Ċ", "ĠĠhello",
]


def random_strings(n, seed=1234):
    """Random mixtures of the hard character classes (seeded; the same every run)."""
    rng = random.Random(seed)
    alphabet = list("abcXYZ019 '\t\n.,!?-_") + ["é", "e\u0301", "中", "😀", "\u00a0", "▁", "<s>", "<|im_end|>",
                                                "\u3000", "ſ", "Ω", "👍🏽", "\r\n", "  "]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(n)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "tokenizers"))
    args = ap.parse_args()

    import tokenizers
    corpus = TRICKY + DOCUMENTS + random_strings(200)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "corpus.json"), "w", encoding="utf-8") as f:
        json.dump(corpus, f, ensure_ascii=True, indent=0)
        f.write("\n")
    print(f"corpus: {len(corpus)} strings")

    try:
        import transformers
    except ImportError:
        transformers = None
    for name in VOCABS:
        d = os.path.join(args.data, name)
        tk = tokenizers.Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        ids = [tk.encode(s, add_special_tokens=True).ids for s in corpus]
        ids_plain = [tk.encode(s, add_special_tokens=False).ids for s in corpus]
        decoded = [tk.decode(i, skip_special_tokens=False) for i in ids]
        decoded_skip = [tk.decode(i, skip_special_tokens=True) for i in ids]
        record = {
            "source": f"tokenizers {tokenizers.__version__}, Tokenizer.from_file({name}/tokenizer.json)",
            "vocabulary": name,
            "ids": ids,
            "ids_no_special": ids_plain,
            "decoded": decoded,
            "decoded_skip_special": decoded_skip,
        }
        if transformers is not None:
            at = transformers.AutoTokenizer.from_pretrained(d)
            hf_ids = [at(s)["input_ids"] for s in corpus]
            diff = [i for i in range(len(corpus)) if hf_ids[i] != ids[i]]
            record["transformers_check"] = (f"transformers {transformers.__version__} AutoTokenizer: "
                                            f"{len(corpus) - len(diff)}/{len(corpus)} identical")
            if diff:
                record["transformers_ids_where_different"] = {str(i): hf_ids[i] for i in diff}
            print(f"{name}: {record['transformers_check']}")
        with open(os.path.join(OUT, f"reference_{name}.json"), "w", encoding="utf-8") as f:
            json.dump(record, f, ensure_ascii=True, separators=(",", ":"))
            f.write("\n")
        n_tok = sum(len(i) for i in ids)
        print(f"{name}: {len(corpus)} strings, {n_tok} tokens -> reference_{name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
