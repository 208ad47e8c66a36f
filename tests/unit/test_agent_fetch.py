"""SSRF vetting of task inputs (in-process; a local HTTPS server stands in for a public host)."""

from __future__ import annotations

import datetime
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from queue_agent.errors import PermanentError
from queue_agent.fetch import InputFetcher, host_allowed, is_public_address

PNG = b"\x89PNG\r\n\x1a\n" + b"x" * 100


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.3.4",
        "192.168.1.1",
        "169.254.169.254",
        "fd00:ec2::254",
        "::1",
        "0.0.0.0",
        "224.0.0.1",
        "100.64.0.1",
        "::ffff:127.0.0.1",
        "240.0.0.1",
        "fe80::1",
        "198.18.0.1",
    ],
)
def test_non_public_addresses_refused(address):
    assert not is_public_address(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_allowed(address):
    assert is_public_address(address)


def test_host_allowlist():
    allowed = ["images.example.com", "*.cdn.example.org"]
    assert host_allowed("images.example.com", allowed)
    assert host_allowed("a.cdn.example.org", allowed)
    assert not host_allowed("cdn.example.org", allowed)
    assert not host_allowed("evil.com", allowed)
    assert not host_allowed("images.example.com.evil.com", allowed)
    assert not host_allowed("127.0.0.1", ["127.0.0.1"])


def fetcher(**kw) -> InputFetcher:
    defaults = dict(s3=None, allowed_buckets=frozenset({"ok-bucket"}), allowed_hosts=("img.example.com",))
    return InputFetcher(**{**defaults, **kw})


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        ("file:///etc/passwd", "unsupported URL scheme"),
        ("http://img.example.com/a.png", "unsupported URL scheme"),
        ("gopher://img.example.com/", "unsupported URL scheme"),
        ("https://127.0.0.1/a.png", "refused host"),
        ("https://169.254.169.254/latest/meta-data/", "refused host"),
        ("https://other.example.com/a.png", "refused host"),
        ("https://user:pw@img.example.com/a.png", "credentials"),
        ("s3://other-bucket/a.png", "refused s3 bucket"),
    ],
)
def test_refused_references(ref, reason):
    with pytest.raises(PermanentError, match=reason):
        fetcher(resolver=lambda h, p: ["93.184.216.34"]).fetch(ref)


@pytest.mark.parametrize("address", ["127.0.0.1", "169.254.169.254", "10.1.2.3", "fd00:ec2::254"])
def test_allowed_host_resolving_to_internal_address_refused(address):
    with pytest.raises(PermanentError, match="non-public address"):
        fetcher(resolver=lambda h, p: [address]).fetch("https://img.example.com/a.png")


def test_any_bad_address_among_several_refuses():
    with pytest.raises(PermanentError, match="non-public"):
        fetcher(resolver=lambda h, p: ["93.184.216.34", "127.0.0.1"]).fetch("https://img.example.com/a.png")


def test_base64_passes_through():
    import base64

    data = base64.b64encode(PNG).decode()
    assert fetcher().fetch(data) == data


# --- a TLS server on 127.0.0.1 posing as img.example.com --------------------------------------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "img.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("img.example.com"), x509.DNSName("other.example.com")]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            if self.path == "/a.png":
                body = PNG
            elif self.path == "/big.png":
                body = b"x" * 5000
            elif self.path.startswith("/redirect"):
                target = self.path.split("=", 1)[1]
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client_ctx = ssl.create_default_context(cafile=str(d / "cert.pem"))
    yield server.server_address[1], client_ctx
    server.shutdown()


def tls_fetcher(port, ctx, resolved="127.0.0.1", **kw):
    return fetcher(
        resolver=lambda h, p: [resolved],
        address_check=lambda a: a == "127.0.0.1",  # the test server stands in for a public host
        ssl_context=ctx,
        max_bytes=kw.pop("max_bytes", 4096),
        **kw,
    )


def test_https_fetch_connects_to_vetted_address_with_sni(tls_server):
    port, ctx = tls_server
    out = tls_fetcher(port, ctx).fetch_https(f"https://img.example.com:{port}/a.png")
    assert out == PNG


def test_https_size_limit(tls_server):
    port, ctx = tls_server
    with pytest.raises(PermanentError, match="input limit"):
        tls_fetcher(port, ctx, max_bytes=1024).fetch_https(f"https://img.example.com:{port}/big.png")


def test_redirect_to_unvetted_host_refused(tls_server):
    port, ctx = tls_server
    f = tls_fetcher(port, ctx)
    with pytest.raises(PermanentError, match=r"refused host 'other\.example\.com'"):
        f.fetch_https(f"https://img.example.com:{port}/redirect?to=https://other.example.com:{port}/a.png")
    with pytest.raises(PermanentError, match="scheme"):
        f.fetch_https(f"https://img.example.com:{port}/redirect?to=http://img.example.com/a.png")
    assert f.fetch_https(f"https://img.example.com:{port}/redirect?to=/a.png") == PNG


def test_untrusted_certificate_refused(tls_server):
    port, _ = tls_server
    with pytest.raises(PermanentError, match="certificate"):
        tls_fetcher(port, ssl.create_default_context()).fetch_https(f"https://img.example.com:{port}/a.png")
