"""Exporting cellstate layers: ``cellstate.export.onnx`` (translations for torch.onnx.export)."""
