"""stedq: STED image quality scoring (QualityNet, Robitaille et al., IAAI 2018).

Areas (each a top-level folder of the repository):
  stedq.training  data generation and loading, the QualityNet model, training, evaluation
  stedq.export    ONNX export of a trained checkpoint into a model bundle
  stedq.server    the gRPC scoring service (onnxruntime)
  stedq.clients   Python client library, `stedq score`, examples
  stedq.bench     the benchmark harness
  stedq.study     the expert user-study web app
"""

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

try:
    __version__ = version("stedq")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

# The default model bundle that ships inside the package (written by `stedq export`).
DEFAULT_MODEL_DIR = Path(__file__).parent / "models" / "quality"
