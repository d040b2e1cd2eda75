"""stedq.server: the gRPC quality-scoring service on onnxruntime."""
