"""Trains fovea-tiny's CLIP-style BPE tokenizer on the dataset's captions.

The tokenizer is CLIP's design with a small vocabulary learned from our English and
Chinese captions: NFC, whitespace folding and lowercasing; CLIP's split regex (a run of
letters, which includes a run of Chinese characters, is one word); byte-level BPE with a
`</w>` end-of-word suffix; `<|startoftext|>` / `<|endoftext|>` as the last two ids and
`<|endoftext|>` also as pad and unknown token (SD 1.x convention). The vocabulary is laid
out as CLIP's is: the 256 byte symbols, the same with `</w>`, one token per merge in merge
order, then the two special tokens. Any text therefore encodes (unseen characters fall
back to bytes).

Writes tokenizer.json, vocab.json, merges.txt, tokenizer_config.json and
special_tokens_map.json to --out (default models/training/tokenizer/), then checks that
transformers' CLIPTokenizer loaded from vocab+merges and from tokenizer.json give the same
ids on every caption sampled.

    python train_tokenizer.py --data ~/.cache/fovea-data/data
"""

import argparse
import json
import os
import re

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
CLIP_SPLIT = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
MAX_LEN = 77
# CJK ideographs (basic, extension A, compatibility).
HAN = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])")


def byte_symbols():
    """The 256 printable stand-ins byte-level BPE uses for bytes, in CLIP's vocabulary order:
    the printable Latin-1 bytes map to themselves, the rest to code points from 256 up."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    order = list(printable)
    chars = [chr(b) for b in printable]
    extra = 0
    for b in range(256):
        if b not in printable:
            order.append(b)
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def base_by_byte():
    """byte_symbols() indexed by byte value."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    order = printable + [b for b in range(256) if b not in printable]
    sym = byte_symbols()
    out = [None] * 256
    for b, s in zip(order, sym):
        out[b] = s
    return out


