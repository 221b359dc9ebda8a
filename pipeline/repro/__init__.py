"""Reproducibility: content addresses of the stages (stages), the stage cache (cache), the build stages
run through it (runner), lock files (lock), and rebuild-and-compare (rebuild).

May import pipeline.publish and everything below it; only the chain and the CLI sit above.
"""
