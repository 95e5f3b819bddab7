"""A tiny, randomly initialised GPT-2 saved like a hub model: GPT-2's architecture and hook names, booted in seconds."""

from __future__ import annotations

from pathlib import Path

TRAINING_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024",
    "def main():\n    print('hello world')",
    "Numbers like 3.14 and 2.718 are constants; lists: a, b, c, d.",
    "What is the capital of France? Paris is the capital.",
    "Le chat dort. Der Hund bellt. El perro come.",
] * 20


def build_tiny_gpt2(folder: Path, seed: int = 0, **shape: int) -> Path:
    """Write config.json, model.safetensors and the tokenizer of a 2-layer GPT-2 into folder.

    `shape` overrides GPT2Config fields (n_layer, n_embd, n_head, n_inner, ...): GPU checks build
    a GPT-2-small-shaped model this way, with random weights and this small tokenizer.
    """
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(TRAINING_TEXT, vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>"])
    tokenizer = GPT2TokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    settings = dict(n_layer=2, n_embd=64, n_head=4, n_positions=128, vocab_size=len(tokenizer))
    settings.update(shape)
    config = GPT2Config(**settings, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def build_tiny_embedder(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised 2-layer BERT sentence-transformer saved in folder (for --embedder)."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    pieces = BertWordPieceTokenizer()
    pieces.train_from_iterator(TRAINING_TEXT, vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=pieces._tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )
    body = folder / "body"
    tokenizer.save_pretrained(body)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    BertModel(config).save_pretrained(body)
    transformer = models.Transformer(str(body))
    pooling = models.Pooling(config.hidden_size, "mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(folder))
    return folder
