#!/usr/bin/env python3
"""Local signing key, JWKS and tokens for the JWT demo and the integration tests.

Envoy's `jwt_authn` verifies tokens against a local JWKS; the filter then reads the
verified payload. Nothing here is needed in production, where the identity provider signs
tokens and publishes its JWKS. No private key is committed: each run makes a fresh one.

    # a fresh RS256 key pair: DIR/private.pem (0600) and DIR/jwks.json
    .venv/bin/python -m harness.jwt_keys keygen --out-dir envoy-demo/logs/jwt
    # a token for tenant-a, valid for an hour
    .venv/bin/python -m harness.jwt_keys token --key envoy-demo/logs/jwt/private.pem \
        --tenant tenant-a --sub alice

Needs the `cryptography` package (pinned in tests/requirements.txt, installed in .venv).
"""
import argparse
import base64
import json
import os
import sys
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ISSUER = "https://issuer.ai.example.com"
AUDIENCE = "ai-gateway"
KID = "demo-rs256"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_uint(n):
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def generate_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks(private_key, kid=KID):
    pub = private_key.public_key().public_numbers()
    return {"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid,
                      "n": b64url_uint(pub.n), "e": b64url_uint(pub.e)}]}


def sign(private_key, claims, kid=KID):
    """A compact RS256 JWS over `claims` (a dict)."""
    header = {"alg": "RS256", "typ": "JWT", "kid": kid}
    signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + b64url(json.dumps(claims, separators=(",", ":")).encode()))
    sig = private_key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64url(sig)


def claims(tenant=None, sub="demo-user", ttl=3600, issuer=ISSUER, audience=AUDIENCE, **extra):
    now = int(time.time())
    c = {"iss": issuer, "aud": audience, "sub": sub, "iat": now, "exp": now + ttl}
    if tenant is not None:
        c["tenant"] = tenant
    c.update(extra)
    return c


def write_keys(out_dir, private_key):
    """Write private.pem (mode 0600) and jwks.json; return the JWKS path."""
    os.makedirs(out_dir, exist_ok=True)
    pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    key_path = os.path.join(out_dir, "private.pem")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    jwks_path = os.path.join(out_dir, "jwks.json")
    with open(jwks_path, "w") as f:
        json.dump(jwks(private_key), f, indent=2)
        f.write("\n")
    return jwks_path


def load_key(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keygen", help="write a fresh private.pem and jwks.json")
    k.add_argument("--out-dir", required=True)
    t = sub.add_parser("token", help="print a signed token")
    t.add_argument("--key", required=True, help="private.pem written by keygen")
    t.add_argument("--tenant", default=None, help="value of the `tenant` claim")
    t.add_argument("--sub", default="demo-user")
    t.add_argument("--ttl", type=int, default=3600)
    args = p.parse_args(argv)
    if args.cmd == "keygen":
        print(write_keys(args.out_dir, generate_key()))
    else:
        print(sign(load_key(args.key), claims(args.tenant, args.sub, args.ttl)))


if __name__ == "__main__":
    sys.exit(main())
