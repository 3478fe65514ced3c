"""`bidbridge demo` and `bidbridge demo-crypto`: the main job end to end, and its synthetic data."""
