"""A software WebAuthn authenticator for tests without a browser: it answers the options our
server sends with the JSON a browser posts after navigator.credentials.create() / get()
(attestation "none", ES256 keys, W3C WebAuthn Level 3 §6.1 authenticator data)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import struct
from dataclasses import dataclass

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

UP, UV, BE, BS, AT = 0x01, 0x04, 0x08, 0x10, 0x40  # authenticator data flags (§6.1)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Key:
    private: ec.EllipticCurvePrivateKey
    user_handle: bytes
    counter: int = 0


class SoftAuthenticator:
    def __init__(self, origin: str, rp_id: str, *, backup_eligible: bool = False, user_verified: bool = True):
        self.origin, self.rp_id = origin, rp_id
        self.backup_eligible, self.user_verified = backup_eligible, user_verified
        self.keys: dict[bytes, Key] = {}

    def _auth_data(self, counter: int, attested: bytes = b"") -> bytes:
        flags = UP | (UV if self.user_verified else 0) | ((BE | BS) if self.backup_eligible else 0)
        flags |= AT if attested else 0
        return hashlib.sha256(self.rp_id.encode()).digest() + bytes([flags]) + struct.pack(">I", counter) + attested

    def _client_data(self, kind: str, challenge: str) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge, "origin": self.origin,
                           "crossOrigin": False}).encode()

    def create(self, options: dict) -> dict:
        private = ec.generate_private_key(ec.SECP256R1())
        numbers = private.public_key().public_numbers()
        cose = cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")})
        credential_id = secrets.token_bytes(32)
        attested = bytes(16) + struct.pack(">H", len(credential_id)) + credential_id + cose
        self.keys[credential_id] = Key(private, unb64(options["user"]["id"]))
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": self._auth_data(0, attested)})
        return {"id": b64(credential_id), "rawId": b64(credential_id), "type": "public-key",
                "authenticatorAttachment": "platform", "clientExtensionResults": {},
                "response": {"clientDataJSON": b64(self._client_data("webauthn.create", options["challenge"])),
                             "attestationObject": b64(attestation), "transports": ["internal"]}}

    def get(self, options: dict, credential_id: bytes | None = None, counter: int | None = None) -> dict:
        allowed = [unb64(c["id"]) for c in options.get("allowCredentials") or []]
        if credential_id is None:
            credential_id = next((c for c in (allowed or self.keys) if c in self.keys), None)
        key = self.keys[credential_id]
        key.counter = key.counter + 1 if counter is None else counter
        auth_data = self._auth_data(key.counter)
        client_data = self._client_data("webauthn.get", options["challenge"])
        signature = key.private.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        return {"id": b64(credential_id), "rawId": b64(credential_id), "type": "public-key",
                "authenticatorAttachment": "platform", "clientExtensionResults": {},
                "response": {"clientDataJSON": b64(client_data), "authenticatorData": b64(auth_data),
                             "signature": b64(signature), "userHandle": b64(key.user_handle)}}
