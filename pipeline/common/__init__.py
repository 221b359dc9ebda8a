"""The floor of helpers every part of the chain stands on: one run() for subprocesses, one-line errors,
progress, reports, secret masking, paths, file digests, tool versions, ISO writing.

Imports nothing of the pipeline above it (only the package's own version).
"""
