"""Built-in verifiable tasks and domain mixing."""
