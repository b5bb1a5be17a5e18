"""Result assets of Raku Sight predictions: files under `results/<request id>/` in the server's
blob store (the data directory, or the object store), their owners, signed links and retention.

Each request that stores anything gets a fresh folder, a random uuid4 hex (never the client's
X-Request-ID: a client could name another's folder) holding `owner.json` (the key that made it)
and, per file, `<index>-annotated.png` and `<index>-output.json`. An `object_path` is the key in
the store. A signed link is `/api/v1/inference/assets/<object_path>?expires=…&signature=…`,
made with the server's URL-signing secret (jobs/signing.py); it needs no key until it expires.
Folders older than `raku_asset_retention_hours` are purged by the surface's periodic sweep, and
refused (404) from then on even before the sweep has run.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from dataclasses import dataclass

from batchvision.accounts.scoping import Principal
from batchvision.core.errors import BatchVisionError, ErrorCode, echo
from batchvision.jobs.blobs import BlobNotFound, Blobs
from batchvision.jobs.signing import UrlSigner

ROOT = "results/"
OWNER = "owner.json"
ASSET_ROUTE = "/api/v1/inference/assets/"
_PATH = re.compile(r"results/([0-9a-f]{32})/([0-9]{1,3}-(?:annotated\.png|output\.json))", re.ASCII)
MEDIA_TYPES = {".png": "image/png", ".json": "application/json"}


def asset_not_found(path: str) -> BatchVisionError:
    return BatchVisionError(ErrorCode.NOT_FOUND, f"asset '{echo(path)}' not found")


def media_type(path: str) -> str:
    return MEDIA_TYPES[path[path.rfind(".") :]]


@dataclass(frozen=True)
class AssetFolder:
    """Where one request's files go."""

    blobs: Blobs
    request_id: str

    def put(self, name: str, data: bytes) -> str:
        key = f"{ROOT}{self.request_id}/{name}"
        self.blobs.put_bytes(key, data)
        return key


class Assets:
    def __init__(self, blobs: Blobs, signer: UrlSigner, retention: dt.timedelta) -> None:
        self.blobs = blobs
        self.signer = signer
        self.retention = retention

    def new_folder(self, principal: Principal) -> AssetFolder:
        """A fresh folder owned by `principal` (blocking: a small file write)."""
        folder = AssetFolder(self.blobs, uuid.uuid4().hex)
        folder.put(OWNER, json.dumps({"key_id": principal.key_id}).encode())
        return folder

    def _owner_key(self, path: str) -> str:
        """The folder's owner record, for a stored and unexpired asset `path`; else 404."""
        match = _PATH.fullmatch(path)
        if match is None:
            raise asset_not_found(path)
        owner_key = f"{ROOT}{match.group(1)}/{OWNER}"
        owner = self.blobs.info(owner_key)
        if owner is None or self._expired(owner.modified) or self.blobs.info(path) is None:
            raise asset_not_found(path)
        return owner_key

    def check_owned(self, principal: Principal, path: str) -> None:
        """404 unless `path` is a stored, unexpired asset of `principal` (admins: anyone's)."""
        owner_key = self._owner_key(path)
        with self.blobs.open(owner_key) as file:
            key_id = json.loads(file.read())["key_id"]
        if not principal.owns(key_id):
            raise asset_not_found(path)

    def signed_path(self, path: str, expires_in_s: int, now: dt.datetime) -> str:
        """The server path and query of a link to `path`, valid for `expires_in_s` seconds."""
        route = ASSET_ROUTE + path
        expires_at = int(now.timestamp()) + expires_in_s
        return f"{route}?{self.signer.sign(route, expires_at=expires_at)}"

    def verified_path(self, route: str, expires: str | None, signature: str | None) -> str:
        """The object path a signed link names, or 403 for a bad or expired one."""
        if not self.signer.verify(route, expires, signature) or not route.startswith(ASSET_ROUTE):
            raise BatchVisionError(ErrorCode.FORBIDDEN, "the asset link is invalid or has expired")
        return route[len(ASSET_ROUTE) :]

    def read(self, path: str) -> bytes:
        """A signed asset's bytes (assets are small: one PNG of at most 1280 px, one JSON)."""
        self._owner_key(path)
        try:
            with self.blobs.open(path) as file:
                return file.read()
        except BlobNotFound:
            raise asset_not_found(path) from None

    def purge_expired(self, now: dt.datetime | None = None) -> int:
        """Delete every folder older than the retention; returns how many went."""
        cutoff = (now or dt.datetime.now(dt.UTC)) - self.retention
        purged = 0
        for info in self.blobs.list_prefix(ROOT):
            if info.key.endswith(f"/{OWNER}") and info.modified <= cutoff:
                self.blobs.delete_prefix(info.key[: -len(OWNER)])
                purged += 1
        return purged

    def _expired(self, created: dt.datetime) -> bool:
        return created <= dt.datetime.now(dt.UTC) - self.retention
