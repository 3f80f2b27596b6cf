"""Where photos and the index live: a local folder, or an object-storage URI (`s3://bucket/prefix`, and `gs://`,
`az://` where pyarrow handles them the same way).

This module owns every byte Glance reads from or writes to object storage outside LanceDB: listing a photo root,
reading a photo or a sidecar, the index's extras and its writer lease. LanceDB talks to the store itself, with the
options `lance_options` gives it.

Credentials and endpoints come from the standard environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL), then from storage options: LanceDB's keys (`aws_endpoint`,
`aws_access_key_id`, ...; `--storage-option KEY=VALUE` on the command line). Options reach a function in one of two
ways, so that code in another process (a Ray task) needs nothing but a picklable dict:
  - explicitly, as the `storage_options` argument every function here takes (None: only the two below);
  - process-wide, with `configure(options)`, which the command-line tools call once with their flags.
Explicit options win over configured ones, which win over the environment. Nothing here prints a secret: error
messages name the location and the endpoint, never a key, and `display` drops anything that looks like one.
"""
from __future__ import annotations

import functools
import os
import re
from urllib.parse import urlsplit

from .errors import GlanceError, UsageError

SCHEMES = ("s3", "gs", "az")
URI = re.compile(r"^(s3|gs|az)://([^/?#]+)(/[^?#]*)?$")
SECRET_KEYS = re.compile(r"secret|token|password|key$|sas", re.IGNORECASE)  # option names whose values are secret
# The environment as LanceDB's storage options (LanceDB reads them as given; pyarrow gets the same values).
ENV_OPTIONS = {"AWS_ACCESS_KEY_ID": "aws_access_key_id", "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
               "AWS_SESSION_TOKEN": "aws_session_token", "AWS_REGION": "aws_region",
               "AWS_DEFAULT_REGION": "aws_region", "AWS_ENDPOINT_URL": "aws_endpoint"}
CONNECT_TIMEOUT_S = 10  # an unreachable endpoint is reported in seconds, not after minutes of retries
READ_MAX = 1 << 30  # a photo in a bucket is read whole (one GET); beyond this it is refused, not buffered

_configured: dict[str, str] = {}


class StorageError(GlanceError):
    """Object storage refused or could not be reached (credentials, endpoint, bucket); the message is one line."""


# ----- names ------------------------------------------------------------------------------------------------
def is_uri(text) -> bool:
    return isinstance(text, str) and text.split("://", 1)[0] in SCHEMES and "://" in text


