"""Tokenizers and processors for the 2026 edit families, made offline with fixed vocabularies.

The real ones come from a hub; tests and the demo need them built here, byte for byte the same
on every build. The `tokenizers` BPE trainer gives different ids from run to run, so nothing is
trained: the byte-level tokenizers have the 256 byte symbols and the family's special tokens and
no merges (every byte is one token), and the T5 one is a fixed Unigram piece list.

    qwen_tokenizer(dir)        Qwen2/Qwen3 ChatML byte-level BPE (Flux 2 Klein, Qwen-Image-Edit)
    t5_tokenizer(dir)          T5 SentencePiece-style Unigram, `</s>` appended (Flux Kontext)
    QwenVLImageProcessor       Qwen2VLProcessor without its video part (which needs torchvision)
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

# Every special token the Qwen families' pipelines and processors look up by name, in a fixed order:
# their ids are 256.. in this order.
QWEN_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<think>",
    "</think>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# ChatML as Qwen3 writes it: with enable_thinking=False the assistant turn opens with an empty
# think block (what Flux2KleinPipeline's prompt encoding asks for).
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)

# T5's pieces: three specials, the word-start marker, and every printable ASCII character with and
# without it. Unknown characters become <unk>. Ids are list positions.
_T5_SPECIALS = ("<pad>", "</s>", "<unk>")
_ASCII = [chr(c) for c in range(33, 127)]
T5_PIECES = (*_T5_SPECIALS, "\u2581", *_ASCII, *("\u2581" + c for c in _ASCII))


def qwen_tokenizer(directory: Path) -> int:
    """Write a Qwen2-style tokenizer (tokenizer.json, tokenizer_config.json, chat template) into
    `directory`; returns its vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import Qwen2TokenizerFast

    vocab = {symbol: i for i, symbol in enumerate(clip_byte_symbols())}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    # Registered before naming eos/pad, so their ids follow QWEN_SPECIALS' order.
    backend.add_special_tokens(list(QWEN_SPECIALS))
    tok = Qwen2TokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None, bos_token=None
    )
    tok.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIALS)})
    tok.chat_template = CHATML_TEMPLATE
    tok.model_max_length = 32768
    tok.save_pretrained(directory)
    return len(tok)


# Mistral Small 3.x's specials (Flux 2's text encoder), ids 0.. in this order; bytes follow.
MISTRAL_SPECIALS = (
    "<unk>", "<s>", "</s>", "<pad>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[IMG]", "[IMG_BREAK]", "[IMG_END]",
)
# Mistral's [SYSTEM_PROMPT]...[INST]...[/INST] layout, for messages whose content is a string or a
# list of {"type": "text"} parts (what Flux2Pipeline's format_input builds).
MISTRAL_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['content'] is string %}{%- set text = message['content'] %}"
    "{%- else %}{%- set text = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') %}"
    "{%- endif %}"
    "{%- if message['role'] == 'system' %}{{- '[SYSTEM_PROMPT]' + text + '[/SYSTEM_PROMPT]' }}"
    "{%- elif message['role'] == 'user' %}{{- '[INST]' + text + '[/INST]' }}"
    "{%- else %}{{- text + eos_token }}{%- endif %}"
    "{%- endfor %}"
)