def pipeline(tok):
    """Attaches CLIP's normalizer, pre-tokenizer, post-processor and decoder."""
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def read_captions(data_dir, limit=None):
    caps = []
    with open(os.path.join(data_dir, "labels.jsonl"), encoding="utf-8") as f:
        for k, line in enumerate(f):
            if limit and k >= limit:
                break
            rec = json.loads(line)
            caps.extend(rec["en"] + rec["zh"])
    return caps


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.expanduser("~/.cache/fovea-data/data"))
    ap.add_argument("--out", default=os.path.join(HERE, "tokenizer"))
    ap.add_argument("--vocab-size", type=int, default=4096,
                    help="upper bound, special tokens included (the corpus usually needs fewer)")
    ap.add_argument("--min-frequency", type=int, default=2)
    a = ap.parse_args()

    caps = read_captions(a.data)
    print(f"{len(caps)} captions")

    # 1. Learn merges. The trainer's own vocabulary is discarded: only the merge list
    #    (deterministic for a given corpus) is kept and the vocabulary is rebuilt below.
    base = byte_symbols()
    trainer_tok = pipeline(Tokenizer(models.BPE(end_of_word_suffix="</w>", continuing_subword_prefix="")))
    trainer = trainers.BpeTrainer(
        vocab_size=a.vocab_size,
        min_frequency=a.min_frequency,
        special_tokens=[],
        initial_alphabet=base,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    # Merges for the non-Chinese text are learned by the trainer. Chinese is handled
    # character by character instead (below): a run of Chinese is one CLIP "word", so a
    # learned merge would glue template fragments such as "背景上左上角的一" into one
    # token, which hides the words of a new combination from the text encoder.
    trainer_tok.train_from_iterator((HAN.sub(" ", c) for c in caps), trainer=trainer)
    learned = json.loads(trainer_tok.to_str())["model"]["merges"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned]

    # Chinese: every character in the captions becomes one token, in the middle of a run
    # and at its end (with </w>): merges byte1+byte2, then +byte3 and +byte3</w>. Characters
    # go in order of frequency (ties by code point), before the learned merges.
    counts = {}
    for c in caps:
        for ch in HAN.findall(c):
            counts[ch] = counts.get(ch, 0) + 1
    to_sym = dict(zip(range(256), base_by_byte()))
    han_merges = []
    for ch in sorted(counts, key=lambda ch: (-counts[ch], ch)):
        b = [to_sym[x] for x in ch.encode("utf-8")]
        for k in range(1, len(b)):
            han_merges.append(("".join(b[:k]), b[k]))
        han_merges.append(("".join(b[:-1]), b[-1] + "</w>"))
    print(f"{len(counts)} distinct Chinese characters, {len(merges)} learned merges")
    merges = han_merges + merges

    # 2. CLIP layout: bytes, bytes + </w>, merges in order, then the specials.
    vocab = {}
    for s in base + [c + "</w>" for c in base]:
        vocab[s] = len(vocab)
    kept = []
    for l, r in merges:
        if l not in vocab or r not in vocab:
            continue  # cannot happen for a BPE trainer, but never write a dangling merge
        if l + r in vocab:
            continue  # e.g. a shared first-two-bytes prefix of several characters
        vocab[l + r] = len(vocab)
        kept.append((l, r))
        if len(vocab) == a.vocab_size - 2:
            print("warning: vocabulary cap reached; later merges dropped")
            break
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    print(f"vocab {len(vocab)} ({len(kept)} merges)")

    tok = pipeline(Tokenizer(models.BPE(vocab=vocab, merges=kept, unk_token=EOS, fuse_unk=False,
                                        end_of_word_suffix="</w>", continuing_subword_prefix="",
                                        dropout=None)))
    tok.add_special_tokens([BOS, EOS])
    tok.post_processor = processors.RobertaProcessing(
        (EOS, vocab[EOS]), (BOS, vocab[BOS]), trim_offsets=False, add_prefix_space=False)

    os.makedirs(a.out, exist_ok=True)
    tok.save(os.path.join(a.out, "tokenizer.json"))
    with open(os.path.join(a.out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(a.out, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for l, r in kept:
            f.write(f"{l} {r}\n")
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS}
    with open(os.path.join(a.out, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=1)
    with open(os.path.join(a.out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "CLIPTokenizer", "model_max_length": MAX_LEN,
                   "do_lower_case": True, "add_prefix_space": False, **special}, f, indent=1)

    # 3. Check with transformers, both ways of loading, on a sample of captions.
    from transformers import CLIPTokenizer
    import shutil
    import tempfile
    sample = caps[:: max(1, len(caps) // 4000)] + [
        "a red apple on a striped blue background", "蓝色条纹背景上左上角的一个红色小苹果",
        "Highly DETAILED, 4k, an OWL!", "日本語のテキスト and émoji 🍎", ""]
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(a.out, name), tmp)
        from_vm = CLIPTokenizer.from_pretrained(tmp)
    from_json = CLIPTokenizer.from_pretrained(a.out)
    lengths = []
    for s in sample:
        x = from_vm(s, padding="max_length", max_length=MAX_LEN, truncation=True).input_ids
        y = from_json(s, padding="max_length", max_length=MAX_LEN, truncation=True).input_ids
        z = [vocab[BOS]] + tok.encode(s, add_special_tokens=False).ids[: MAX_LEN - 2] + [vocab[EOS]]
        z += [vocab[EOS]] * (MAX_LEN - len(z))
        assert x == y == z, (s, x, y, z)
        lengths.append(len(tok.encode(s, add_special_tokens=False).ids) + 2)
    lengths.sort()
    print(f"checked {len(sample)} captions: vocab.json+merges.txt == tokenizer.json == tokenizers; "
          f"tokens per caption median {lengths[len(lengths) // 2]}, max {lengths[-1]} (limit {MAX_LEN})")
    for s in sample[-5:-1]:
        print(" ", s, "->", from_json.tokenize(s))
    print("wrote", a.out)


if __name__ == "__main__":
    main()
