"""Imitation training: one trainer for every registered policy (accelerate-based)."""
