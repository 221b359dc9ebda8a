"""The Glance property set: rendered from templates/properties.yaml.j2 (render), checked by the lint
rules (lint, with Glance's metadefs), explained as Nova's libvirt XML (explain), linted in Glance (image_lint).

May import pipeline.build (what was built), pipeline.manifest, pipeline.glance and the layers below.
"""
