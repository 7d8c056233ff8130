"""``/ui/``: the web UI's static files, shipped in the package and served from memory.

Every file of ``llamaswap/ui/`` is read once, when the site is built, with its ETag and,
where it saves bytes, a gzip copy. Paths under ``/ui/`` whose last segment has no ``.``
(``/ui/models``, ``/ui/logs``) answer ``index.html`` so deep links load the app. The files
are public: the app itself asks for the API key and sends it with every data request.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from importlib import resources

import attrs
from twisted.web.resource import Resource
from twisted.web.server import Request

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".png": "image/png",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}
# The app's page: only its own scripts, styles and API calls; nothing inline, no frames.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'none'"
)
MIN_GZIP = 512


@attrs.frozen
class StaticFile:
    """One file held in memory: its bytes, type, ETag and (when smaller) gzip copy."""

    body: bytes
    content_type: str
    etag: str
    gzipped: bytes | None

    @classmethod
    def of(cls, name: str, body: bytes) -> StaticFile:
        """Build the served form of ``name`` with content ``body``."""
        suffix = name[name.rfind(".") :] if "." in name else ""
        content_type = TYPES.get(suffix) or mimetypes.guess_type(name)[0]
        digest = hashlib.sha256(body).hexdigest()[:20]
        packed = gzip.compress(body, 9, mtime=0) if len(body) >= MIN_GZIP else None
        if packed is not None and len(packed) > len(body) * 0.9:
            packed = None
        return cls(body, content_type or "application/octet-stream", digest, packed)


def load_files(package: str = "llamaswap", folder: str = "ui") -> dict[str, StaticFile]:
    """Every regular file of the package's UI folder, keyed by its name."""
    root = resources.files(package) / folder
    files: dict[str, StaticFile] = {}
    for entry in root.iterdir():
        if entry.is_file() and not entry.name.startswith((".", "__")):
            files[entry.name] = StaticFile.of(entry.name, entry.read_bytes())
    return files


def _accepts_gzip(request: Request) -> bool:
    accept = (request.getHeader(b"accept-encoding") or b"").decode("latin-1").lower()
    for part in accept.split(","):
        name, _, params = part.strip().partition(";")
        if name.strip() in ("gzip", "*"):
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


class UIResource(Resource):
    """Serves ``/ui/...`` and ``/favicon.ico`` from the files loaded at start."""

    isLeaf = True

    def __init__(self, files: dict[str, StaticFile] | None = None) -> None:
        """Serve ``files`` (by default the package's ``llamaswap/ui`` folder)."""
        super().__init__()
        self.files = load_files() if files is None else files

    def render(self, request: Request) -> bytes:
        """GET/HEAD only: a file, the app for a deep link, or 404."""
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, HEAD")
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"Method Not Allowed\n"
        path = request.uri.split(b"?", 1)[0].decode("latin-1")
        name = self.file_name(path)
        found = self.files.get(name) if name is not None else None
        if found is None:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"404 page not found\n"
        return self.serve(request, found, html=name == "index.html")

    @staticmethod
    def file_name(path: str) -> str | None:
        """The file a request path names: ``index.html`` for the app's own routes."""
        if path == "/favicon.ico":
            return "favicon.ico"
        rest = path.removeprefix("/ui/")
        if rest == path:
            return None
        last = rest.rsplit("/", 1)[-1]
        if "." not in last:
            return "index.html"
        if "/" in rest:
            return None
        return rest

    @staticmethod
    def serve(request: Request, found: StaticFile, html: bool) -> bytes:
        """Write ``found`` with caching headers: 304 when the client's copy is current."""
        body, etag = found.body, found.etag
        if found.gzipped is not None:
            request.setHeader(b"vary", b"Accept-Encoding")
            if _accepts_gzip(request):
                body, etag = found.gzipped, etag + "-gz"
                request.setHeader(b"content-encoding", b"gzip")
        quoted = f'"{etag}"'.encode()
        request.setHeader(b"etag", quoted)
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        if html:
            request.setHeader(b"content-security-policy", CSP.encode())
            request.setHeader(b"referrer-policy", b"no-referrer")
        match = request.getHeader(b"if-none-match") or b""
        if quoted in [tag.strip() for tag in match.split(b",")] or match.strip() == b"*":
            request.setResponseCode(304)
            return b""
        request.setHeader(b"content-type", found.content_type.encode())
        return body
