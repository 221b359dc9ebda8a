"""CI pipelines generated from a catalog of manifests: bake jobs in parallel, publishes serialized per family and cloud."""
