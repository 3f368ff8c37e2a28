"""The stages of a run: an RCE step, a GRPO step, the optimizer update they share, validation."""
