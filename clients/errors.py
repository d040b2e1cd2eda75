"""The one exception type the clients raise for server and transport errors."""

from __future__ import annotations

import grpc


class QualityError(Exception):
    """A call to the stedq server failed. `code` is the `grpc.StatusCode`; `details` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str, *, target: str = ""):
        self.code = code
        self.details = details
        self.target = target
        where = f" ({target})" if target else ""
        super().__init__(f"{code.name}{where}: {details}")

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError, target: str = "") -> QualityError:
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code or grpc.StatusCode.UNKNOWN, details or "", target=target)

    @classmethod
    def from_status(cls, code_value: int, details: str, target: str = "") -> QualityError:
        """From a numeric code carried in a message (the stream's per-request `Error`)."""
        code = next((c for c in grpc.StatusCode if c.value[0] == code_value), grpc.StatusCode.UNKNOWN)
        return cls(code, details, target=target)
