"""Command line: one module per `dust-agent` command; `main` builds the parser and dispatches.

Contract: commands read config, status and journal files and talk to a running agent only
through files and the operator channel; they never import the running service's internals
for anything but their file formats.
"""
