"""Evaluators of trained workdirs: meta-test episodes (episodic) and the 20 one-shot runs of
Lake et al. 2015 (omniglot_runs); the test-time settings they share (test_time)."""
