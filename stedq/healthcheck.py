"""`python -m stedq.healthcheck`: exit 0 when a stedq server answers SERVING on grpc.health.v1, else 1.

The container HEALTHCHECK runs it (the images carry no grpc_health_probe binary). It reads the same
STEDQ_* variables as the server, so the port, TLS and token follow the container's configuration
without repeating them; flags override. Connecting to a wildcard bind address (0.0.0.0, ::) means
connecting to this host's loopback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stedq.settings import Settings

WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SystemExit(f"healthcheck: cannot read the {what} {path}: {exc.strerror or exc}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stedq.healthcheck",
        description="Ask a stedq server for its gRPC health (grpc.health.v1). Exit 0 if SERVING, 1 "
                    "otherwise. Defaults come from the server's STEDQ_* environment variables.")
    parser.add_argument("--host", help="server address (default: STEDQ_HOST; a wildcard means 127.0.0.1)")
    parser.add_argument("--port", type=int, help="gRPC port (default: STEDQ_PORT or 50051)")
    parser.add_argument("--service", default="",
                        help="health service name: '' = the whole server (default), "
                             "'stedq.v1.QualityService' = ready to score")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer (default 3)")
    parser.add_argument("--tls-ca", type=Path,
                        help="CA certificate (PEM) to verify the server with (default when the server "
                             "uses TLS: STEDQ_TLS_CERT, right for self-signed certificates)")
    parser.add_argument("--tls-server-name", default="localhost",
                        help="host name the certificate must carry (default: localhost)")
    parser.add_argument("--client-cert", type=Path, help="client certificate (PEM) when the server requires mTLS")
    parser.add_argument("--client-key", type=Path, help="client private key (PEM) when the server requires mTLS")
    return parser


def check(target: str, service: str = "", timeout: float = 3.0,
          credentials: grpc.ChannelCredentials | None = None, options: list | None = None,
          metadata: tuple = ()) -> tuple[bool, str]:
    """(serving?, what happened). Never raises for an unreachable or unhealthy server."""
    channel = (grpc.secure_channel(target, credentials, options=options or []) if credentials
               else grpc.insecure_channel(target, options=options or []))
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout,
                               metadata=metadata or None)
        except grpc.RpcError as exc:
            return False, f"{exc.code().name}: {exc.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, status


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    host = args.host if args.host is not None else settings.host
    if host in WILDCARD_HOSTS:
        host = "127.0.0.1"
    port = args.port if args.port is not None else settings.port
    target = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"

    credentials, options = None, []
    tls_ca = args.tls_ca or settings.tls_cert
    if settings.tls_cert is not None or args.tls_ca is not None:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(tls_ca, "TLS CA certificate"),
            private_key=_read(args.client_key, "client key"),
            certificate_chain=_read(args.client_cert, "client certificate"))
        options.append(("grpc.ssl_target_name_override", args.tls_server_name))
    metadata = (("authorization", f"Bearer {settings.token.get_secret_value()}"),) if settings.token else ()

    serving, what = check(target, args.service, args.timeout, credentials, options, metadata)
    service = args.service or "(server)"
    print(f"{target} {service}: {what}")
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
