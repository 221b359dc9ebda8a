"""Publish: measure in the upload's own pass (measure), upload and verify what the server stored
(upload), retire the family's previous release (release).

May import pipeline.properties, pipeline.build, pipeline.glance, pipeline.manifest and the layers below.
"""
