"""Reward components (TRL's contract: completions in, one float per completion out) and their combination."""
