"""The one place redteam talks to a server: an OpenAI-compatible endpoint serving the model under
audit (vLLM, or a vendor's hosted model).

A served model is untrusted input like a model folder: every response is bounded in size
(``max_response_bytes``), parsed through ``core.untrusted.parse_json`` (depth, finite numbers)
and checked for the fields the caller needs; a response that breaks a bound is an
``EndpointError`` (one line, exit 2) and no verdict is built on it. Transient failures (429,
5xx, timeouts, a dropped connection) are retried with exponential backoff, honouring
``Retry-After``; requests run concurrently up to ``concurrency``; and every successful
response is kept in a cache keyed by the request, so that ``--resume`` and a re-run ask the
server nothing twice.

The API key is read from the environment variable the user names and sent only in the
``Authorization`` header: it is never part of a cache key, a cache file, an error message or
the run record. TLS certificates are verified (Python's default context).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

from redteam.core.errors import InputError
from redteam.core.fileio import atomic_write_bytes
from redteam.core.untrusted import parse_json

MAX_RESPONSE_BYTES = 16 * 1024 * 1024
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 60.0
T = TypeVar("T")
R = TypeVar("R")


class EndpointError(InputError):
    """The endpoint could not be used: unreachable after the retries, refused a request, or
    answered with something that is not a bounded, well-formed response (exit code 2)."""


class RequestRefused(EndpointError):
    """The server answered a request with a 4xx status other than 408 and 429: the request, not
    the server, is at fault (capability discovery reads these as "not offered")."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def public_url(url: str) -> str:
    """``url`` normalised, without a trailing slash; refused (``InputError``) unless it is an
    ``http``/``https`` URL with a host and no credentials, query or fragment: the key belongs
    in the environment variable named by ``--api-key-env``, never in a URL that would be
    recorded."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"{url}: not an http:// or https:// endpoint URL")
    if parts.username or parts.password:
        raise InputError("endpoint URL: holds credentials; give the API key in an environment "
                         "variable named by --api-key-env instead (the URL is recorded)")
    if parts.query or parts.fragment:
        raise InputError(f"{parts.scheme}://{parts.netloc}{parts.path}: the endpoint URL may not "
                         "have a query or a fragment")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def api_key_from(env_name: str | None) -> str | None:
    """The API key from the environment variable ``env_name`` (bad input when it is unset)."""
    if env_name is None:
        return None
    key = os.environ.get(env_name)
    if not key:
        raise InputError(f"--api-key-env {env_name}: that environment variable is not set")
    return key


class ResponseCache:
    """Responses on disk, one JSON file per request, keyed by the SHA-256 of the endpoint URL,
    the path and the request body (never the key)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    def _file(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> bytes | None:
        if self.folder is None:
            return None
        try:
            return self._file(key).read_bytes()
        except OSError:
            return None

    def put(self, key: str, body: bytes) -> None:
        if self.folder is None:
            return
        try:
            self._file(key).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self._file(key), body)
        except OSError as exc:
            raise EndpointError(f"{self.folder}: cannot write the response cache "
                                f"({exc.strerror or exc})") from None


