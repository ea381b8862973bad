"""Adversarial tests: installer mistakes, hostile field, network and operator input."""
