"""stedq.clients: the Python client library, `stedq score`, and the acquisition control-loop example.

    from stedq.clients import QualityClient
    client = QualityClient("localhost:50051")
    scores = client.score(images)   # H×W, N×H×W or a list; uint8/uint16/float32 -> float32 scores
"""

from stedq.clients.aio import AsyncQualityClient
from stedq.clients.client import QualityClient
from stedq.clients.errors import QualityError
from stedq.clients.results import ImageResult, QualityMap, StreamResult

__all__ = ["AsyncQualityClient", "ImageResult", "QualityClient", "QualityError", "QualityMap", "StreamResult"]
