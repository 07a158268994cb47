"""Tokenizers built offline for the tiny pipeline.

- CLIP: the real CLIP BPE (49,408 tokens), rebuilt from the `bpe_simple_vocab_16e6.txt.gz` merges file that
  open_clip ships, in the `vocab.json` + `merges.txt` form that `transformers.CLIPTokenizer` reads. The vocabulary
  order follows OpenAI's simple tokenizer: 256 byte symbols, the same with `</w>`, the merges, then the two specials.
- T5: a small unigram vocabulary trained with the `tokenizers` library on a fixed built-in corpus, wrapped as a
  `T5TokenizerFast` (pad 0, eos 1, unk 2, as T5).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

CLIP_VOCAB_SIZE = 49408
_CLIP_MERGES = 49152 - 256 - 2  # merges OpenAI's tokenizer keeps


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    printable = [(ord("!"), ord("~")), (ord("¡"), ord("¬")), (ord("®"), ord("ÿ"))]
    bs = [b for lo, hi in printable for b in range(lo, hi + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def open_clip_bpe_path() -> Path:
    """The merges file shipped inside the open_clip package."""
    import open_clip

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall open_clip_torch (it ships the CLIP BPE merges)")
    return path


def write_clip_tokenizer(out_dir: Path, model_max_length: int = 77) -> None:
    """Write a CLIPTokenizer folder (vocab.json, merges.txt, configs) to `out_dir`."""
    from transformers import CLIPTokenizer

    lines = gzip.open(open_clip_bpe_path()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _CLIP_MERGES + 1]]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == CLIP_VOCAB_SIZE, len(vocab)
    tok = CLIPTokenizer(
        vocab={tok: i for i, tok in enumerate(vocab)},
        merges=merges,
        model_max_length=model_max_length,
        pad_token="<|endoftext|>",
    )
    tok.save_pretrained(out_dir)


# A fixed corpus so the unigram vocabulary is the same on every machine: words of the kind image prompts use.
_T5_CORPUS = """
a photo of a cat sitting on a red chair in a sunny room, highly detailed, 4k
an oil painting of a mountain lake at dawn with mist and pine trees, impressionist style
concept art of a futuristic city with flying cars and neon lights at night, digital art
anime illustration of a girl with blue hair holding an umbrella in the rain
a watercolor painting of a green forest with a small wooden house and a river
portrait of an old man with a white beard, dramatic lighting, photorealistic
a yellow sports car driving on a coastal road under a clear blue sky
a bowl of orange fruit on a black table, still life, soft shadows
a dragon flying over a castle, fantasy, epic, trending on artstation
a purple flower field under a pink sunset, wide angle, vibrant colors
a robot reading a book in a library, cinematic, unreal engine render
a white dog running on the beach, golden hour, bokeh, sharp focus
two brown horses in a snowy field, winter morning, muted palette
a cozy kitchen with copper pots and plants by the window, interior design
a knight in silver armor standing in a dark cave lit by torches
a red circle, a blue square and a green triangle; two orange circles, three yellow squares, four purple triangles
a circle to the left of a square, a square to the right of a triangle, a triangle above a circle below a square
one red square, two blue triangles, three green circles and four orange squares to the left of a yellow circle
""".strip()


def _canonical_ties(vocab: list[tuple[str, float]], gap: float = 2e-4) -> list[tuple[str, float]]:
    """The vocabulary sorted by score, with each near-tie given out in one order.

    The trainer breaks a tie between pieces with small offsets (seen: 'b' and 'q' at -8.167139305 and -8.167239305,
    either way round from one build to the next). A cluster is a run of scores each within `gap` of the next; its
    pieces, sorted by name, take its scores from highest to lowest, so only the set of (piece, score) pairs matters.
    """
    ranked = sorted(vocab, key=lambda v: (-v[1], v[0]))
    out, start = [], 0
    for end in range(1, len(ranked) + 1):
        if end == len(ranked) or ranked[end - 1][1] - ranked[end][1] > gap:
            cluster = ranked[start:end]
            out += zip(sorted(p for p, _ in cluster), [score for _, score in cluster], strict=True)
            start = end
    return out


def write_t5_tokenizer(out_dir: Path, vocab_size: int = 256, model_max_length: int = 512) -> None:
    """Train a small unigram tokenizer on `_T5_CORPUS` and save it as a T5TokenizerFast folder."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import T5TokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", shrinking_factor=0.75
    )
    tok.train_from_iterator(_T5_CORPUS.splitlines(), trainer=trainer)
    # the trainer leaves the last digit of a score (-2.424386574103092 or ...091) and which of two tied pieces gets
    # which tie-break offset to chance: scores rounded, near-ties given out by piece, the special tokens first, so
    # the same folder (and DVC hash) comes out of every build
    spec = json.loads(tok.to_str())
    vocab = [(piece, round(score, 9)) for piece, score in spec["model"]["vocab"]]
    special = vocab[:3]  # <pad> 0, </s> 1, <unk> 2, as T5
    assert [p for p, _ in special] == ["<pad>", "</s>", "<unk>"], special
    spec["model"]["vocab"] = [list(v) for v in special + _canonical_ties(vocab[3:])]
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = T5TokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0,
        model_max_length=model_max_length,
    )
    fast.save_pretrained(out_dir)
