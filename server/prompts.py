"""Prompt rendering: instruction, labels and examples first (shared, prefix-cached), then the text.

A rendered prompt is three strings: ``prefix + text + suffix``. The prefix holds
everything shared between requests of one task, so vLLM's prefix cache serves
it; the suffix closes the text and opens the answer, and the label tokens are
read as its continuation. Nothing here imports vLLM or grpc.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

from labelprob.server.errors import InvalidArgument

# Mark where the text and a label go while a chat template renders; never in real input.
TEXT_SENTINEL = "\u2063LABELPROB_TEXT\u2063"
LABEL_SENTINEL = "\u2063LABELPROB_LABEL\u2063"

DEFAULT_INSTRUCTION = "Classify the text into exactly one of the labels."

ChatRenderer = Callable[[list[dict[str, str]]], str]
"""Renders chat messages with the model's template, assistant turn opened."""


@dataclass(frozen=True)
class LabelSpec:
    name: str
    description: str = ""


@dataclass(frozen=True)
class ExampleSpec:
    text: str
    label: str


@dataclass(frozen=True)
class Template:
    """A named prompt layout. Placeholders: {instruction} {labels} {examples} {text}."""

    name: str
    # "chat": the model's chat template (falls back to "plain" for models without one).
    style: str = "chat"
    # A system message (chat style); empty keeps the model's own default.
    system: str = (
        "You are a text classifier. You reply with exactly one label from the given list "
        "and nothing else."
    )
    # Everything before the text; shared by all texts of a task.
    task: str = "{instruction}\n\nLabels:\n{labels}\n\n{examples}"
    text: str = "Text: {text}"
    # After the text: restates the question next to where the answer starts.
    question: str = "\n\nAnswer with the label only."
    # Opens the answer; the label follows it. In the assistant turn too: an explicit
    # "Label:" cue makes chat models put their probability on the labels instead of
    # on a sentence opener ("The", "This"), which raises label mass several-fold.
    answer_prefix: str = "Label:"
    # Put between the answer prefix and the label's own text.
    label_lead: str = " "
    label_line: str = "- {name}"
    label_line_described: str = "- {name}: {description}"
    # Joins the label lines in the list.
    label_separator: str = "\n"
    # "words": a label named like an identifier (alarm_set, playMusic) is shown and read as
    # words ("alarm set", "play music"); the result still carries the name as sent.
    label_wording: str = "words"
    # The instruction when the request has none; "{labels}" is the label list.
    default_instruction: str = DEFAULT_INSTRUCTION
    examples_header: str = "Examples:\n"
    example: str = "Text: {text}\nLabel: {label}\n\n"
    # Multi-label: the text first (shared by every label's read), then one question a label.
    multi_label_task: str = "{instruction}\n\nText: {text}\n\n"
    multi_label_question: str = 'Does the label "{label}" apply to the text? Answer Yes or No.'
    multi_label_described: str = "{name} ({description})"
    multi_label_answer_prefix: str = "Answer:"
    yes_answers: tuple[str, ...] = (" Yes", " yes")
    no_answers: tuple[str, ...] = (" No", " no")
    # Noisy channel: the text is scored as the model's answer to this request, once per label
    # (P(text | label)). Rendered as a user message with the model's own system prompt.
    channel_request: str = "Write a text that is {name}."
    channel_request_described: str = "Write a text that is {name} ({description})."


def label_words(name: str) -> str:
    """An identifier-like label as words: ``alarm_set`` -> ``alarm set``, ``playMusic`` ->
    ``play music``. Other names come back unchanged."""
    camel = r"(?<=[a-z0-9])(?=[A-Z][a-z])"
    if " " in name or not (re.search(r"[_\-]", name) or re.search(camel, name)):
        return name
    return re.sub(r"[_\-]+", " ", re.sub(camel, " ", name)).strip().lower()


