"""AFlow workflows: operators, the validator, the sandboxed runner and its channel, the reward components."""
