"""Named API keys, read from `--api-key` and a key file that is re-read when it changes.

A key file is either one key a line (`key`, or `name:key`), or YAML: a list of entries (or a
mapping whose `keys` holds that list), each with `key` or `key_sha256` (the hex SHA-256 of the
key, so that a Secret need not hold the key itself), and optionally `name`, `rpm`, `tpm`,
`batch_bytes` and `admin`. A key without a name is named `key-` and the first 8 hex digits
of its SHA-256: stable, and safe to show in logs and metrics.

Keys are compared as SHA-256 digests with `hmac.compare_digest`, against every known key
with no early exit, so neither the time nor the length says anything about a key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from starlette.types import Scope

log = logging.getLogger(__name__)

# Shorter keys are accepted (a warning at load): OpenAI's own keys are far longer.
MIN_KEY_CHARS = 32
# How often the key file's identity (inode, mtime, size) is looked at; a removed key is
# refused at most this long after the file changed.
RELOAD_POLL_S = 2.0
# Distinct names that get a metrics label of their own; later ones share `OTHER_LABEL`, so
# that a key file rewritten again and again cannot grow the label set without bound.
MAX_LABELS = 100
OTHER_LABEL = "other"
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ENTRY_FIELDS = {"name", "key", "key_sha256", "rpm", "tpm", "batch_bytes", "admin"}
_SCOPE_KEY = "gateway.tenant"


class KeyFileError(ValueError):
    """A key file that cannot be used (the message says where and why)."""


@dataclass(frozen=True)
class Tenant:
    """Who a request comes from: a key's name, its per-key limits (None: the server's
    default) and whether it sees every tenant's files and batches (`admin`)."""

    name: str
    admin: bool = False
    rpm: int | None = None
    tpm: int | None = None
    batch_bytes: int | None = None
    label: str = ""


# The one caller of a gateway without keys: it owns and sees everything, as before keys had
# names; files and batches it creates have the empty owner.
ANONYMOUS = Tenant(name="", admin=True, label="")

# The caller of the request being served, for code that has no request at hand (the
# embedding cache); a batch line runs as the batch's owner. None outside both.
current_tenant: ContextVar[Tenant | None] = ContextVar("current_tenant", default=None)


def tenant_of(scope: Scope) -> Tenant:
    """The caller the authentication middleware identified (ANONYMOUS without keys)."""
    tenant: Tenant = scope.get(_SCOPE_KEY, ANONYMOUS)
    return tenant


def identified(scope: Scope) -> Tenant | None:
    """The caller, or None for a request on a public path (nobody was asked for a key)."""
    tenant: Tenant | None = scope.get(_SCOPE_KEY)
    return tenant


def set_tenant(scope: Scope, tenant: Tenant) -> None:
    scope[_SCOPE_KEY] = tenant


@dataclass(frozen=True)
class KeyEntry:
    """One configured key: its SHA-256 digest and the tenant it stands for."""

    digest: bytes
    tenant: Tenant


