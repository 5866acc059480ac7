"""Automated adapter rollouts: the pure core (document, verdicts, schedule, state, route weights)."""
