"""The chain: the one place that orders the stages, a module per entry point.

manifest -> (lock check) -> build (install, bake or convert; through the stage cache) -> properties (+ lint)
-> publish (measured in the same pass as the upload, verified) -> release (demote the previous one).

Everything that can be checked without touching Glance is checked before connecting to it, so a bad
manifest never reaches the server; and the previous release is only demoted once the new one is verified.
The partial runs of the chain live here too: plan (the dry run), lint and explain of a manifest, lock,
inspect (of a file, or of a Glance image fetched first), bake and publish (the chain split at an artifact,
for CI jobs), lifecycle (past releases), release notes (and the family's page), and the CI pipeline of a catalog.
"""

from __future__ import annotations

from pipeline.chain.bake import bake
from pipeline.chain.build_and_publish import build_and_publish
from pipeline.chain.ci import generate_ci
from pipeline.chain.inspecting import inspect_reference
from pipeline.chain.lifecycle import lifecycle
from pipeline.chain.lint import explain_manifest, lint_glance, lint_manifest
from pipeline.chain.lock import write_lock
from pipeline.chain.options import JobOptions
from pipeline.chain.plan import plan
from pipeline.chain.publish_artifact import publish_artifact
from pipeline.chain.release_notes import release_notes
from pipeline.chain.targets import TargetResult

__all__ = ["JobOptions", "TargetResult", "bake", "build_and_publish", "explain_manifest", "generate_ci", "inspect_reference",
           "lifecycle", "lint_glance", "lint_manifest", "plan", "publish_artifact", "release_notes", "write_lock"]
