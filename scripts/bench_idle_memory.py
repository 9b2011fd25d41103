"""Resident memory of idle instances: starts a stack and reads each /metrics.

    .venv/bin/python scripts/bench_idle_memory.py [--layout single|three|eight]

Uses the embedded PostgreSQL and Redis of `estuary stack` (a throwaway data
directory), waits until every instance is ready and has idled a few
seconds, prints ``process_resident_memory_bytes`` per instance, then stops.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from workers.embedded import free_port  # noqa: E402
from workers.generate import generate_config  # noqa: E402


def fetch(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except Exception as e:  # noqa: BLE001 - a benchmark polling loop
        code = getattr(e, "code", None)
        return code or 0, ""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layout", default="eight", choices=["single", "three", "eight"])
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="estuary-bench-")
    os.chmod(tmp, 0o755)
    text = generate_config("localhost", args.layout)
    # Fresh ports so the benchmark never collides with a running stack.
    for port in sorted(set(re.findall(r"127\.0\.0\.1:(\d+)", text)), reverse=True):
        text = text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}")
    text = text.replace('public_baseurl: "http://localhost:8008/"', f'public_baseurl: "http://localhost:8008/"\ndata_dir: "{tmp}/data"')
    path = os.path.join(tmp, "homeserver.yaml")
    with open(path, "w") as f:
        f.write(text)
    import yaml

    config = yaml.safe_load(text)
    instances = {name: spec["listen"] for name, spec in config["instances"].items()}
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "workers", "stack", "--config", path], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if all(fetch(f"http://{addr}/_estuary/ready")[0] == 200 for addr in instances.values()):
                break
            time.sleep(0.2)
        else:
            print("stack did not become ready", file=sys.stderr)
            return 1
        time.sleep(args.idle_seconds)
        total = 0.0
        print(f"{'instance':<12} {'roles':<60} RSS MB")
        for name, addr in instances.items():
            _, metrics = fetch(f"http://{addr}/metrics")
            m = re.search(r"^process_resident_memory_bytes (\S+)$", metrics, re.M)
            rss = float(m.group(1)) / 1e6 if m else float("nan")
            total += rss
            roles = ",".join(config["instances"][name]["roles"])
            print(f"{name:<12} {roles[:60]:<60} {rss:6.1f}")
        print(f"{'total':<73} {total:6.1f}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
