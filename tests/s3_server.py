"""A real S3 server on 127.0.0.1 for the tests: moto in server mode, with authentication on.

The `s3` fixture (tests/conftest.py, one per session) starts `python -m moto.server` on a free port, makes an IAM
user whose key is the only one accepted (so a wrong key is refused as on AWS), and yields an `S3Server`: its
endpoint, the environment a Glance command needs (AWS_* variables), LanceDB storage options, and helpers to make
buckets and to put, copy, delete and list objects (boto3, which comes with moto). Nothing leaves 127.0.0.1.
"""
from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.app_server import free_port

# Requests moto serves before it checks signatures: the four IAM calls that make our user and its policy.
SETUP_REQUESTS = 4
REGION = "us-east-1"
START_TIMEOUT_S = 60.0


@dataclass
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    key_id: str
    secret: str
    process: subprocess.Popen
    _names: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def env(self) -> dict[str, str]:
        """The standard variables, as a user sets them for a Glance command."""
        return {"AWS_ACCESS_KEY_ID": self.key_id, "AWS_SECRET_ACCESS_KEY": self.secret, "AWS_REGION": REGION,
                "AWS_ENDPOINT_URL": self.endpoint}

    @property
    def storage_options(self) -> dict[str, str]:
        """The same as LanceDB storage options (for Store, IndexOptions.storage_options, read_file)."""
        return {"aws_endpoint": self.endpoint, "aws_access_key_id": self.key_id,
                "aws_secret_access_key": self.secret, "aws_region": REGION, "allow_http": "true"}

    def client(self, key_id: str | None = None, secret: str | None = None):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=key_id or self.key_id, aws_secret_access_key=secret or self.secret)

    def bucket(self, prefix: str = "glance") -> str:
        """A new, empty bucket with a name no other test of the session uses."""
        name = f"{prefix}-{next(self._names)}-{os.getpid()}"
        self.client().create_bucket(Bucket=name)
        return name

    def put(self, bucket: str, key: str, data: bytes | Path) -> None:
        body = data.read_bytes() if isinstance(data, Path) else data
        self.client().put_object(Bucket=bucket, Key=key, Body=body)

    def upload_tree(self, folder: Path, bucket: str, prefix: str = "") -> list[str]:
        """Every file under `folder` as objects under `prefix`; returns the keys."""
        keys = []
        for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            key = (prefix.rstrip("/") + "/" if prefix else "") + path.relative_to(folder).as_posix()
            self.put(bucket, key, path)
            keys.append(key)
        return keys

    def get(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def copy(self, bucket: str, source: str, target: str) -> None:
        self.client().copy_object(Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": source})

    def move(self, bucket: str, source: str, target: str) -> None:
        self.copy(bucket, source, target)
        self.delete(bucket, source)

    def delete(self, bucket: str, key: str) -> None:
        self.client().delete_object(Bucket=bucket, Key=key)

    def keys(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """key -> ETag of every object under `prefix` (a fingerprint of the bucket's contents)."""
        found, pages = {}, self.client().get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=bucket, Prefix=prefix):
            found.update({item["Key"]: item["ETag"] for item in page.get("Contents", [])})
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start(log: Path) -> S3Server:
    """Start moto on a free 127.0.0.1 port, wait until it answers, and make the one accepted key."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_REQUESTS)}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        env.pop(name, None)
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _listening(port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"moto did not start on {endpoint}:\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)
    try:
        key_id, secret = _make_user(endpoint)
    except BaseException:
        process.kill()
        raise
    return S3Server(endpoint, key_id, secret, process)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _make_user(endpoint: str) -> tuple[str, str]:
    import boto3

    iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="setup",
                       aws_secret_access_key="setup")
    iam.create_user(UserName="glance")
    key = iam.create_access_key(UserName="glance")["AccessKey"]
    policy = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
    arn = iam.create_policy(PolicyName="glance-all", PolicyDocument=policy)["Policy"]["Arn"]
    iam.attach_user_policy(UserName="glance", PolicyArn=arn)
    return key["AccessKeyId"], key["SecretAccessKey"]
