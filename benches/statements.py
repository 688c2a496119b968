#!/usr/bin/env python3
"""Counts the SQL statements a node runs per order and payment.

Usage: python3 benches/statements.py BAZAAR_BINARY [ORDERS]

Starts `BAZAAR_BINARY serve` alone (embedded default, a data directory of its own, port 0) with
sqlx's statement log on, signs up a seller and a buyer, lists a product, then places and pays
ORDERS orders (20 by default) one after the other, 0.3 s apart, so that no group commit or relay
batch shares anything. It prints the statements logged from the first order on, per order and
payment, by their first words. The node is stopped at the end; everything is on 127.0.0.1.
"""
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

PASSWORD = "bench-password-1"


def main():
    binary = sys.argv[1]
    orders = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    data = tempfile.mkdtemp(prefix="bazaar-statements-")
    log_path = os.path.join(data, "node.log")
    env = dict(
        os.environ,
        BAZAAR_LOG="info,sqlx::query=debug",
        BAZAAR_AUTH_ATTEMPTS_PER_MINUTE_PER_CLIENT="100000",
        BAZAAR_AUTH_ATTEMPTS_PER_SECOND="100000",
    )
    with open(log_path, "w+") as log:
        node = subprocess.Popen(
            [binary, "serve", "--node", "n1", "--http-addr", "127.0.0.1:0", "--data-dir", data],
            stdout=subprocess.PIPE, stderr=log, env=env, text=True,
        )
        try:
            addr = ready_address(node)
            counts = drive(addr, orders, log_path)
        finally:
            node.terminate()
            node.wait(timeout=30)
    shutil.rmtree(data, ignore_errors=True)
    total = sum(counts.values())
    print(f"{total} statements for {orders} orders and payments: {total / orders:.1f} each")
    for summary, count in counts.most_common(40):
        print(f"{count / orders:6.2f}  {summary}")


def ready_address(node):
    deadline = time.monotonic() + 60
    for line in node.stdout:
        if "bazaar ready" in line:
            return re.search(r"127\.0\.0\.1:\d+", line).group(0)
        if time.monotonic() > deadline:
            break
    sys.exit("the node printed no ready line")


def drive(addr, orders, log_path):
    def call(method, path, body=None, token=None, key=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://{addr}{path}", method=method, data=data)
        req.add_header("content-type", "application/json")
        if token:
            req.add_header("authorization", f"Bearer {token}")
        if key:
            req.add_header("idempotency-key", key)
        with urllib.request.urlopen(req, timeout=10) as reply:
            return json.loads(reply.read() or b"null")

    def user(role):
        email = f"{role.lower()}-{uuid.uuid4().hex}@statements.example"
        call("POST", "/auth/signup", {"email": email, "password": PASSWORD, "role": role, "name": "s"})
        return call("POST", "/auth/login", {"email": email, "password": PASSWORD})["accessToken"]

    seller, buyer = user("SELLER"), user("BUYER")
    body = {"name": "item", "price": 1000, "stock": 1000, "description": "statement count"}
    product = call("POST", "/products", body, seller)["id"]
    time.sleep(2)
    start = os.path.getsize(log_path)
    for _ in range(orders):
        order = call("POST", "/orders", {"productId": product, "quantity": 1}, buyer, str(uuid.uuid4()))["id"]
        payment = {"orderId": order, "method": {"type": "card", "token": "tok_ok"}}
        call("POST", "/payments", payment, buyer, str(uuid.uuid4()))
        time.sleep(0.3)
    time.sleep(2)
    with open(log_path) as log:
        log.seek(start)
        text = log.read()
    counts = collections.Counter()
    for line in text.splitlines():
        if "sqlx::query" in line:
            found = re.search(r'summary="([^"]*)"', line)
            counts[(found.group(1) if found else line)[:60]] += 1
    return counts


if __name__ == "__main__":
    main()
