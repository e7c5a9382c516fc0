"""mTLS peer identity (docs/identity.md): a tenant's `spiffe_ids` name workload identities,
and the filter reads the client certificate's URI SAN from Envoy
(`connection.uri_san_peer_certificate`). Envoy terminates TLS with client certificates
required; the certificates are made here with openssl (a CA, the gateway's, and two
clients: one with a tenant's SPIFFE ID, one with an ID no tenant lists).
"""
import json
import os
import ssl
import subprocess
import tempfile

import httpx
import pytest

from conftest import demo_config
from openai_helpers import PatchedTopology
from rawhttp import one_each

SPIFFE_A = "spiffe://cluster.local/ns/team-a/sa/agent-platform"
SPIFFE_OTHER = "spiffe://cluster.local/ns/team-x/sa/unknown"
HOST_A = "tenant-a.ai.example.com"
CHAT = "/v1/chat/completions"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d):
    """CA, the gateway's certificate (127.0.0.1) and two client certificates."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=d)

    def leaf(name, ext):
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(ext)
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)

    leaf("gateway", "subjectAltName=IP:127.0.0.1,DNS:tenant-a.ai.example.com\n")
    leaf("client-a", f"subjectAltName=URI:{SPIFFE_A}\nextendedKeyUsage=clientAuth\n")
    leaf("client-x", f"subjectAltName=URI:{SPIFFE_OTHER}\nextendedKeyUsage=clientAuth\n")


def require_client_certs(d):
    def patch(doc):
        listener = doc["static_resources"]["listeners"][0]
        listener["filter_chains"][0]["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": True,
                "common_tls_context": {
                    "tls_certificates": [{
                        "certificate_chain": {"filename": os.path.join(d, "gateway.pem")},
                        "private_key": {"filename": os.path.join(d, "gateway.key")},
                    }],
                    "validation_context": {"trusted_ca": {"filename": os.path.join(d, "ca.pem")}},
                },
            },
        }
    return patch


@pytest.fixture(scope="module")
def tls_gw():
    with tempfile.TemporaryDirectory(prefix="mtls-") as d:
        make_certs(d)
        cfg = demo_config()
        cfg["tenants"][0]["spiffe_ids"] = [SPIFFE_A]
        with PatchedTopology(patch=require_client_certs(d), plugin_config=cfg, concurrency=1) as topo:
            topo.certs = d
            yield topo


def post(gw, client, rid, key=None):
    ctx = ssl.create_default_context(cafile=os.path.join(gw.certs, "ca.pem"))
    ctx.load_cert_chain(os.path.join(gw.certs, f"{client}.pem"), os.path.join(gw.certs, f"{client}.key"))
    headers = {"Host": HOST_A, "x-request-id": rid, "Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    body = {"model": "llama3-8b", "messages": [{"role": "user", "content": "hello over mTLS"}]}
    with httpx.Client(verify=ctx, timeout=10) as c:
        return c.post(f"https://127.0.0.1:{gw.gateway_port}{CHAT}", content=json.dumps(body), headers=headers)


def test_a_listed_spiffe_id_is_the_tenants_credential(tls_gw):
    r = post(tls_gw, "client-a", "mtls-a")
    assert r.status_code == 200, r.text
    recs, audits = one_each(tls_gw, ["mtls-a"])
    assert recs["mtls-a"]["tenant"] == "tenant-a"
    assert audits["mtls-a"]["decision"] == "allow"


def test_an_unlisted_spiffe_id_neither_grants_nor_denies(tls_gw):
    # Not a credential: without another one the request is unauthenticated.
    r = post(tls_gw, "client-x", "mtls-x")
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] is None  # no credential at all (OpenAI's missing key)
    recs, _ = one_each(tls_gw, ["mtls-x"])
    assert recs["mtls-x"]["tenant"] is None