def key_name(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


def parse_keys(text: str, source: str) -> list[KeyEntry]:
    """The keys of a key file's `text` (either format); KeyFileError names `source`."""
    meaningful = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    if not meaningful:
        raise KeyFileError(f"{source} holds no key (authentication would silently be off)")
    first = meaningful[0]
    if first.startswith("- ") or first == "-" or first == "keys:":
        entries = _yaml_entries(text, source)
    else:
        entries = [_line_entry(line, source) for line in meaningful]
    names = [entry.tenant.name for entry in entries]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise KeyFileError(f"{source}: the names {duplicates} are used more than once")
    return entries


def static_keys(keys: Iterable[str]) -> list[KeyEntry]:
    """Entries for keys given without a file (`--api-key`): named by their hash."""
    return [_entry(key=key, source="--api-key") for key in keys]


def _line_entry(line: str, source: str) -> KeyEntry:
    name, colon, key = line.partition(":")
    if not colon:
        return _entry(key=line, source=source)
    return _entry(name=name.strip(), key=key.strip(), source=source)


def _yaml_entries(text: str, source: str) -> list[KeyEntry]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise KeyFileError(f"{source} is not valid YAML: {exc}") from None
    if isinstance(data, Mapping):
        data = data.get("keys")
    if not isinstance(data, list) or not data:
        raise KeyFileError(f"{source}: expected a list of key entries")
    return [_yaml_entry(item, f"{source} entry {i}", i) for i, item in enumerate(data, 1)]


def _yaml_entry(item: Any, where: str, number: int) -> KeyEntry:
    if not isinstance(item, Mapping):
        raise KeyFileError(f"{where}: must be a mapping with `key` or `key_sha256`")
    unknown = sorted(set(map(str, item)) - _ENTRY_FIELDS)
    if unknown:
        raise KeyFileError(f"{where}: unknown fields {unknown}")
    limits = {field: _count(item.get(field), f"{where}: `{field}`") for field in _LIMITS}
    admin = item.get("admin", False)
    if not isinstance(admin, bool):
        raise KeyFileError(f"{where}: `admin` must be true or false")
    return _entry(
        name=item.get("name"),
        key=item.get("key"),
        key_sha256=item.get("key_sha256"),
        admin=admin,
        source=where,
        **limits,
    )


_LIMITS = ("rpm", "tpm", "batch_bytes")


def _count(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise KeyFileError(f"{where} must be a whole number, 0 or more")
    return value


def _entry(
    *,
    source: str,
    name: Any = None,
    key: Any = None,
    key_sha256: Any = None,
    admin: bool = False,
    rpm: int | None = None,
    tpm: int | None = None,
    batch_bytes: int | None = None,
) -> KeyEntry:
    if (key is None) == (key_sha256 is None):
        raise KeyFileError(f"{source}: give exactly one of `key` and `key_sha256`")
    if key is not None:
        if not isinstance(key, str) or not key.strip() or key != key.strip():
            raise KeyFileError(f"{source}: a key must be a string without surrounding blanks")
        if len(key) < MIN_KEY_CHARS:
            log.warning(
                "%s: the key %s has %d characters; use at least %d random ones",
                source,
                name or key_name(key),
                len(key),
                MIN_KEY_CHARS,
            )
        digest = hashlib.sha256(key.encode()).digest()
        default_name = key_name(key)
    else:
        if not isinstance(key_sha256, str) or not _SHA256.fullmatch(key_sha256.lower()):
            raise KeyFileError(f"{source}: `key_sha256` must be 64 hex digits")
        digest = bytes.fromhex(key_sha256)
        default_name = "key-" + key_sha256.lower()[:8]
    if name is None:
        name = default_name
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name == OTHER_LABEL:
        raise KeyFileError(
            f"{source}: a name is 1-64 of A-Z a-z 0-9 . _ - (and not `{OTHER_LABEL}`)"
        )
    tenant = Tenant(name, admin=admin, rpm=rpm, tpm=tpm, batch_bytes=batch_bytes)
    return KeyEntry(digest, tenant)


def read_key_file(path: str) -> list[KeyEntry]:
    """The keys of the file at `path`; KeyFileError when it cannot be read or used."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror}") from exc
    return parse_keys(text, path)


class KeyRing:
    """The keys a request may present: static ones, and those of a key file that is
    re-read when its identity changes (looked at no more often than every `poll_s`, on the
    request path: one `stat` of the resolved path). A Kubernetes Secret volume updates by
    swapping a symlink, which changes the resolved file's inode. A file that becomes
    unreadable or invalid keeps the last good keys, with an error in the log."""

    def __init__(
        self,
        keys: Iterable[str] = (),
        key_file: str | None = None,
        *,
        poll_s: float = RELOAD_POLL_S,
        clock: Any = time.monotonic,
    ) -> None:
        self._static = static_keys(keys)
        self._file = key_file
        self._poll_s = poll_s
        self._clock = clock
        self._checked = clock()
        self._identity: tuple[int, int, int, int] | None = None
        self._labels: dict[str, str] = {}
        self._entries: list[KeyEntry] = []
        file_entries = []
        if key_file is not None:
            self._identity = self._stat()
            file_entries = read_key_file(key_file)
        self._install(file_entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    @property
    def tenants(self) -> list[Tenant]:
        return [entry.tenant for entry in self._entries]

    def identify(self, presented: bytes) -> Tenant | None:
        """The tenant whose key is `presented`, or None."""
        self._maybe_reload()
        digest = hashlib.sha256(presented).digest()
        found: Tenant | None = None
        for entry in self._entries:  # no early exit: the time does not say which key matched
            if hmac.compare_digest(digest, entry.digest):
                found = entry.tenant
        return found

    def _install(self, file_entries: list[KeyEntry]) -> None:
        entries = [*self._static, *file_entries]
        seen: set[str] = set()
        for entry in entries:
            if entry.tenant.name in seen:
                raise KeyFileError(f"the key name {entry.tenant.name} is used more than once")
            seen.add(entry.tenant.name)
        self._entries = [
            KeyEntry(e.digest, replace(e.tenant, label=self._label(e.tenant.name))) for e in entries
        ]

    def _label(self, name: str) -> str:
        if name not in self._labels:
            self._labels[name] = name if len(self._labels) < MAX_LABELS else OTHER_LABEL
        return self._labels[name]

    def _stat(self) -> tuple[int, int, int, int] | None:
        assert self._file is not None
        try:
            # The resolved file: a symlink swap changes it even when the link's own stat
            # does not.
            info = os.stat(os.path.realpath(self._file))
        except OSError:
            return None
        return (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)

    def _maybe_reload(self) -> None:
        if self._file is None:
            return
        now = self._clock()
        if now - self._checked < self._poll_s:
            return
        self._checked = now
        identity = self._stat()
        if identity == self._identity:
            return
        self._identity = identity
        try:
            entries = read_key_file(self._file)
            before = {entry.tenant.name for entry in self._entries}
            self._install(entries)
        except KeyFileError as exc:
            log.error("key file not reloaded, the previous keys stay in force: %s", exc)
            return
        after = {entry.tenant.name for entry in self._entries}
        log.info(
            "key file reloaded: %d keys (added %s, removed %s)",
            len(self._entries),
            sorted(after - before) or "none",
            sorted(before - after) or "none",
        )