def shown_labels(template: Template, labels: Sequence[LabelSpec]) -> tuple[LabelSpec, ...]:
    """The labels as the prompt shows and the model reads them (see ``label_wording``).

    Names stay as sent when wording them would make two labels read alike.
    """
    if template.label_wording != "words":
        return tuple(labels)
    worded = tuple(LabelSpec(label_words(lb.name), lb.description) for lb in labels)
    if len({lb.name for lb in worded}) != len(worded):
        return tuple(labels)
    return worded


# The prompt a plain vLLM user writes: one user message, labels joined by ", ", the answer
# read at the very start of the assistant turn, the model's own system prompt. Kept as the
# reference that `labelprob eval` compares the defaults with.
MINIMAL_TEMPLATE = Template(
    name="minimal",
    system="",
    default_instruction="Classify the text into one of these labels: {labels}.",
    task="{instruction}\nAnswer with the label only.\n\n{examples}",
    text="Text: {text}",
    question="",
    answer_prefix="",
    label_lead="",
    label_line="{name}",
    label_line_described="{name} ({description})",
    label_separator=", ",
    label_wording="as_is",
)
PLAIN_TEMPLATE = Template(
    name="plain",
    style="plain",
    system="",
    task="{instruction}\n\nLabels:\n{labels}\n\n{examples}",
    text="Text: {text}",
    question="\n",
    answer_prefix="Label:",
    label_lead=" ",
)
# The default: the peer's prompt, with the answer opened by "Label:" and identifier-like
# labels read as words. Chosen over the listed layout below by the selection scan's layouts
# (README, Accuracy), on two models.
CHAT_TEMPLATE = replace(
    MINIMAL_TEMPLATE, name="chat", answer_prefix="Label:", label_lead=" ", label_wording="words"
)
# The earlier default: labelprob's system message, the labels as a list, the question
# restated after the text.
LISTED_TEMPLATE = Template(name="listed")
BUILTIN_TEMPLATES = {
    t.name: t for t in (CHAT_TEMPLATE, LISTED_TEMPLATE, PLAIN_TEMPLATE, MINIMAL_TEMPLATE)
}
DEFAULT_TEMPLATE = "chat"


@dataclass(frozen=True)
class PromptParts:
    """A task's prompt around its text: the label tokens continue ``suffix``."""

    prefix: str
    suffix: str
    label_lead: str
    # Whether the tokenizer should add its BOS token (plain prompts; chat templates add their own).
    add_special_tokens: bool


def load_templates(path: Path | None) -> dict[str, Template]:
    """Built-in templates plus those of a TOML file (one table per template name)."""
    templates = dict(BUILTIN_TEMPLATES)
    if path is None:
        return templates
    data = tomllib.loads(path.read_text())
    known = {f.name for f in fields(Template)}
    for name, table in data.items():
        if not isinstance(table, dict):
            raise ValueError(f"{path}: [{name}] must be a table")
        table = dict(table)
        base_name = table.pop("extends", DEFAULT_TEMPLATE)
        unknown = set(table) - known
        if unknown:
            raise ValueError(f"{path}: [{name}] has unknown keys {sorted(unknown)}")
        if base_name not in templates:
            raise ValueError(f"{path}: [{name}] extends unknown template {base_name!r}")
        base = templates[base_name]
        merged = {f.name: getattr(base, f.name) for f in fields(Template)} | table | {"name": name}
        templates[name] = Template(**merged)
    return templates


def render_label_list(template: Template, labels: Sequence[LabelSpec]) -> str:
    lines = [
        template.label_line_described.format(name=lb.name, description=lb.description)
        if lb.description
        else template.label_line.format(name=lb.name)
        for lb in labels
    ]
    return template.label_separator.join(lines)


def render_examples(template: Template, examples: Sequence[ExampleSpec]) -> str:
    if not examples:
        return ""
    body = "".join(template.example.format(text=ex.text, label=ex.label) for ex in examples)
    return template.examples_header + body


