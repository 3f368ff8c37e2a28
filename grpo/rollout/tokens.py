"""Token ids of prompts and answers, each distinct string tokenized once.

A run sees the same strings again and again (the task's prompts every epoch, RCE's answer space
every step), and a transformers tokenizer call costs ~0.5-3 ms of Python per batch whatever its
size: on numgame_tiny that was a third of an RCE step. The ids are the tokenizer's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class TokenIds:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_entries: int = 200_000):
        self.tokenizer = tokenizer
        self.max_entries = max_entries  # a bound on memory for very large datasets: start over when passed
        self._ids: dict[str, list[int]] = {}

    def __call__(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's ids, without special tokens; the ones not seen before in one batched call."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._ids]
        if missing:
            if len(self._ids) + len(missing) > self.max_entries:
                self._ids.clear()
            encoded = self.tokenizer(missing, add_special_tokens=False)["input_ids"]
            self._ids.update(zip(missing, encoded))
        return [self._ids[t] for t in texts]

    def padded(self, texts: Sequence[str], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(ids [N, P], attention mask [N, P]) padded as `tokenizer(texts, padding=True)` pads them."""
        ids = self(texts)
        width = max(len(x) for x in ids)
        pad = self.tokenizer.pad_token_id
        left = self.tokenizer.padding_side == "left"
        rows = [[pad] * (width - len(x)) + x if left else x + [pad] * (width - len(x)) for x in ids]
        masks = [[0] * (width - len(x)) + [1] * len(x) if left else [1] * len(x) + [0] * (width - len(x)) for x in ids]
        return (
            torch.tensor(rows, dtype=torch.long, device=device),
            torch.tensor(masks, dtype=torch.long, device=device),
        )
