#!/usr/bin/env python3
"""Soak: the demo on a shared store, two instances, mixed load for a while, with the store
disturbed a few times; then checks that no session ever came back to life, that each
instance's memory stayed flat, and that the store shrank back to the sessions still alive.

    python3 scripts/soak.py --store redis --minutes 30
    python3 scripts/soak.py --store postgres --minutes 30

Loopback only. It starts what it disturbs itself: its own redis-server on a free port (so a
restart touches nobody else's), or its own database on the local PostgreSQL (dropped at the
end), and two demo instances on free ports; it stops only what it started. Bounded: the load
runs for --minutes, the drain for idle + retention + two purges, and every request has a
timeout. Exit status 0 when every check holds. Python's standard library only.
"""

import argparse
import http.client
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

IDLE_SECS = 20
ABSOLUTE_SECS = 60
RETENTION_SECS = 30
# How long RedisStore keeps an owned session's key past its horizon for a sign-in under way
# (`SIGN_IN_GRACE`), and an owner's index past its last session's absolute deadline.
GRACE_SECS = 60
SWEEP_SECS = 2
PURGE_SECS = 5
MAX_PER_USER = 3
KEEP_ALIVE = 5  # sessions kept alive through the drain: the store must shrink back to them
REQUEST_TIMEOUT = 10


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


class Demo:
    """One demo instance, started on a free port."""

    def __init__(self, binary, env):
        self.process = subprocess.Popen(
            [binary], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        deadline = time.time() + 60
        self.address = None
        while time.time() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            found = re.search(r"Demo listening on http://([0-9.]+:[0-9]+)", line)
            if found:
                self.address = found.group(1)
                break
        if self.address is None:
            raise RuntimeError("the demo did not start")
        # Keep draining its output so it never blocks on a full pipe.
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    def request(self, method, path, cookie=None, body=None):
        host, port = self.address.split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=REQUEST_TIMEOUT)
        headers = {"Accept": "application/json"}
        if cookie:
            headers["Cookie"] = cookie
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            return response.status, response.getheader("set-cookie"), data
        except OSError:
            return None, None, b""
        finally:
            connection.close()

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


class Ledger:
    """Every session cookie the load has seen, and when it was last known to be over."""

    def __init__(self):
        self.lock = threading.Lock()
        self.active = []  # cookies believed active
        self.over_at = {}  # cookie -> time its end was known (440 received, sign-out answered)
        self.revivals = []
        self.counts = {}

    def count(self, what):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def began(self, cookie):
        with self.lock:
            self.active.append(cookie)

    def over(self, cookie):
        now = time.monotonic()
        with self.lock:
            self.over_at.setdefault(cookie, now)
            if cookie in self.active:
                self.active.remove(cookie)

    def answered(self, cookie, sent_at, status):
        """A 200 to a request sent after the session was known to be over is a revival."""
        with self.lock:
            over = self.over_at.get(cookie)
            if status == 200 and over is not None and sent_at > over:
                self.revivals.append((cookie, status, sent_at - over))

    def pick(self):
        with self.lock:
            return random.choice(self.active) if self.active else None


def load(demos, ledger, users, stop):
    while not stop.is_set():
        demo = random.choice(demos)
        roll = random.random()
        if roll < 0.15:
            user = random.choice(users)
            status, set_cookie, _ = demo.request(
                "POST", "/login", body=f"username={user}&password=x"
            )
            if status == 303 and set_cookie:
                ledger.began(set_cookie.split(";")[0])
            ledger.count(f"sign-in {status}")
        elif roll < 0.75:
            cookie = ledger.pick()
            if cookie is None:
                continue
            sent_at = time.monotonic()
            status, _, _ = demo.request("GET", "/dashboard", cookie)
            ledger.answered(cookie, sent_at, status)
            if status == 440:
                ledger.over(cookie)
            ledger.count(f"activity {status}")
        elif roll < 0.82:
            cookie = ledger.pick()
            if cookie is None:
                continue
            status, _, _ = demo.request("POST", "/logout", cookie)
            if status == 303:
                ledger.over(cookie)
            ledger.count(f"sign-out {status}")
        elif roll < 0.85:
            cookie = ledger.pick()
            if cookie is None:
                continue
            status, _, _ = demo.request("POST", "/sessions/end-others", cookie)
            ledger.count(f"end-others {status}")
        elif roll < 0.95:
            # An id nobody was given: never anything but 440 (or 503 while the store is down).
            forged = f"id={random.getrandbits(128):032x}"
            status, _, _ = demo.request("GET", "/dashboard", forged)
            if status == 200:
                ledger.revivals.append((forged, status, 0))
            ledger.count(f"random id {status}")
        else:
            # Idle: a session simply left alone; it expires on its own.
            time.sleep(0.01)


