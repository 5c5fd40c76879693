"""TLS transport (RFC 3261 26.2): a TLS listener with a certificate from config
answers an OPTIONS over TLS, IPv4 and IPv6."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.interop.gateway import gateway_config, running_gateway

pytestmark = pytest.mark.interop


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "voipgw.test")])
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.asyncio
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_options_over_tls(tmp_path: Path, host: str) -> None:
    cert, key = self_signed(tmp_path)
    doc = gateway_config(host=host, upstream="sip:127.0.0.1:9", transports=("TLS",))
    doc["sip"]["tls"] = {"certificate": str(cert), "private_key": str(key)}
    async with running_gateway(doc) as (gateway, _):
        tls = next(e for e in gateway.transports.local if e.transport == "TLS")
        context = ssl.create_default_context(cafile=str(cert))
        reader, writer = await asyncio.open_connection(tls.host, tls.port, ssl=context)
        bracket = f"[{host}]" if ":" in host else host
        writer.write(
            (
                f"OPTIONS sips:{bracket} SIP/2.0\r\n"
                f"Via: SIP/2.0/TLS {bracket}:5061;branch=z9hG4bKtls\r\n"
                "Max-Forwards: 70\r\nFrom: <sips:probe@voipgw.test>;tag=t\r\n"
                "To: <sips:voipgw.test>\r\nCall-ID: tls@probe\r\nCSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 5)
        assert line == b"SIP/2.0 200 OK\r\n"
        writer.close()


async def _options_over(tls_host: str, port: int, context: ssl.SSLContext) -> bytes:
    """Sends an OPTIONS over TLS; returns the status line, or b"" if the gateway
    refused the connection (handshake failure or close)."""
    try:
        reader, writer = await asyncio.open_connection(tls_host, port, ssl=context)
    except (ssl.SSLError, ConnectionError):
        return b""
    try:
        writer.write(
            (
                f"OPTIONS sips:{tls_host} SIP/2.0\r\n"
                f"Via: SIP/2.0/TLS {tls_host}:5061;branch=z9hG4bKmtls\r\n"
                "Max-Forwards: 70\r\nFrom: <sips:trunk@voipgw.test>;tag=t\r\n"
                "To: <sips:voipgw.test>\r\nCall-ID: mtls@trunk\r\nCSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 5)
    except (ssl.SSLError, ConnectionError):
        # TLS 1.3: a missing or unknown client certificate is refused after the
        # client's side of the handshake, so the refusal shows on the first read.
        return b""
    finally:
        writer.close()


@pytest.mark.asyncio
async def test_trunk_client_certificate_required(tmp_path: Path) -> None:
    # [sip.tls] verify_client: a trunk must present a certificate from ca_file.
    server_cert, server_key = self_signed(tmp_path)
    (tmp_path / "trunk").mkdir()
    (tmp_path / "stranger").mkdir()
    trunk_cert, trunk_key = self_signed(tmp_path / "trunk")
    stranger_cert, stranger_key = self_signed(tmp_path / "stranger")
    doc = gateway_config(host="127.0.0.1", upstream="sip:127.0.0.1:9", transports=("TLS",))
    doc["sip"]["tls"] = {
        "certificate": str(server_cert),
        "private_key": str(server_key),
        "ca_file": str(trunk_cert),
        "verify_client": True,
    }
    async with running_gateway(doc) as (gateway, _):
        tls = next(e for e in gateway.transports.local if e.transport == "TLS")

        def client(cert: Path | None, key: Path | None) -> ssl.SSLContext:
            context = ssl.create_default_context(cafile=str(server_cert))
            if cert is not None and key is not None:
                context.load_cert_chain(str(cert), str(key))
            return context

        assert await _options_over(tls.host, tls.port, client(None, None)) == b""
        stranger = client(stranger_cert, stranger_key)
        assert await _options_over(tls.host, tls.port, stranger) == b""
        trunk = client(trunk_cert, trunk_key)
        assert await _options_over(tls.host, tls.port, trunk) == b"SIP/2.0 200 OK\r\n"
