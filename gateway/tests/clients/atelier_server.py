"""Starts the real `atelier serve` (every service and the embedded fal simulator) on
free loopback ports with a fresh data directory, for clients generated from the
platform's contracts to drive. ATELIER_BIN names the binary (default: the debug
build under CARGO_TARGET_DIR or ./target)."""

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

ADDRESSES = [
    "GATEWAY_ADDR",
    "ADMIN_ADDR",
    "AUTH_GRPC_ADDR",
    "IMAGE_GRPC_ADDR",
    "PROCESSING_GRPC_ADDR",
    "WORKFLOW_GRPC_ADDR",
    "USER_GRPC_ADDR",
    "FAL_SIM_ADDR",
]


def binary() -> Path:
    if os.environ.get("ATELIER_BIN"):
        return Path(os.environ["ATELIER_BIN"]).resolve()
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return (target / "debug" / "atelier").resolve()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Atelier:
    """One running platform; `stop()` ends it and removes its data."""

    def __init__(self) -> None:
        path = binary()
        if not path.exists():
            raise RuntimeError(f"no atelier binary at {path}: run `cargo build --workspace`")
        self.data_dir = Path(tempfile.mkdtemp(prefix="atelier-clients-"))
        self.addresses = {name: f"127.0.0.1:{free_port()}" for name in ADDRESSES}
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in {"DATABASE_URL", "REDIS_URL", "S3_BUCKET", "S3_ENDPOINT", "FAL_KEY", "PUBLIC_URL"}
        }
        env.update(self.addresses)
        env.update(
            DATA_DIR=str(self.data_dir),
            RUST_LOG=os.environ.get("RUST_LOG", "warn"),
            LOG_FORMAT="json",
            RATE_LIMIT_PER_IP="100000",
            RATE_LIMIT_PER_USER="100000",
            RATE_LIMIT_LOGIN_PER_IP="10000",
            WEB_DIR=str(ROOT / "gateway" / "web" / "dist"),
        )
        self.log_path = self.data_dir / "atelier.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [str(path), "serve"], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.base = f"http://{self.addresses['GATEWAY_ADDR']}"
        self.grpc_target = self.addresses["GATEWAY_ADDR"]
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"atelier serve exited ({self.process.returncode}):\n{self.log()}")
            try:
                with urllib.request.urlopen(f"http://{self.addresses['ADMIN_ADDR']}/readyz", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("atelier serve not ready after 120 s")
            time.sleep(0.3)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-8000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def png(width: int, height: int) -> bytes:
    """A small, valid RGB PNG with some structure, without any image library."""
    import struct
    import zlib

    rows = b"".join(
        b"\x00" + bytes(value for x in range(width) for value in (x * 255 // width, y * 255 // height, 128))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF")


def is_image(data: bytes) -> bool:
    return data.startswith(IMAGE_MAGIC)
