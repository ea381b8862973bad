"""The adversarial suite: peers, files and field input that misbehave (issue 13)."""