def mistral_tokenizer(directory: Path) -> int:
    """Write a Mistral-style byte-level tokenizer with its chat template into `directory` (the part
    of Flux 2's PixtralProcessor its prompt encoding uses); returns the vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(MISTRAL_SPECIALS)}
    vocab.update({symbol: len(MISTRAL_SPECIALS) + i for i, symbol in enumerate(clip_byte_symbols())})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(MISTRAL_SPECIALS))
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    tok.chat_template = MISTRAL_TEMPLATE
    tok.model_max_length = 131072
    tok.save_pretrained(directory)
    return len(vocab)


def t5_tokenizer(directory: Path) -> int:
    """Write a T5 tokenizer (tokenizer.json + config) into `directory`; returns its vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    backend = Tokenizer(models.Unigram([(piece, -1.0) for piece in T5_PIECES], unk_id=_T5_SPECIALS.index("<unk>")))
    backend.normalizer = normalizers.Replace(" ", " ")  # a no-op kept so the saved JSON has T5's shape
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    eos = _T5_SPECIALS.index("</s>")
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos)]
    )
    tok = T5TokenizerFast(tokenizer_object=backend, extra_ids=0, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    tok.model_max_length = 512
    tok.save_pretrained(directory)
    return len(T5_PIECES)


def qwen_vl_processor_class():
    """Qwen2VLProcessor minus the video processor, whose import needs torchvision (never
    installed here: the reachable builds are CUDA ones that break diffusers' imports)."""
    from transformers import Qwen2VLProcessor

    class QwenVLImageProcessor(Qwen2VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    return QwenVLImageProcessor


def load_qwen_vl_processor(processor_dir: Path, tokenizer):
    """The processor Qwen-Image-Edit pipelines call, from a folder's preprocessor_config.json and an
    already loaded tokenizer (a hub repo's processor/ also holds video configs we do not read)."""
    from transformers import Qwen2VLImageProcessorPil

    image_processor = Qwen2VLImageProcessorPil.from_pretrained(processor_dir, local_files_only=True)
    return qwen_vl_processor_class()(image_processor=image_processor, tokenizer=tokenizer)


# --- CLIP's tokenizer (the SD family and Kontext): a byte-level BPE trained here ----------------

# The tokenizer's training text: prompt-like words, so common prompt words are single tokens and
# anything else still encodes (byte-level fallback). Fixed forever: changing it changes every hash.
_CORPUS = """
a photo of a cat sitting on a red chair, highly detailed, studio lighting, sharp focus
a portrait of a woman with long hair, oil painting, soft light, trending on artstation
a cup of coffee on a wooden table in the morning sun, shallow depth of field, bokeh
a dog running on the beach at sunset, golden hour, cinematic, 4k, photorealistic
a landscape with mountains and a lake, clouds in the blue sky, wide angle, dramatic
an old house in the forest, fog, autumn leaves, moody atmosphere, film grain
a city street at night with neon lights and rain, reflections, cyberpunk style
a bowl of fruit, apples oranges and grapes, still life, watercolor, pastel colors
a man wearing a hat and a coat, black and white photograph, high contrast
a small boat on the ocean, waves, storm, dark sky, lightning, epic scene
make it look like winter, add snow, turn the sky orange, remove the person
replace the background with a garden full of flowers, make the cat a tiger
blurry, low quality, jpeg artifacts, watermark, text, bad anatomy, deformed, ugly
a castle on a hill, fantasy art, digital painting, concept art, illustration
a bird on a branch, spring, green leaves, macro photography, natural light
a car on a road in the desert, dust, vintage, retro, warm tones, kodak film
a bright kitchen interior, white walls, plants, minimal, clean, modern design
a child reading a book by the window, cozy, warm light, soft shadows, calm
a close up of an eye, blue iris, extreme detail, reflection, hyperrealistic
a painting in the style of van gogh, starry night, swirling brush strokes
a robot in a field of flowers, anime style, vibrant colors, happy, cute
a snowy village with lights in the windows, christmas, evening, quiet, peaceful
"""

_SPECIALS = ("<|startoftext|>", "<|endoftext|>")
_TOKENIZER_MERGES = 800  # a cap; the corpus runs out of pairs first (every word one token)


def write_tokenizer(directory: Path, pad: str = "<|endoftext|>") -> int:
    """Train a CLIP-style byte-level BPE on _CORPUS and write vocab.json + merges.txt (+ configs).

    The vocabulary is laid out as CLIP's is: 256 byte symbols, the same with the "</w>" end-of-word
    suffix, one token per merge in merge order, then the two specials. Returns the vocabulary size.
    """
    from tokenizers import Regex, normalizers, pre_tokenizers

    # 1. CLIP's normalizer and pre-tokenizer (as transformers' CLIPTokenizer sets them up).
    normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                behavior="removed",
                invert=True,
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    # 2. Learn merges. The library's BpeTrainer breaks ties between equally frequent pairs in a
    # hash order that differs between processes, so the merge loop is ours: most frequent pair
    # first, ties by the pair's text, which makes the files byte-identical on every build.
    words: Counter[tuple[str, ...]] = Counter()
    for line in _CORPUS.splitlines():
        for piece, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line)):
            words[(*piece[:-1], piece[-1] + "</w>")] += 1
    merges = _learn_merges(words, _TOKENIZER_MERGES)

    # 3. Rebuild the vocabulary in CLIP's order from the merges.
    symbols = clip_byte_symbols()
    # Two merges can spell the same token ("t he</w>", "th e</w>"): it gets one id.
    tokens = dict.fromkeys([*symbols, *(s + "</w>" for s in symbols), *(a + b for a, b in merges), *_SPECIALS])
    vocab = {token: i for i, token in enumerate(tokens)}

    # 4. Write the files a CLIP tokenizer folder on a hub holds.
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    merges_text = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    (directory / "merges.txt").write_text(merges_text, encoding="utf-8")
    write_clip_tokenizer_config(directory, pad)
    return len(vocab)


def write_clip_tokenizer_config(directory: Path, pad: str) -> None:
    """tokenizer_config.json + special_tokens_map.json of a CLIP tokenizer folder padding with
    `pad` (SD's CLIP pads with <|endoftext|>, SDXL's OpenCLIP second tokenizer with "!"): for the
    tiny models' trained tokenizer and the shipped single-file configs alike."""
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": pad}
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True, "clean_up_tokenization_spaces": True}
    write_json(directory / "tokenizer_config.json", {**config, **special})
    write_json(directory / "special_tokens_map.json", special)


def _learn_merges(words: Counter[tuple[str, ...]], limit: int) -> list[tuple[str, str]]:
    """Classic BPE training on word counts: repeatedly merge the most frequent adjacent pair
    (ties go to the smallest pair text) until every word is one token or `limit` merges."""
    merges: list[tuple[str, str]] = []
    while len(merges) < limit:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, n in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        joined = best[0] + best[1]
        merged: Counter[tuple[str, ...]] = Counter()
        for word, n in words.items():
            out: list[str] = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
    return merges


def clip_byte_symbols() -> list[str]:
    """CLIP's printable stand-ins for the 256 bytes (GPT-2's bytes_to_unicode), in CLIP's
    vocabulary order: the printable bytes first, then the rest mapped above U+0100."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(rest))]


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
