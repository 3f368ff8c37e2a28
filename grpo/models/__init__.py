"""Model building and loading: the tiny offline model, hub/local weights, LoRA."""
