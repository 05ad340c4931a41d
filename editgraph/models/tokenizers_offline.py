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

from pathlib import Path

from editgraph.models.tiny import clip_byte_symbols

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
