"""stedq.export: a trained checkpoint to an ONNX model bundle (normalization inside the graph)."""
