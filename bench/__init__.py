"""stedq.bench: benchmark harness (in-process limit vs stedq over gRPC vs peers)."""
