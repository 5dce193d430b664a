"""A tiny random-weight Llama and a BPE tokenizer trained in-process: a fast, exact test model."""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "The movie was wonderful and the acting was great.",
    "A dull, boring film with a terrible plot.",
    "Stocks fell as the central bank raised interest rates.",
    "The team won the championship after a late goal.",
    "Set an alarm for seven in the morning.",
    "What is the weather like in Paris today?",
    "Play some jazz music in the kitchen.",
    "Remove the meeting from my calendar on Friday.",
    "positive negative neutral business entertainment politics sports tech",
    "alarm_set alarm_query alarm_remove calendar_set calendar_query calendar_remove",
    "play_music play_radio play_podcasts weather_query email_sendemail email_query",
    "Classify the text into exactly one of the labels.",
    "Labels: Text: Label: Answer with the label only.",
    "yes no maybe true false unknown other none of these",
]
SPECIAL_TOKENS = ["<s>", "</s>", "<unk>", "<pad>"]


def build_tokenizer(out_dir: Path, vocab_size: int = 512) -> object:
    """Byte-level BPE trained on a small corpus; saved as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer=trainer)
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )
    fast.save_pretrained(out_dir)
    return fast


def build_tiny_model(out_dir: Path) -> Path:
    """A 2-layer Llama (head_dim 32, as vLLM's CPU attention needs) with random weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(out_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=2048,
        # Larger than the usual 0.02 so next-token distributions are peaked, not flat.
        initializer_range=0.3,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        dtype="float32",
    )
    torch.manual_seed(1234)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir
