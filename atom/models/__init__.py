"""Models: backbones by name with their pretrained sources, the detector, its loss and post-processing."""
