"""dust-agent: edge monitoring agent for dust-explosion equipment."""

__version__ = "0.1.0"
