"""Config schema, composition, range checks and derived values."""
