"""A benign corpus for the DLP tests and benchmark: what agents really send.

Built at run time from things on this machine (standard-library source,
this repository's lock file) and deterministic generators (git SHAs, UUIDs,
npm lock entries, LLM API request bodies), so nothing here is a secret and
nothing is fetched.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import random
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_STDLIB = Path(sys.modules["json"].__file__ or "").resolve().parents[1]

# BIP-39 test-vector mnemonics (they trip seed-phrase detectors on chat text).
BIP39 = [
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
    "legal winner thank year wave sausage worth useful legal winner thank yellow",
    "letter advice cage absurd amount doctor acoustic avoid letter advice cage above",
    "zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo wrong",
    "void come effort suffer camp survey warrior heavy shoot primary clutch crush open "
    "amazing screen patrol group space point ten exist slush involve unfold",
]


# The start of the BIP-39 English word list, as a wallet's docs or tests hold it.
BIP39_WORDS = [
    "abandon",
    "ability",
    "able",
    "about",
    "above",
    "absent",
    "absorb",
    "abstract",
    "absurd",
    "abuse",
    "access",
    "accident",
    "account",
    "accuse",
    "achieve",
    "acid",
    "acoustic",
    "acquire",
    "across",
    "act",
    "action",
    "actor",
    "actress",
    "actual",
    "adapt",
    "add",
    "addict",
    "address",
    "adjust",
    "admit",
    "adult",
    "advance",
    "advice",
    "aerobic",
    "affair",
    "afford",
    "afraid",
    "again",
    "age",
    "agent",
    "agree",
    "ahead",
    "aim",
    "air",
    "airport",
    "aisle",
    "alarm",
    "album",
    "alcohol",
    "alert",
    "alien",
    "all",
    "alley",
    "allow",
    "almost",
    "alone",
    "alpha",
    "already",
    "also",
    "alter",
    "always",
    "amateur",
    "amazing",
    "among",
    "amount",
    "amused",
    "analyst",
    "anchor",
    "ancient",
    "anger",
    "angle",
    "angry",
    "animal",
    "ankle",
    "announce",
    "annual",
    "another",
    "answer",
    "antenna",
    "antique",
    "anxiety",
    "any",
    "apart",
    "apology",
    "appear",
    "apple",
    "approve",
    "april",
    "arch",
    "arctic",
    "area",
    "arena",
    "argue",
    "arm",
    "armed",
    "armor",
    "army",
    "around",
    "arrange",
    "arrest",
    "arrive",
    "arrow",
    "art",
    "artefact",
    "artist",
    "artwork",
    "ask",
    "aspect",
    "assault",
    "asset",
    "assist",
    "assume",
    "asthma",
    "athlete",
    "atom",
    "attack",
    "attend",
    "attitude",
    "attract",
    "auction",
    "audit",
    "august",
    "aunt",
    "author",
    "auto",
    "autumn",
    "average",
    "avocado",
    "avoid",
    "awake",
    "aware",
    "away",
    "awesome",
    "awful",
    "awkward",
    "axis",
]


def source_code(limit: int = 300_000) -> str:
    """Standard-library modules: real code full of identifiers, hex and base64."""
    text = []
    size = 0
    seen: set[Path] = set()
    # A fixed list first (stable across machines), then more modules as needed.
    more = [str(p.relative_to(_STDLIB)) for p in sorted(_STDLIB.glob("*.py"))]
    for name in ("base64.py", "json/decoder.py", "urllib/parse.py", "uuid.py", "hashlib.py",
                 "secrets.py", "hmac.py", "email/utils.py", "http/cookies.py", "ssl.py",
                 "zipfile/__init__.py", "tarfile.py", "argparse.py", "subprocess.py",
                 *more):  # fmt: skip
        path = _STDLIB / name
        if path.is_file() and path not in seen:
            seen.add(path)
            chunk = path.read_text(encoding="utf-8", errors="replace")
            text.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
    return "\n".join(text)[:limit]


def _sha1(text: str) -> str:
    # Git object names, not security.
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def git_log(n: int = 200) -> str:
    rng = random.Random(1)
    lines = []
    for i in range(n):
        sha = _sha1(f"commit {i}")
        tree = _sha1(f"tree {i}")
        lines += [
            f"commit {sha}",
            f"tree {tree}",
            f"parent {_sha1(f'commit {i - 1}')}",
            "Author: Dev Eloper <dev@example.test>",
            f"Date:   {rng.randint(1_600_000_000, 1_800_000_000)} +0000",
            "",
            f"    Fix the thing in module {i} (closes #{i})",
            "",
        ]
    return "\n".join(lines)


def uuids(n: int = 500) -> str:
    rng = random.Random(2)
    return "\n".join(str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n))


def lock_files() -> str:
    rng = random.Random(3)
    packages = {}
    for i in range(150):
        digest = base64.b64encode(hashlib.sha512(f"pkg{i}".encode()).digest()).decode()
        packages[f"node_modules/pkg-{i}"] = {
            "version": f"{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 99)}",
            "resolved": f"https://registry.npmjs.org/pkg-{i}/-/pkg-{i}-1.0.0.tgz",
            "integrity": f"sha512-{digest}",
        }
    npm = json.dumps({"name": "app", "lockfileVersion": 3, "packages": packages}, indent=2)
    go_sum = "\n".join(
        f"github.com/example/mod{i} v1.{i}.0 h1:"
        + base64.b64encode(hashlib.sha256(f"go{i}".encode()).digest()).decode()
        for i in range(100)
    )
    uv_lock = (REPO / "uv.lock").read_text(encoding="utf-8")
    return "\n".join([npm, go_sum, uv_lock])


def certificates() -> str:
    """Public PEM material (certificates, a public key): base64 bodies that
    decode to DER, which must not look like private keys or tokens."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    pems = []
    for i in range(20):
        key = ec.derive_private_key(1000 + i, ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"ca{i}.example.test")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(i + 1)
            .not_valid_before(datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))
            .not_valid_after(datetime.datetime(2036, 1, 1, tzinfo=datetime.UTC))
            .sign(key, hashes.SHA256())
        )
        pems.append(cert.public_bytes(serialization.Encoding.PEM).decode())
        pems.append(
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
    return "".join(pems)


def chat_request(text: str, *, image: bool = False, attachment: str | None = None) -> bytes:
    """An Anthropic Messages API body as a coding agent sends it."""
    rng = random.Random(4)
    content: list[dict[str, object]] = [{"type": "text", "text": text}]
    if image:
        png = bytes(rng.getrandbits(8) for _ in range(30_000))
        content.append(
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png",
                           "data": base64.b64encode(png).decode()},
            }
        )  # fmt: skip
    if attachment is not None:
        content.append(
            {
                "type": "document",
                "source": {"type": "base64", "media_type": "text/plain", "data": attachment},
            }
        )
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 32000,
        "stream": True,
        "system": [
            {
                "type": "text",
                "text": "You are a coding agent. Use the tools to read and edit files.",
                "cache_control": {"type": "ephemeral"},
            }
        ],
        "tools": [
            {
                "name": "Bash",
                "description": "Run a shell command and return its output.",
                "input_schema": {
                    "type": "object",
                    "properties": {"command": {"type": "string"}},
                    "required": ["command"],
                },
            }
        ],
        "metadata": {
            "user_id": "user_"
            + hashlib.sha256(b"u").hexdigest()
            + "_session_"
            + str(uuid.UUID(int=5))
        },
        "messages": [
            {"role": "user", "content": content},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "I'll run the tests first."},
                    {
                        "type": "tool_use",
                        "id": "toolu_01" + "A7bC9dE2fG4hJ6kL8mN0pQ",
                        "name": "Bash",
                        "input": {"command": "git log --oneline -5 && pytest -q"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_01" + "A7bC9dE2fG4hJ6kL8mN0pQ",
                        "content": git_log(5) + "\n" + uuids(5),
                    }
                ],
            },
        ],
    }
    return json.dumps(body).encode()


def typical_request() -> bytes:
    """About 4 KB: a short prompt with a little code, as most agent turns are."""
    prose = (
        "Please refactor the function below so that it handles empty input, and keep "
        "the public signature. Here is the current version:\n\n"
    )
    code = source_code(1300)
    return chat_request(prose + code + "\n\nThanks! " + BIP39[1])


def benign_outbound() -> dict[str, bytes]:
    code = source_code()
    return {
        "source code": code.encode(),
        "git log": git_log().encode(),
        "uuids": uuids().encode(),
        "lock files": lock_files().encode(),
        "bip39 mnemonics": "\n".join(BIP39).encode(),
        "bip39 word list": "\n".join(BIP39_WORDS).encode(),
        "bip39 word list as JSON": json.dumps({"wordlist": BIP39_WORDS}).encode(),
        "certificates": certificates().encode(),
        "chat request with code": chat_request("Explain this code:\n" + code[:50_000]),
        "chat request with image": chat_request("What is in this image?", image=True),
        "chat request with mnemonic": chat_request(
            "My test wallet uses the BIP-39 vector: " + BIP39[0] + ". Write a unit test."
        ),
        "typical 4 KB request": typical_request(),
    }
