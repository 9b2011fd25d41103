"""Test runner behind ``scripts/test``.

Starts throwaway PostgreSQL and Redis servers unless ``ESTUARY_TEST_POSTGRES``
and ``ESTUARY_TEST_REDIS`` name existing ones, runs trial with the asyncio
reactor, stops the servers, and ends with one line ``trial: N passed, N
failed, N skipped`` derived from trial's own summary, exiting non-zero on any
failure or when no test ran.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def summarise(output: str) -> tuple[int, int, int, int]:
    """(ran, passed, failed, skipped) from trial's closing lines."""
    ran_m = re.findall(r"^Ran (\d+) tests? in ", output, re.M)
    ran = int(ran_m[-1]) if ran_m else 0
    counts: dict[str, int] = {}
    status = re.findall(r"^(PASSED|FAILED) \((.*)\)\s*$", output, re.M)
    if status:
        for part in status[-1][1].split(","):
            k, _, v = part.strip().partition("=")
            if v.isdigit():
                counts[k] = int(v)
    passed = counts.get("successes", 0)
    failed = counts.get("failures", 0) + counts.get("errors", 0) + counts.get("unexpectedSuccesses", 0)
    skipped = counts.get("skips", 0) + counts.get("expectedFailures", 0)
    return ran, passed, failed, skipped


def main(argv: list[str]) -> int:
    from workers.embedded import EmbeddedPostgres, EmbeddedRedis

    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("ESTUARY_REQUIRE_C", "1")
    services = []
    tmp = tempfile.mkdtemp(prefix="estuary-test-")
    os.chmod(tmp, 0o755)
    try:
        if not env.get("ESTUARY_TEST_POSTGRES"):
            pg = EmbeddedPostgres(os.path.join(tmp, "postgres"))
            pg.start()
            services.append(pg)
            env["ESTUARY_TEST_POSTGRES"] = pg.dsn
            print(f"test PostgreSQL on 127.0.0.1:{pg.port}", flush=True)
        if not env.get("ESTUARY_TEST_REDIS"):
            rd = EmbeddedRedis(os.path.join(tmp, "redis"))
            rd.start()
            services.append(rd)
            env["ESTUARY_TEST_REDIS"] = rd.url
            print(f"test Redis on 127.0.0.1:{rd.port}", flush=True)
        tests = argv or ["tests"]
        cmd = [sys.executable, "-m", "twisted.trial", "--reactor=asyncio", "--temp-directory", os.path.join(tmp, "_trial_temp"), *tests]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line)
        code = proc.wait()
    finally:
        for s in reversed(services):
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    ran, passed, failed, skipped = summarise("".join(lines))
    print(f"trial: {passed} passed, {failed} failed, {skipped} skipped", flush=True)
    if ran == 0:
        print("no test ran", file=sys.stderr)
        return 1
    return code if code != 0 else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
