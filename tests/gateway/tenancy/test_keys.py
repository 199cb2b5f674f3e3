"""Key files in both formats, names, hashes, and reloading a changed file."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from adapters.fake import FakeEngine
from gateway.config import Settings
from gateway.tenancy.keys import KeyFileError, KeyRing, Tenant, key_name, parse_keys
from tests.conftest import serving

LONG_A = "a" * 40
LONG_B = "b" * 40


def tenants(text: str) -> list[Tenant]:
    return [entry.tenant for entry in parse_keys(text, "keys")]


def test_a_bare_key_is_named_by_the_start_of_its_sha256() -> None:
    expected = "key-" + hashlib.sha256(LONG_A.encode()).hexdigest()[:8]
    assert key_name(LONG_A) == expected
    assert tenants(f"# a comment\n\n  {LONG_A}  \n") == [Tenant(expected)]


def test_name_colon_key_lines_name_their_keys() -> None:
    assert [t.name for t in tenants(f"team-a:{LONG_A}\nteam-b: {LONG_B}\n")] == [
        "team-a",
        "team-b",
    ]


def test_without_keys_the_ring_is_empty() -> None:
    assert not KeyRing()


def test_yaml_entries_carry_a_hash_instead_of_the_key_and_per_key_settings() -> None:
    digest = hashlib.sha256(LONG_B.encode()).hexdigest()
    text = f"""
keys:
  - name: team-a
    key: {LONG_A}
    rpm: 60
    tpm: 100000
    batch_bytes: 1000
  - name: ops
    key_sha256: {digest}
    admin: true
"""
    assert tenants(text) == [
        Tenant("team-a", rpm=60, tpm=100000, batch_bytes=1000),
        Tenant("ops", admin=True),
    ]
    assert tenants(f"- key_sha256: {digest}\n") == [Tenant("key-" + digest[:8])]


def test_a_yaml_list_at_the_top_is_a_key_file_too(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"- name: team-a\n  key: {LONG_A}\n")
    ring = KeyRing(key_file=str(path))
    assert ring.identify(LONG_A.encode()) == Tenant("team-a", label="team-a")
    assert ring.identify(LONG_B.encode()) is None


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("- name: x\n", "exactly one of `key` and `key_sha256`"),
        (f"- key: {LONG_A}\n  key_sha256: {'0' * 64}\n", "exactly one"),
        ("- key_sha256: abc\n", "64 hex digits"),
        (f"- key: {LONG_A}\n  rpm: -1\n", "`rpm` must be a whole number"),
        (f"- key: {LONG_A}\n  admin: yes please\n", "`admin` must be true or false"),
        (f"- key: {LONG_A}\n  colour: red\n", "unknown fields ['colour']"),
        (f"a:{LONG_A}\na:{LONG_B}\n", "used more than once"),
        (f"bad name:{LONG_A}\n", "a name is 1-64"),
        ("# nothing\n", "holds no key"),
    ],
)
def test_an_unusable_key_file_says_why(text: str, fragment: str) -> None:
    with pytest.raises(KeyFileError) as refused:
        parse_keys(text, "keys")
    assert fragment in str(refused.value)


def test_a_short_key_is_accepted_with_a_warning(caplog) -> None:
    with caplog.at_level(logging.WARNING, "gateway.tenancy.keys"):
        assert tenants("team-a:short\n")[0].name == "team-a"
    assert "team-a has 5 characters; use at least 32" in caplog.text
    assert "short" not in caplog.text  # the name, never the key


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def swap(path: Path, text: str) -> None:
    """Replace the file as a Kubernetes Secret volume does: a new file, then a rename."""
    fresh = path.with_suffix(".new")
    fresh.write_text(text)
    os.replace(fresh, path)


def test_a_removed_key_is_refused_once_the_poll_interval_has_passed(tmp_path: Path) -> None:
    path, clock = tmp_path / "keys", Clock()
    path.write_text(f"team-a:{LONG_A}\nteam-b:{LONG_B}\n")
    ring = KeyRing(key_file=str(path), poll_s=2.0, clock=clock)
    swap(path, f"team-b:{LONG_B}\n")
    clock.now = 1.0
    assert ring.identify(LONG_A.encode()) is not None  # not looked at yet
    clock.now = 2.0
    assert ring.identify(LONG_A.encode()) is None
    assert ring.identify(LONG_B.encode()).name == "team-b"


def test_a_symlink_swap_is_noticed(tmp_path: Path) -> None:
    # A Secret volume: `keys` -> `..data/keys`, and `..data` is a symlink to a dated folder.
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "keys").write_text(f"team-a:{LONG_A}\n")
    os.symlink("v1", tmp_path / "..data")
    os.symlink("..data/keys", tmp_path / "keys")
    clock = Clock()
    ring = KeyRing(key_file=str(tmp_path / "keys"), clock=clock)
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "keys").write_text(f"team-b:{LONG_B}\n")
    os.symlink("v2", tmp_path / "..data_tmp")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    clock.now = 5.0
    assert ring.identify(LONG_A.encode()) is None
    assert ring.identify(LONG_B.encode()).name == "team-b"


def test_a_broken_key_file_keeps_the_last_good_keys(tmp_path: Path, caplog) -> None:
    path, clock = tmp_path / "keys", Clock()
    path.write_text(f"team-a:{LONG_A}\n")
    ring = KeyRing(key_file=str(path), clock=clock)
    swap(path, "# emptied by mistake\n")
    clock.now = 5.0
    assert ring.identify(LONG_A.encode()).name == "team-a"
    assert "previous keys stay in force" in caplog.text


def test_the_server_refuses_a_removed_key_within_seconds_and_finishes_its_request(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys"
    path.write_text(f"team-a:{LONG_A}\nteam-b:{LONG_B}\n")
    settings = Settings(api_key_file=str(path))
    body = {"model": "fake", "input": "x"}
    with serving(settings, fake=FakeEngine(latency_s=1.0)) as client:
        auth = {"Authorization": f"Bearer {LONG_A}"}
        answers = []
        slow = threading.Thread(
            target=lambda: answers.append(client.post("/v1/embeddings", json=body, headers=auth))
        )
        slow.start()
        time.sleep(0.2)  # the request is in the engine
        swap(path, f"team-b:{LONG_B}\n")
        slow.join()
        assert answers[0].status_code == 200
        deadline = time.monotonic() + 5
        while client.get("/v1/models", headers=auth).status_code != 401:
            assert time.monotonic() < deadline, "the removed key is still accepted"
            time.sleep(0.2)
        other = {"Authorization": f"Bearer {LONG_B}"}
        assert client.get("/v1/models", headers=other).status_code == 200
