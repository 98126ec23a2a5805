"""The one place that builds prompts and responses, as text and as token ids.

factual prompt x_h:        instruction + history block + response marker
counterfactual prompt x_0: the same without the history block ("remove", the reference's
                           no-input Alpaca template) or with a placeholder instead of the titles
response y:                the quoted target title followed by EOS, identical after both prompts

Token ids of prompt and response are produced by tokenising each separately and concatenating,
so the response positions are known exactly for any tokenizer (no marker counting).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from .errors import CftrecError

COUNTERFACTUAL_STYLES = ("remove", "placeholder")


@dataclass(frozen=True)
class PromptTemplate:
    """Text templates. `chat=True` wraps the user text in the tokenizer's chat template."""

    name: str = "alpaca"
    instruction: str = (
        "Given a list of items the user has interacted with in order, please recommend a new "
        "item that the user likes to the user."
    )
    with_input: str = (
        "Below is an instruction that describes a task, paired with an input that provides "
        "further context. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Input:\n{history}\n\n### Response:\n"
    )
    without_input: str = (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
    )
    history_intro: str = "The user has interacted with the following items in order: "
    placeholder: str = "Unknown"
    chat: bool = False

    def history_block(self, titles: Sequence[str]) -> str:
        return self.history_intro + ", ".join(f'"{title}"' for title in titles)

    def factual_prompt(self, history_titles: Sequence[str]) -> str:
        """The prompt with the user's history; an empty history gives the counterfactual one."""
        if not history_titles:
            return self.counterfactual_prompt("remove")
        return self.with_input.format(
            instruction=self.instruction, history=self.history_block(history_titles)
        )

    def counterfactual_prompt(self, style: str = "remove") -> str:
        if style == "remove":
            return self.without_input.format(instruction=self.instruction)
        if style == "placeholder":
            return self.with_input.format(
                instruction=self.instruction, history=self.history_intro + self.placeholder
            )
        raise CftrecError(
            f"unknown counterfactual style '{style}'; use one of {', '.join(COUNTERFACTUAL_STYLES)}"
        )

    @staticmethod
    def response(title: str) -> str:
        return f'"{title}"'

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PromptTemplate:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


TEMPLATES = {
    "alpaca": PromptTemplate(),
    "chat": PromptTemplate(
        name="chat",
        with_input="{instruction}\n\n{history}",
        without_input="{instruction}",
        chat=True,
    ),
}


def get_template(name_or_template: str | PromptTemplate | dict) -> PromptTemplate:
    if isinstance(name_or_template, PromptTemplate):
        return name_or_template
    if isinstance(name_or_template, dict):
        return PromptTemplate.from_dict(name_or_template)
    if name_or_template not in TEMPLATES:
        raise CftrecError(
            f"unknown prompt template '{name_or_template}'; use one of {', '.join(TEMPLATES)}"
        )
    return TEMPLATES[name_or_template]


class PromptEncoder:
    """Turns histories and titles into token ids with one tokenizer and template.

    `max_prompt_tokens` bounds the factual prompt: the oldest history items are dropped first
    (never the target) until it fits.
    """

    def __init__(
        self,
        tokenizer,
        template: str | PromptTemplate | dict = "alpaca",
        counterfactual_style: str = "remove",
        max_prompt_tokens: int | None = None,
    ):
        self.tokenizer = tokenizer
        self.template = get_template(template)
        if counterfactual_style not in COUNTERFACTUAL_STYLES:
            raise CftrecError(
                f"unknown counterfactual style '{counterfactual_style}'; "
                f"use one of {', '.join(COUNTERFACTUAL_STYLES)}"
            )
        self.counterfactual_style = counterfactual_style
        self.max_prompt_tokens = max_prompt_tokens
        if self.template.chat and getattr(tokenizer, "chat_template", None) is None:
            raise CftrecError("the 'chat' template needs a tokenizer with a chat template")
        self._counterfactual_ids: list[int] | None = None

    def _encode_prompt_text(self, text: str) -> list[int]:
        if self.template.chat:
            ids = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
            )
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            return list(ids)
        return self.tokenizer(text, add_special_tokens=True)["input_ids"]

    def factual_ids(self, history_titles: Sequence[str]) -> tuple[list[int], int]:
        """Token ids of the factual prompt and how many oldest history items were dropped."""
        titles = list(history_titles)
        dropped = 0
        while True:
            ids = self._encode_prompt_text(self.template.factual_prompt(titles))
            if self.max_prompt_tokens is None or len(ids) <= self.max_prompt_tokens or not titles:
                return ids, dropped
            titles.pop(0)
            dropped += 1

    def counterfactual_ids(self) -> list[int]:
        """Token ids of the counterfactual prompt (the same for every example)."""
        if self._counterfactual_ids is None:
            text = self.template.counterfactual_prompt(self.counterfactual_style)
            self._counterfactual_ids = self._encode_prompt_text(text)
        return list(self._counterfactual_ids)

    def head_ids(self) -> list[int]:
        """The tokens every factual prompt starts with (the template before the first history
        title): the common token prefix of one-title prompts whose titles begin differently,
        less its last token, which a tokenizer may merge with the text that follows it.
        Decoding reuses their keys/values only for prompts that really start with them."""
        probes = ("a", "Z", "1", "(", " x", '"')
        encoded = [self._encode_prompt_text(self.template.factual_prompt([t])) for t in probes]
        size = 0
        while all(len(ids) > size and ids[size] == encoded[0][size] for ids in encoded):
            size += 1
        return list(encoded[0][: max(0, size - 1)])

    def response_ids(self, title: str) -> list[int]:
        """Token ids of the response: the quoted title, then EOS."""
        ids = self.tokenizer(self.template.response(title), add_special_tokens=False)["input_ids"]
        return list(ids) + [self.tokenizer.eos_token_id]

    def responses_ids(self, titles: Sequence[str]) -> list[list[int]]:
        """`response_ids` of many titles, tokenised in one call (the same ids, much faster)."""
        if not titles:
            return []
        texts = [self.template.response(title) for title in titles]
        batch = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [list(ids) + [self.tokenizer.eos_token_id] for ids in batch]

    def config(self) -> dict:
        """What a run directory records to rebuild this encoder."""
        return {
            "template": self.template.to_dict(),
            "counterfactual_style": self.counterfactual_style,
            "max_prompt_tokens": self.max_prompt_tokens,
        }
