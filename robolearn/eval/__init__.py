"""Closed-loop evaluation in simulation: success rate with a Wilson interval, latency, videos."""

EVAL_SEED_BASE = 1_000_000
"""Evaluation seeds start here, disjoint from collection seeds (which start at 0 by default)."""
