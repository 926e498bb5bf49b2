"""Labeling your own images with yes/no answers: the preset, the export of labels and
model, predictions on new images, and a demo folder (docs/labeling.md)."""
