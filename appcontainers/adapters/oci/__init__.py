"""OCI images: the import side (layouts, skopeo sources, layers to .aimg)."""
