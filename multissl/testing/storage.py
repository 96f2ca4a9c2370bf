"""Object storage on this machine, for tests and benchmarks of shards read from a URL: a local S3 server (moto, a
dev dependency) on 127.0.0.1, with a bucket, and the environment that points boto3 — LitData's S3 client — at it.
Nothing leaves the machine.

    with local_s3("data") as s3:
        s3.upload(folder, "photos")          # s3://data/photos
        ...                                  # os.environ points at the server until the block ends"""
import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from multissl.errors import require


class Bucket:
    def __init__(self, client, name: str, endpoint: str, env: dict):
        self.client, self.name, self.endpoint, self.env = client, name, endpoint, env

    def upload(self, folder, prefix: str) -> str:
        """Every file under `folder` to s3://<bucket>/<prefix>/…, as `aws s3 sync` would; returns that URL."""
        for f in sorted(Path(folder).rglob("*")):
            if f.is_file():
                self.client.upload_file(str(f), self.name, f"{prefix}/{f.relative_to(folder).as_posix()}")
        return f"s3://{self.name}/{prefix}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_s3(bucket: str = "data", timeout: float = 30):
    """A moto S3 server on 127.0.0.1 for the block, a bucket in it, and os.environ's AWS_* variables pointing at it
    (restored after): yields a Bucket (its `env` for child processes)."""
    require("moto", "a local S3 server", "pip install 'moto[server]'")
    boto3 = require("boto3", "a local S3 server", "pip install boto3")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"the local S3 server did not start on port {port}") from None
                time.sleep(0.05)
        os.environ.update(env)
        client = boto3.client("s3")
        client.create_bucket(Bucket=bucket)
        yield Bucket(client, bucket, env["AWS_ENDPOINT_URL"], env)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.terminate()
        server.wait(30)
