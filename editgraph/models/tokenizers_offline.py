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
