"""A real local Ray cluster for the tests: one head node on 127.0.0.1, started once per session.

`glance index --ray ADDRESS` joins it the way it joins any cluster; the tests never start Ray in their own
process, so each run is a driver of its own, as a user's is.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.app_server import free_port

RAY = Path(sys.executable).with_name("ray")
CPUS = 3  # two embedding actors and one decoding task at a time, on a 2-core machine


@dataclass
class RayCluster:
    address: str  # host:port of the head's GCS, what `--ray` takes
    process: subprocess.Popen
    env: dict  # what a driver needs to join: the cluster's token (Ray's default for `ray start`), no usage stats

    def embedding_actors(self) -> list[psutil.Process]:
        """The worker processes that hold an embedding model (Ray names them after the actor class)."""
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            if any("Embedder" in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        return found


def start(temp_dir: Path, cpus: int = CPUS) -> RayCluster:
    port = free_port()
    token = temp_dir / "auth_token"  # not ~/.ray/auth_token: the tests leave the user's home alone
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    joining = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    env = {**os.environ, **joining}
    process = subprocess.Popen(
        [str(RAY), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         f"--num-cpus={cpus}", "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={temp_dir}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    address = f"127.0.0.1:{port}"
    _wait_until_up(address, process, env)
    return RayCluster(address, process, joining)


def _wait_until_up(address: str, process: subprocess.Popen, env: dict, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ray start failed: {process.stderr.read()[-2000:]}")
        status = subprocess.run([str(RAY), "status", f"--address={address}"], capture_output=True, text=True,
                                env=env)
        if status.returncode == 0 and "CPU" in status.stdout:
            return
        time.sleep(1)
    raise RuntimeError(f"the Ray head at {address} did not come up in {timeout} s")


def stop(cluster: RayCluster) -> None:
    """`ray start --block` stops every process it started when it is terminated."""
    cluster.process.terminate()
    try:
        cluster.process.wait(30)
    except subprocess.TimeoutExpired:
        cluster.process.kill()
        cluster.process.wait()
