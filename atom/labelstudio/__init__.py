"""Label Studio integration: one project per scene, pulls into dataset versions, model pre-annotations."""