class EndpointClient:
    """JSON over HTTP(S) to ``base_url`` (e.g. ``http://127.0.0.1:8000/v1``).

    ``root_url`` is the server's root (the base without ``/v1``), where vLLM serves its
    ``/tokenize`` and ``/detokenize`` extensions.
    """

    def __init__(self, base_url: str, *, api_key: str | None = None, concurrency: int = 4,
                 timeout_s: float = 120.0, retries: int = 4, backoff_s: float = 0.5,
                 max_response_bytes: int = MAX_RESPONSE_BYTES,
                 cache_dir: Path | None = None, quiet: bool = True) -> None:
        self.base_url = public_url(base_url)
        self.root_url = self.base_url.removesuffix("/v1")
        self._api_key = api_key
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_response_bytes = max_response_bytes
        self.cache = ResponseCache(cache_dir)
        self.quiet = quiet
        self.requests_sent = 0
        self._lock = threading.Lock()
        self._tls = ssl.create_default_context()

    def __repr__(self) -> str:  # never the key
        return f"EndpointClient({self.base_url!r})"

    # ------------------------------------------------------------------ one request
    def get(self, path: str, *, root: bool = False) -> Any:
        return self._request("GET", path, None, root=root, cached=False)

    def post(self, path: str, body: dict, *, root: bool = False, cached: bool = True) -> Any:
        return self._request("POST", path, body, root=root, cached=cached)

    def _url(self, path: str, root: bool) -> str:
        return f"{self.root_url if root else self.base_url}{path}"

    def _request(self, method: str, path: str, body: dict | None, *, root: bool,
                 cached: bool) -> Any:
        url = self._url(path, root)
        data = None if body is None else json.dumps(body, sort_keys=True).encode()
        key = hashlib.sha256(f"{method} {url}\n".encode() + (data or b"")).hexdigest()
        raw = self.cache.get(key) if cached else None
        if raw is not None:
            return self._parse(raw, url)
        raw = self._send(method, url, data)
        value = self._parse(raw, url)  # only a well-formed response is kept
        if cached:
            self.cache.put(key, raw)
        return value

    def _send(self, method: str, url: str, data: bytes | None) -> bytes:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(url, data=data, method=method, headers=headers)
            wait = self.backoff_s * 2 ** attempt * (1 + random.random() / 4)
            try:
                with self._lock:
                    self.requests_sent += 1
                with urllib.request.urlopen(request, timeout=self.timeout_s,
                                            context=self._tls) as response:
                    return self._bounded_read(response, url)
            except urllib.error.HTTPError as exc:
                problem = f"HTTP {exc.code} {_server_message(exc, self.max_response_bytes)}"
                if exc.code not in RETRY_STATUSES:
                    raise RequestRefused(f"{url}: {problem}", exc.code) from None
                wait = max(wait, _retry_after(exc))
            except TimeoutError:
                problem = f"no answer within {self.timeout_s:g} s"
            except (urllib.error.URLError, ConnectionError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                if isinstance(reason, ssl.SSLError):  # a certificate is not retried
                    raise EndpointError(f"{url}: TLS failed ({reason})") from None
                problem = f"cannot connect ({getattr(reason, 'strerror', None) or reason})"
            if attempt < self.retries:
                time.sleep(wait)
        raise EndpointError(f"{url}: {problem} (after {self.retries + 1} tries)")

    def _bounded_read(self, response, url: str) -> bytes:
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.max_response_bytes:
            raise EndpointError(f"{url}: response of {int(declared):,} bytes, over the bound of "
                                f"{self.max_response_bytes:,}; no verdict is built on it")
        raw = response.read(self.max_response_bytes + 1)
        if len(raw) > self.max_response_bytes:
            raise EndpointError(f"{url}: response over the bound of "
                                f"{self.max_response_bytes:,} bytes; no verdict is built on it")
        return raw

    @staticmethod
    def _parse(raw: bytes, url: str) -> Any:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise EndpointError(f"{url}: response is not UTF-8 text") from None
        try:
            return parse_json(text, f"{url}: response")
        except InputError as exc:
            raise EndpointError(str(exc)) from None

    # ------------------------------------------------------------------ many requests
    def map(self, function: Callable[[T], R], items: Iterable[T], desc: str) -> list[R]:
        """``function`` over ``items`` with up to ``concurrency`` requests in flight, in order;
        the first failure stops the rest and is raised."""
        items = list(items)
        progress = tqdm(total=len(items), desc=desc, disable=self.quiet or len(items) < 8)

        def one(item: T) -> R:
            result = function(item)
            progress.update(1)
            return result

        try:
            if self.concurrency <= 1 or len(items) <= 1:
                return [one(item) for item in items]
            with ThreadPoolExecutor(self.concurrency, thread_name_prefix="redteam-http") as pool:
                futures = [pool.submit(one, item) for item in items]
                try:
                    return [future.result() for future in futures]
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
        finally:
            progress.close()


def _retry_after(exc: urllib.error.HTTPError) -> float:
    value = exc.headers.get("Retry-After") if exc.headers else None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S)
    except (TypeError, ValueError):
        return 0.0


def _server_message(exc: urllib.error.HTTPError, limit: int) -> str:
    """The server's own words on a refused request, shortened to one line."""
    try:
        text = exc.read(min(limit, 4096)).decode("utf-8", "replace")
    except OSError:
        return exc.reason or ""
    try:
        detail = json.loads(text)
        if isinstance(detail, dict):
            detail = detail.get("error", detail)
            detail = detail.get("message", detail) if isinstance(detail, dict) else detail
        text = str(detail)
    except ValueError:
        pass
    text = " ".join(text.split())
    return (text[:200] + "…") if len(text) > 200 else text