def render_user_message(
    template: Template,
    instruction: str,
    labels: Sequence[LabelSpec],
    examples: Sequence[ExampleSpec],
    text: str,
) -> str:
    label_list = render_label_list(template, labels)
    own = template.default_instruction.format(labels=label_list)
    if (
        instruction
        and "{labels}" not in template.task
        and "{labels}" in template.default_instruction
    ):
        # Only the template's own instruction lists the labels: it follows the caller's.
        instruction = f"{instruction}\n{own}"
    task = template.task.format(
        # Only the template's own instruction is a format string; a caller's is taken as is.
        instruction=instruction or own,
        labels=label_list,
        examples=render_examples(template, examples),
    )
    return task + template.text.format(text=text) + template.question


def render_turn(
    template: Template,
    user: str,
    plain_separator: str,
    answer_prefix: str,
    chat: ChatRenderer | None,
) -> tuple[str, bool]:
    """The user message and the opened answer, through the chat template when there is one.

    Returns the text and whether the tokenizer should add its BOS token (chat templates
    write their own special tokens).
    """
    if template.style == "chat" and chat is not None:
        messages = [{"role": "system", "content": template.system}] if template.system else []
        messages.append({"role": "user", "content": user})
        return chat(messages) + answer_prefix, False
    return user + plain_separator + answer_prefix, True


def render_prompt_parts(
    template: Template,
    instruction: str,
    labels: Sequence[LabelSpec],
    examples: Sequence[ExampleSpec],
    chat: ChatRenderer | None,
) -> PromptParts:
    """Renders the task around a text sentinel and splits it into prefix and suffix."""
    user = render_user_message(template, instruction, labels, examples, TEXT_SENTINEL)
    rendered, add_special_tokens = render_turn(template, user, "", template.answer_prefix, chat)
    prefix, found, suffix = rendered.partition(TEXT_SENTINEL)
    if not found or TEXT_SENTINEL in suffix:
        raise InvalidArgument(
            "options.template", f"template {template.name!r} must show the text once"
        )
    return PromptParts(prefix, suffix, template.label_lead, add_special_tokens)


DEFAULT_MULTI_LABEL_INSTRUCTION = "Decide whether a label applies to the text."


@dataclass(frozen=True)
class MultiLabelParts:
    """``head + text + middle + label + tail``; yes/no answers continue ``tail``."""

    head: str
    middle: str
    tail: str
    add_special_tokens: bool


def render_multi_label_parts(
    template: Template, instruction: str, chat: ChatRenderer | None
) -> MultiLabelParts:
    """Renders the yes/no prompt around text and label sentinels and splits it."""
    user = template.multi_label_task.format(
        instruction=instruction or DEFAULT_MULTI_LABEL_INSTRUCTION, text=TEXT_SENTINEL
    ) + template.multi_label_question.format(label=LABEL_SENTINEL)
    rendered, add_special_tokens = render_turn(
        template, user, "\n", template.multi_label_answer_prefix, chat
    )
    head, found_text, rest = rendered.partition(TEXT_SENTINEL)
    middle, found_label, tail = rest.partition(LABEL_SENTINEL)
    if not (found_text and found_label):
        raise InvalidArgument(
            "options.template", f"template {template.name!r} must show the text before the label"
        )
    return MultiLabelParts(head, middle, tail, add_special_tokens)


def multi_label_phrase(template: Template, label: LabelSpec) -> str:
    if label.description:
        return template.multi_label_described.format(name=label.name, description=label.description)
    return label.name


def render_prompt(parts: PromptParts, text: str) -> str:
    """The whole prompt as one string (for logs, tests and the oracle)."""
    return parts.prefix + text + parts.suffix


def render_channel_head(
    template: Template, label: LabelSpec, chat: ChatRenderer | None
) -> tuple[str, bool]:
    """What comes before the text when it is scored as the answer to a request for ``label``
    (noisy channel); and whether the tokenizer should add its BOS token."""
    if label.description:
        request = template.channel_request_described.format(
            name=label.name, description=label.description
        )
    else:
        request = template.channel_request.format(name=label.name)
    if template.style == "chat" and chat is not None:
        return chat([{"role": "user", "content": request}]), False
    return request + "\n", True
