"""A tiny OIDC issuer for tests: discovery document, JWKS, and RS256 tokens.

Usage: oidc_issuer.py IP AUDIENCE. Prints one JSON line with the issuer URL
and a set of tokens (valid for several people and roles, expired, for
another audience, signed with a key the JWKS does not hold), then serves.
"""
import http.server
import json
import sys
import time

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ip, audience = sys.argv[1], sys.argv[2]
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
jwk.update(kid="k1", use="sig", alg="RS256")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/.well-known/openid-configuration":
            body = {
                "issuer": issuer,
                "authorization_endpoint": issuer + "/authorize",
                "jwks_uri": issuer + "/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        elif self.path == "/jwks":
            body = {"keys": [jwk]}
        else:
            self.send_response(404)
            self.end_headers()
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


server = http.server.HTTPServer((ip, 0), Handler)
issuer = f"http://{ip}:{server.server_address[1]}"


def token(sub, groups, aud=audience, lifetime=3600, signer=key, **extra):
    now = int(time.time())
    claims = {"iss": issuer, "sub": sub, "aud": aud, "iat": now - 5, "exp": now + lifetime}
    if groups is not None:
        claims["groups"] = groups
    claims.update(extra)
    return jwt.encode(claims, signer, algorithm="RS256", headers={"kid": "k1"})


tokens = {
    "alice": token("u-alice", ["sec-approvers"], email="alice@example.com", name="Alice", preferred_username="alice"),
    "bob": token("u-bob", ["sec-approvers"], email="bob@example.com", name="Bob"),
    "carol": token("u-carol", ["sec-responders", "sec-admins"], email="carol@example.com", name="Carol"),
    "viewer": token("u-vic", ["sec-viewers"], name="Vic"),
    "roleless": token("u-rolf", None, name="Rolf"),
    "expired": token("u-alice", ["sec-approvers"], lifetime=-600),
    "wrong_audience": token("u-alice", ["sec-approvers"], aud="someone-else"),
    "wrong_signature": token("u-alice", ["sec-approvers"], signer=stranger),
}
print(json.dumps({"issuer": issuer, "tokens": tokens}), flush=True)
server.serve_forever()
