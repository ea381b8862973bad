"""Test oracles: independent implementations the project's code is checked against."""
