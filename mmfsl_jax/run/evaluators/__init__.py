"""run/evaluators."""