def disturb(kind, state, log):
    if kind == "redis":
        port = state["redis_port"]
        subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)
        log("redis stopped")
        time.sleep(3)
        state["redis"] = start_redis(port)
        log("redis restarted")
    else:
        sql = (
            "BEGIN; LOCK TABLE tower_session_timeout IN ACCESS EXCLUSIVE MODE; "
            "SELECT pg_sleep(5); COMMIT;"
        )
        subprocess.run(psql(state["database"]) + ["-c", sql], capture_output=True)
        log("postgres table locked for 5 s")


def start_redis(port):
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() == b"PONG":
            return process
        time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def psql(database):
    return ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-q", "-t", "-A"]


def store_size(kind, state):
    if kind == "redis":
        out = subprocess.run(
            ["redis-cli", "-p", str(state["redis_port"]), "dbsize"], capture_output=True, text=True
        ).stdout
        return int(out.strip())
    out = subprocess.run(
        psql(state["database"]) + ["-c", "SELECT count(*) FROM tower_session_timeout"],
        capture_output=True,
        text=True,
    ).stdout
    return int(out.strip())


def main():
    # A SIGTERM (timeout, Ctrl-C's cousin) still stops what the soak started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(2))
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", choices=["redis", "postgres"], required=True)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--disturbances", type=int, default=3)
    parser.add_argument("--binary", default="target/release/examples/axum_login")
    args = parser.parse_args()

    started = time.monotonic()

    def log(message):
        print(f"[{time.monotonic() - started:7.1f} s] {message}", flush=True)

    state = {}
    demos = []
    audit_log = f"/tmp/soak-audit-{os.getpid()}.jsonl"
    try:
        if args.store == "redis":
            state["redis_port"] = free_port()
            state["redis"] = start_redis(state["redis_port"])
            url = f"redis://127.0.0.1:{state['redis_port']}/0"
        else:
            state["database"] = f"soak_{os.getpid()}"
            subprocess.run(psql("postgres") + ["-c", f"CREATE DATABASE {state['database']}"], check=True)
            url = f"postgres://postgres@127.0.0.1:5432/{state['database']}"
        env = dict(
            os.environ,
            PORT="0",
            SESSION_STORE=url,
            IDLE_TIMEOUT_SECS=str(IDLE_SECS),
            ABSOLUTE_TIMEOUT_SECS=str(ABSOLUTE_SECS),
            TOMBSTONE_RETENTION_SECS=str(RETENTION_SECS),
            EXPIRY_SWEEP_SECS=str(SWEEP_SECS),
            PURGE_SECS=str(PURGE_SECS),
            MAX_SESSIONS_PER_USER=str(MAX_PER_USER),
            AUDIT_LOG=audit_log,
            RUST_LOG="error",
        )
        demos = [Demo(args.binary, env), Demo(args.binary, env)]
        log(f"two demo instances on {args.store}: {[d.address for d in demos]}")

        ledger = Ledger()
        users = [f"user{i:03d}" for i in range(60)]
        stop = threading.Event()
        workers = [
            threading.Thread(target=load, args=(demos, ledger, users, stop), daemon=True)
            for _ in range(args.workers)
        ]
        for worker in workers:
            worker.start()

        duration = args.minutes * 60
        samples = {d.address: [] for d in demos}
        disturb_at = [duration * (i + 1) / (args.disturbances + 1) for i in range(args.disturbances)]
        load_started = time.monotonic()
        while (elapsed := time.monotonic() - load_started) < duration:
            for demo in demos:
                samples[demo.address].append((elapsed, rss_kib(demo.process.pid)))
            if disturb_at and elapsed >= disturb_at[0]:
                disturb_at.pop(0)
                threading.Thread(target=disturb, args=(args.store, state, log), daemon=True).start()
            time.sleep(5)
        stop.set()
        for worker in workers:
            worker.join(REQUEST_TIMEOUT * 2)
        log(f"load stopped; requests: {sum(ledger.counts.values())}")

        # The drain: a few "remember me" sessions kept alive; the rest expire (by their
        # absolute timeout at the latest), are announced and purged.
        kept = []
        for i in range(KEEP_ALIVE):
            status, set_cookie, _ = demos[i % 2].request(
                "POST", "/login", body=f"username=keeper{i}&password=x&remember=on"
            )
            if status == 303 and set_cookie:
                kept.append(set_cookie.split(";")[0])
        drain = ABSOLUTE_SECS + RETENTION_SECS + GRACE_SECS + 3 * PURGE_SECS + 2 * SWEEP_SECS
        drain_end = time.monotonic() + drain
        while time.monotonic() < drain_end:
            for i, cookie in enumerate(kept):
                demos[i % 2].request("GET", "/session/keepalive", cookie)
            time.sleep(IDLE_SECS / 4)
        size = store_size(args.store, state)

        def flat(points):
            values = [kib for _, kib in points if kib]
            fifth = max(1, len(values) // 5)
            # Skip the first fifth (warm-up: pools, caches); compare the second with the last.
            early = statistics.median(values[fifth:2 * fifth])
            late = statistics.median(values[-fifth:])
            return early, late

        memory = {address: flat(points) for address, points in samples.items()}
        ends = []
        if os.path.exists(audit_log):
            with open(audit_log) as audit:
                ends = [json.loads(line) for line in audit]
        reasons = {}
        for end in ends:
            reasons[end["reason"]] = reasons.get(end["reason"], 0) + 1

        result = {
            "store": args.store,
            "minutes": args.minutes,
            "requests": dict(sorted(ledger.counts.items())),
            "revivals": len(ledger.revivals),
            "memory_kib_second_fifth_vs_last_fifth": memory,
            "store_size_after_drain": size,
            "kept_alive": len(kept),
            "audit_log_ends": reasons,
        }
        print(json.dumps(result, indent=2))
        ok = True
        if ledger.revivals:
            print(f"FAIL: {len(ledger.revivals)} revivals, e.g. {ledger.revivals[:3]}")
            ok = False
        for address, (early, late) in memory.items():
            if late > early * 1.2 + 2048:
                print(f"FAIL: instance {address} grew from {early} KiB to {late} KiB")
                ok = False
        # Redis also holds each kept user's owner index: one key per kept session's owner.
        expected = len(kept) * (2 if args.store == "redis" else 1)
        if size > expected:
            print(f"FAIL: the store holds {size} records after the drain, expected {expected}")
            ok = False
        print("OK" if ok else "FAILED")
        return 0 if ok else 1
    finally:
        for demo in demos:
            demo.stop()
        if "redis" in state:
            subprocess.run(["redis-cli", "-p", str(state["redis_port"]), "shutdown", "nosave"], capture_output=True)
            state["redis"].wait(10)
        if "database" in state:
            subprocess.run(psql("postgres") + ["-c", f"DROP DATABASE IF EXISTS {state['database']} WITH (FORCE)"], capture_output=True)
        if os.path.exists(audit_log):
            os.remove(audit_log)


if __name__ == "__main__":
    sys.exit(main())
