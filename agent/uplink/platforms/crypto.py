"""The platforms' envelopes, over the `cryptography` package (OpenSSL).

- Hebei V1.1: DES-CBC with PKCS#5/#7 padding (8-byte blocks) → Base64 → upper-case hex of
  the Base64 text. Single DES is TripleDES with the 8-byte key repeated three times (K1 = K2
  = K3 reduces EDE to one DES encryption), which `cryptography` still offers.
- Ministry: SM4-CBC with PKCS#5/#7 padding (16-byte blocks) → hex.

Keys and IVs are given as text: exactly `size` characters (taken as their ASCII bytes), or
2 x `size` hexadecimal digits. A ciphertext that does not decrypt to valid padding raises
EnvelopeError (in practice: a wrong key or IV).
"""

from __future__ import annotations

import base64
import binascii
import string

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import (
    BlockCipherAlgorithm,
    Cipher,
    algorithms,
    modes,
)

DES_BYTES = 8
SM4_BYTES = 16


class EnvelopeError(ValueError):
    """Data that cannot be opened: not hex, not Base64, or bad padding (wrong key or IV)."""


def parse_key(text: str, size: int, what: str) -> bytes:
    """A key or IV of `size` bytes from `size` ASCII characters or 2*size hex digits."""
    if len(text) == size and text.isascii() and text.isprintable():
        return text.encode("ascii")
    if len(text) == 2 * size and all(c in string.hexdigits for c in text):
        return bytes.fromhex(text)
    raise ValueError(
        f"{what} must be {size} ASCII characters or {2 * size} hexadecimal digits, "
        f"got {len(text)} characters"
    )


def _des(key: bytes) -> BlockCipherAlgorithm:
    if len(key) != DES_BYTES:
        raise ValueError(f"a DES key has {DES_BYTES} bytes, got {len(key)}")
    return TripleDES(key * 3)


def _cbc(algo: BlockCipherAlgorithm, iv: bytes, data: bytes, *, encrypt: bool) -> bytes:
    block = algo.block_size
    cipher = Cipher(algo, modes.CBC(iv))
    if encrypt:
        padder = padding.PKCS7(block).padder()
        enc = cipher.encryptor()
        return enc.update(padder.update(data) + padder.finalize()) + enc.finalize()
    if not data or len(data) % (block // 8):
        raise EnvelopeError(
            f"ciphertext of {len(data)} bytes is not whole {block // 8}-byte blocks"
        )
    dec = cipher.decryptor()
    plain = dec.update(data) + dec.finalize()
    unpadder = padding.PKCS7(block).unpadder()
    try:
        return unpadder.update(plain) + unpadder.finalize()
    except ValueError:
        raise EnvelopeError("bad padding after decryption: wrong key or IV") from None


def des_cbc(key: bytes, iv: bytes, data: bytes, *, encrypt: bool = True) -> bytes:
    return _cbc(_des(key), iv, data, encrypt=encrypt)


def sm4_cbc(key: bytes, iv: bytes, data: bytes, *, encrypt: bool = True) -> bytes:
    if len(key) != SM4_BYTES:
        raise ValueError(f"an SM4 key has {SM4_BYTES} bytes, got {len(key)}")
    return _cbc(algorithms.SM4(key), iv, data, encrypt=encrypt)


def _unhex(data: str) -> bytes:
    try:
        return bytes.fromhex(data)
    except ValueError:
        raise EnvelopeError("data is not hexadecimal text") from None


def hebei_seal(key: bytes, iv: bytes, plaintext: bytes, *, upper: bool = True) -> str:
    """DES-CBC(PKCS#5) → Base64 → hex of the Base64 text (upper case by default)."""
    text = base64.b64encode(des_cbc(key, iv, plaintext)).hex()
    return text.upper() if upper else text


def hebei_open(key: bytes, iv: bytes, data: str) -> bytes:
    raw = _unhex(data)
    try:
        cipher = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError("the hex does not hold Base64 text") from None
    return des_cbc(key, iv, cipher, encrypt=False)


def sm4_seal(key: bytes, iv: bytes, plaintext: bytes, *, upper: bool = False) -> str:
    """SM4-CBC(PKCS#5) → hex (lower case by default)."""
    text = sm4_cbc(key, iv, plaintext).hex()
    return text.upper() if upper else text


def sm4_open(key: bytes, iv: bytes, data: str) -> bytes:
    return sm4_cbc(key, iv, _unhex(data), encrypt=False)
