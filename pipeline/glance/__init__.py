"""Talking to Glance: connecting (clouds.yaml, OS_* variables, or the local Glance), running the local
Glance itself, and the image reads shared by publish, audit, explain, inspect and rebuild.

May import pipeline.common only.
"""