def normalize(uri: str) -> str:
    """`s3://bucket//a/b/` -> `s3://bucket/a/b`: the one spelling stored in the index's root column and meta."""
    found = URI.match(uri)
    if not found or "@" in found.group(2):
        raise UsageError(f"not an object-storage location: {display(uri)} (expected s3://bucket/prefix)")
    scheme, bucket, key = found.group(1), found.group(2), found.group(3) or ""
    parts = [p for p in key.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UsageError(f"{display(uri)}: '..' has no meaning in object storage")
    return f"{scheme}://{bucket}" + "".join("/" + p for p in parts)


def join(uri: str, relpath: str) -> str:
    return uri.rstrip("/") + "/" + relpath.lstrip("/")


def bucket_of(uri: str) -> str:
    return URI.match(uri).group(2)


def display(text: str) -> str:
    """A location for people and logs: no user info, query or fragment (where a key could hide)."""
    if not is_uri(text):
        return str(text)
    parts = urlsplit(text)
    return f"{parts.scheme}://{parts.hostname or parts.netloc.rsplit('@', 1)[-1]}{parts.path}"


# ----- options -------------------------------------------------------------------------------------------------
def parse_storage_options(pairs: list[str] | None) -> dict[str, str]:
    """`--storage-option KEY=VALUE` flags as a dict; a malformed one is a UsageError that never echoes a value."""
    options = {}
    for pair in pairs or []:
        key, equals, value = pair.partition("=")
        key = key.strip()
        if not equals or not key:
            raise UsageError("--storage-option must be KEY=VALUE, e.g. aws_region=eu-west-1")
        options[key] = value
    return options


def configure(options: dict[str, str] | None) -> None:
    """Process-wide storage options (the command-line flags); explicit `storage_options` arguments still win."""
    _configured.clear()
    _configured.update(options or {})


def lance_options(storage_options: dict | None = None) -> dict[str, str]:
    """Storage options for lancedb.connect: the environment, then configure()'s, then `storage_options`."""
    options = {}
    for env, key in ENV_OPTIONS.items():
        if os.environ.get(env) and key not in options:
            options[key] = os.environ[env]
    options.update(_configured)
    options.update(storage_options or {})
    endpoint = _first(options, "aws_endpoint", "endpoint", "aws_endpoint_url")
    if endpoint and endpoint.startswith("http://"):
        options.setdefault("allow_http", "true")  # object_store refuses plain http unless told
    return options


def _first(options: dict, *keys: str) -> str | None:
    return next((options[k] for k in keys if options.get(k)), None)


def endpoint_of(storage_options: dict | None = None) -> str | None:
    return _first(lance_options(storage_options), "aws_endpoint", "endpoint", "aws_endpoint_url")


# ----- pyarrow file systems ----------------------------------------------------------------------------------
def filesystem(uri: str, storage_options: dict | None = None):
    """(pyarrow FileSystem, path inside it) for `uri`. S3 gets every option; gs:// and az:// take pyarrow's own
    defaults, which read their standard environment."""
    options = lance_options(storage_options)
    scheme, rest = uri.split("://", 1)
    if scheme == "s3":
        return _s3(tuple(sorted(options.items()))), rest
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(uri if scheme != "az" else "abfs://" + rest)
    return fs, path


@functools.lru_cache(maxsize=8)
def _s3(items: tuple):
    import pyarrow.fs as pafs

    options = dict(items)
    endpoint = _first(options, "aws_endpoint", "endpoint", "aws_endpoint_url")
    kwargs = {"access_key": _first(options, "aws_access_key_id", "access_key_id"),
              "secret_key": _first(options, "aws_secret_access_key", "secret_access_key"),
              "session_token": _first(options, "aws_session_token", "session_token"),
              "region": _first(options, "aws_region", "region") or "us-east-1",
              "connect_timeout": CONNECT_TIMEOUT_S,
              "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3)}
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else "https://" + endpoint)
        kwargs.update(endpoint_override=parts.netloc + parts.path.rstrip("/"), scheme=parts.scheme)
    if not kwargs["access_key"]:
        kwargs.pop("secret_key"), kwargs.pop("session_token")  # pyarrow's own chain (instance roles, profiles)
    return pafs.S3FileSystem(**{k: v for k, v in kwargs.items() if v is not None})


def kind(uri: str, storage_options: dict | None = None) -> str | None:
    """'folder', 'file', or None when nothing is there. A prefix counts as a folder when objects lie below it."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri, storage_options)
    with storage_errors(uri, storage_options):
        info = fs.get_file_info(path)
    return {pafs.FileType.Directory: "folder", pafs.FileType.File: "file"}.get(info.type)


def list_files(uri: str, storage_options: dict | None = None) -> list[tuple[str, int, int]]:
    """Every object below `uri` as (relpath, size, mtime_ns), sorted by relpath. mtime is the last-modified time."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri, storage_options)
    with storage_errors(uri, storage_options):
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    base = path.rstrip("/") + "/"
    found = [(info.path[len(base):], info.size, info.mtime_ns or 0) for info in infos
             if info.type == pafs.FileType.File and info.path.startswith(base)]
    return sorted(found)


def stat(uri: str, storage_options: dict | None = None) -> tuple[int, int] | None:
    """(size, mtime_ns) of one object, None when it is not there."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri, storage_options)
    with storage_errors(uri, storage_options):
        info = fs.get_file_info(path)
    return (info.size, info.mtime_ns or 0) if info.type == pafs.FileType.File else None


def read_bytes(uri: str, storage_options: dict | None = None, limit: int = READ_MAX) -> bytes:
    """The whole object (at most `limit` bytes: the rest is not fetched). FileNotFoundError when it is not there;
    other failures raise StorageError (an OSError subclass is not used: callers tell them apart)."""
    fs, path = filesystem(uri, storage_options)
    with storage_errors(uri, storage_options):
        with fs.open_input_stream(path) as stream:
            return stream.read(limit)


def write_bytes(uri: str, data: bytes, storage_options: dict | None = None) -> None:
    """One PUT: readers see the old object or the new one, never part of one."""
    fs, path = filesystem(uri, storage_options)
    with storage_errors(uri, storage_options):
        with fs.open_output_stream(path) as out:
            out.write(data)


def delete(uri: str, storage_options: dict | None = None) -> None:
    fs, path = filesystem(uri, storage_options)
    with storage_errors(uri, storage_options):
        try:
            fs.delete_file(path)
        except FileNotFoundError:
            pass


def delete_tree(uri: str, storage_options: dict | None = None) -> None:
    for relpath, _, _ in list_files(uri, storage_options):
        delete(join(uri, relpath), storage_options)


def tree_size(uri: str, storage_options: dict | None = None) -> int:
    return sum(size for _, size, _ in list_files(uri, storage_options))


# ----- errors --------------------------------------------------------------------------------------------------
class storage_errors:
    """Object-storage failures as one StorageError line naming the location and the way out; a missing object
    stays FileNotFoundError (callers treat that as absence)."""

    def __init__(self, uri: str, storage_options: dict | None = None):
        self.uri, self.options = uri, storage_options

    def __enter__(self):
        return self

    def __exit__(self, kind_, exc, tb):
        if exc is None or isinstance(exc, FileNotFoundError) or not isinstance(exc, (OSError, ValueError,
                                                                                      RuntimeError)):
            return False
        raise StorageError(storage_error_message(exc, self.uri, self.options)) from None


ACCESS = re.compile(r"ACCESS_DENIED|INVALID_ACCESS_KEY_ID|InvalidAccessKeyId|SignatureDoesNotMatch|"
                    r"SIGNATURE_DOES_NOT_MATCH|AccessDenied|status: 403|Forbidden|Unauthorized|status: 401")
UNREACHABLE = re.compile(r"NETWORK_CONNECTION|Could not connect|Couldn't connect|ConnectError|Connection refused|"
                         r"tcp connect error|dns error|Could not resolve|timed out|\bTimeout\b", re.IGNORECASE)
NO_BUCKET = re.compile(r"NoSuchBucket|NO_SUCH_BUCKET|bucket does not exist")


def looks_like_storage_error(text: str) -> bool:
    return bool(ACCESS.search(text) or UNREACHABLE.search(text) or NO_BUCKET.search(text))


def storage_error_message(exc: BaseException | str, uri: str, storage_options: dict | None = None) -> str:
    """One line for a failure at `uri`: denied credentials, an unreachable endpoint, a missing bucket, or the
    store's own reason (shortened, with any configured secret blanked out)."""
    text = str(exc)
    where = display(uri)
    endpoint = endpoint_of(storage_options)
    if NO_BUCKET.search(text):  # the store's own answers first: a refusal's text may mention retries and timeouts
        return f"no such bucket for {where}: create it, or check the name and the endpoint"
    if ACCESS.search(text):
        return (f"access denied to {where}: check the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                f"or --storage-option) and their permissions")
    if UNREACHABLE.search(text):
        return (f"cannot reach the object store for {where} (endpoint {endpoint or 'the default'}): check "
                f"AWS_ENDPOINT_URL (or --storage-option aws_endpoint=...) and the network")
    return f"object storage error at {where}: {_redact(' '.join(text.split()), storage_options)[:200]}"


def _redact(text: str, storage_options: dict | None) -> str:
    for key, value in lance_options(storage_options).items():
        if value and len(value) >= 4 and SECRET_KEYS.search(key):
            text = text.replace(value, "***")
    return text


# ----- the command line ----------------------------------------------------------------------------------------
DB_HELP = ("index folder or object-storage URI, e.g. s3://bucket/glance "
           "(default: $GLANCE_DB or ~/.local/share/glance/index)")


def add_storage_flag(parser) -> None:
    """`--storage-option KEY=VALUE` (repeatable), beside every --db."""
    parser.add_argument("--storage-option", dest="storage_option", action="append", default=[], metavar="KEY=VALUE",
                        help="a LanceDB storage option for an index or photos in object storage, e.g. "
                             "aws_endpoint=http://127.0.0.1:9000 or aws_region=eu-west-1 (repeatable; credentials "
                             "and endpoint also come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, "
                             "AWS_ENDPOINT_URL)")


def configure_from(args) -> dict[str, str]:
    """The parsed flags' storage options, made process-wide (configure); returns them."""
    options = parse_storage_options(getattr(args, "storage_option", None))
    configure(options)
    return options
