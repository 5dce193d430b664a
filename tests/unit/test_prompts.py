"""Prompt rendering and templates (no engine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from labelprob.server.errors import InvalidArgument
from labelprob.server.prompts import (
    BUILTIN_TEMPLATES,
    CHAT_TEMPLATE,
    PLAIN_TEMPLATE,
    ExampleSpec,
    LabelSpec,
    load_templates,
    render_prompt,
    render_prompt_parts,
)

LABELS = [LabelSpec("positive", "the writer likes it"), LabelSpec("negative")]


def fake_chat(messages: list[dict[str, str]]) -> str:
    body = "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages)
    return body + "<|assistant|>"


def test_shared_parts_come_before_the_text() -> None:
    parts = render_prompt_parts(PLAIN_TEMPLATE, "Rate it.", LABELS, [], None)
    assert "Rate it." in parts.prefix
    assert "- positive: the writer likes it" in parts.prefix
    assert "- negative" in parts.prefix
    assert parts.prefix.endswith("Text: ")
    assert parts.suffix.endswith("Label:")
    assert parts.label_lead == " "
    assert parts.add_special_tokens
    prompt = render_prompt(parts, "great film")
    assert prompt.index("positive") < prompt.index("great film") < prompt.index("Label:")


def test_chat_template_opens_the_assistant_turn() -> None:
    examples = [ExampleSpec("I loved it", "positive")]
    parts = render_prompt_parts(CHAT_TEMPLATE, "", LABELS, examples, fake_chat)
    # The model's own system prompt (no system message); the labels on one line.
    assert parts.prefix.startswith(
        "<|user|>Classify the text into one of these labels: "
        "positive (the writer likes it), negative.\nAnswer with the label only.\n\n"
    )
    assert "Text: I loved it\nLabel: positive" in parts.prefix
    # The assistant turn is opened with the answer cue; labels follow after a space.
    assert parts.suffix == "<|end|><|assistant|>Label:"
    assert parts.label_lead == " "
    assert not parts.add_special_tokens


def test_a_callers_instruction_keeps_the_label_list() -> None:
    parts = render_prompt_parts(CHAT_TEMPLATE, "Rate the review.", LABELS, [], fake_chat)
    assert parts.prefix.startswith(
        "<|user|>Rate the review.\nClassify the text into one of these labels: "
        "positive (the writer likes it), negative.\n"
    )
    # A template whose task lists the labels itself takes the caller's instruction alone.
    listed = render_prompt_parts(BUILTIN_TEMPLATES["listed"], "Rate it.", LABELS, [], fake_chat)
    assert "<|user|>Rate it.\n\nLabels:\n- positive: the writer likes it\n- negative" in (
        listed.prefix
    )
    assert listed.prefix.startswith("<|system|>You are a text classifier.")


def test_chat_style_falls_back_to_plain_without_a_chat_template() -> None:
    parts = render_prompt_parts(CHAT_TEMPLATE, "", LABELS, [], None)
    assert "<|" not in parts.prefix
    assert parts.add_special_tokens


def test_templates_file_adds_named_templates(tmp_path: Path) -> None:
    path = tmp_path / "templates.toml"
    path.write_text(
        '[terse]\nextends = "plain"\ntask = "{labels}\\n"\ntext = "{text}"\n'
        'question = "\\n"\nanswer_prefix = "=>"\n'
    )
    templates = load_templates(path)
    assert {"chat", "plain", "terse"} <= set(templates)
    parts = render_prompt_parts(templates["terse"], "", LABELS, [], None)
    assert parts.prefix == "- positive: the writer likes it\n- negative\n"
    assert parts.suffix == "\n=>"


def test_templates_file_rejects_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[oops]\nprompt = "x"\n')
    with pytest.raises(ValueError, match="unknown keys"):
        load_templates(path)


def test_template_without_text_is_rejected() -> None:
    from dataclasses import replace

    broken = replace(PLAIN_TEMPLATE, text="no text here")
    with pytest.raises(InvalidArgument) as err:
        render_prompt_parts(broken, "", LABELS, [], None)
    assert err.value.field == "options.template"
