"""What the sync and async clients share: channel credentials and options, call metadata, retry timing."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import grpc

from stedq.clients.images import DEFAULT_MAX_MESSAGE_BYTES

SERVICE = "stedq.v1.QualityService"
# Scoring is idempotent, so a call that never reached a server (UNAVAILABLE) is safe to send again, and so
# is one a stopping server cancelled: grpc's stop() cancels the calls it has received but not begun (about
# one per connected client when a server under load drains: docs/reliability.md). Our own cancellations
# never show here (a blocking call is not cancelled; a cancelled asyncio task raises CancelledError). No
# other code is retried (a DEADLINE_EXCEEDED request may still be running on the server).
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


def _read_pem(value: str | Path | bytes | None, what: str) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    path = Path(value)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None


@dataclass(frozen=True)
class ChannelConfig:
    target: str
    tls: bool | str | Path | bytes = False     # True: system CAs; a path/PEM bytes: the CA (or self-signed cert)
    token: str | None = None                   # sent as "authorization: Bearer <token>"
    client_cert: str | Path | bytes | None = None   # for servers that require client certificates (mTLS)
    client_key: str | Path | bytes | None = None
    tls_server_name: str | None = None         # when the certificate names another host than target
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES

    @property
    def secure(self) -> bool:
        return self.tls is not False and self.tls is not None

    def credentials(self) -> grpc.ChannelCredentials | None:
        if not self.secure:
            if self.client_cert or self.client_key:
                raise ValueError("client_cert/client_key need tls (the server's CA, or True)")
            return None
        root = None if self.tls is True else _read_pem(self.tls, "TLS CA certificate")
        return grpc.ssl_channel_credentials(
            root_certificates=root,
            private_key=_read_pem(self.client_key, "client key"),
            certificate_chain=_read_pem(self.client_cert, "client certificate"))

    def options(self) -> list[tuple[str, object]]:
        options: list[tuple[str, object]] = [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            # Our own retry loop (below) covers UNAVAILABLE; gRPC's transparent retries would
            # otherwise hold batches of up to max_message_bytes in their retry buffers.
            ("grpc.enable_retries", 0),
        ]
        if self.tls_server_name:
            options.append(("grpc.ssl_target_name_override", self.tls_server_name))
        return options

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def open(self, module=grpc):
        """A channel from `grpc` or `grpc.aio` (same call shape) with these credentials and options."""
        credentials = self.credentials()
        if credentials is None:
            return module.insecure_channel(self.target, options=self.options())
        return module.secure_channel(self.target, credentials, options=self.options())


def client_arguments(settings) -> dict:
    """Client constructor arguments from `stedq.settings.Settings` (server, tls_cert, token, timeout_s)."""
    token = settings.token.get_secret_value() if settings.token else None
    return {"target": settings.server, "tls": settings.tls_cert or False, "token": token,
            "timeout": settings.timeout_s}


def backoff_delays(retries: int, initial_s: float, maximum_s: float, rng: random.Random | None = None):
    """Exponential backoff with jitter: `retries` delays, the n-th between half and all of
    min(maximum, initial * 2**n), so that clients restarted together do not retry in step."""
    rng = rng or random.Random()
    for attempt in range(retries):
        cap = min(maximum_s, initial_s * 2 ** attempt)
        yield cap / 2 + rng.uniform(0.0, cap / 2)
