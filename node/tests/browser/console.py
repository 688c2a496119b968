"""Drives the web console in a real browser (Chromium, through Playwright) against the real binary.

Starts `bazaar serve --http-addr 127.0.0.1:0 --data-dir TMP` itself (the address comes from its
`bazaar ready ... http=ADDR` line), opens two browser contexts, a seller's and a buyer's, and runs
the flows the console exists for: sign-up, listing and editing a product, ordering, paying with
tok_ok (PAID arrives live) and tok_decline (CANCELLED arrives live), the seller watching orders come
in, chat with history paging, presence, typing and read receipts, and the cluster view. Every wait
has a deadline and the whole run has one; the node is killed at the end whatever happened.

    python console.py --bin target/debug/bazaar [--screenshots DIR] [--chromium /usr/bin/chromium]

Exits 0 when every check held; anything else is a failure (node/tests/browser.rs runs this).
"""

import argparse
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time

from playwright.sync_api import expect, sync_playwright

# The whole run, start of the node to its end; a hang anywhere ends in a failure, never a stuck test.
RUN_DEADLINE_SECS = 150
# One step's wait: a live update, a page render.
STEP_MS = 15_000
PASSWORD = "correct horse battery staple"
# Older chat history must need a second page: the console reads 50 messages a page.
SEEDED_MESSAGES = 55


def start_node(binary, data_dir, log_path):
    """Starts the node and returns (process, base URL) once it printed its ready line."""
    env = dict(os.environ)
    # Both accounts sign up and log in from 127.0.0.1, like every other test client.
    env.setdefault("BAZAAR_AUTH_ATTEMPTS_PER_MINUTE_PER_CLIENT", "1000000")
    log = open(log_path, "ab")
    process = subprocess.Popen(
        [binary, "serve", "--http-addr", "127.0.0.1:0", "--data-dir", data_dir],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        env=env,
    )
    lines = queue.Queue()

    def read():
        # Keeps reading after the ready line, so a chatty node never blocks on a full pipe.
        for raw in process.stdout:
            lines.put(raw.decode("utf-8", "replace"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 60
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("the node printed no ready line within 60 s")
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            continue
        if line is None:
            raise AssertionError("the node exited before it was ready")
        match = re.search(r"^bazaar ready .*\bhttp=(\S+)", line)
        if match:
            return process, f"http://{match.group(1)}"


def stop_node(process):
    if process.poll() is None:
        process.kill()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def watch(page, problems, who):
    """Records what would mean a broken page: script errors, CSP violations, failed requests."""
    page.on("pageerror", lambda error: problems.append(f"{who}: page error: {error}"))

    def console(message):
        # The browser logs a refused resource or a CSP violation as a console error; API errors
        # the app expects (a 4xx it shows to the user) are logged as failed loads, filtered out.
        if message.type == "error" and "Failed to load resource" not in message.text:
            problems.append(f"{who}: console error: {message.text}")

    page.on("console", console)


def shoot(page, directory, name):
    if directory:
        page.screenshot(path=os.path.join(directory, name))


def sign_up(page, base, email, name, role):
    page.goto(f"{base}/#/login")
    form = page.locator("#signup")
    form.locator("[name=email]").fill(email)
    form.locator("[name=password]").fill(PASSWORD)
    form.locator("[name=name]").fill(name)
    form.locator("[name=role]").select_option(role)
    form.get_by_role("button", name="Sign up").click()
    expect(page.locator("#me")).to_have_text(f"{name} ({role})")
    expect(page.locator("#socket-state")).to_have_text("online")


def mark_no_reload(page):
    """Sets a flag that a reload or navigation would lose: checked after a live update."""
    page.evaluate("window.__stillTheSamePage = true")


def assert_not_reloaded(page, who):
    assert page.evaluate("window.__stillTheSamePage === true"), f"{who}'s page was reloaded"


def order_row(page, nth_from_top):
    return page.locator("#orders tr[data-order-id]").nth(nth_from_top)


def place_and_pay(buyer, base, token):
    """Orders one Lamp from the product list and pays it with `token`; returns the order's id."""
    buyer.goto(f"{base}/#/products")
    row = buyer.locator("#products tr", has_text="Lamp")
    row.locator("button.order").click()
    expect(buyer).to_have_url(re.compile(r"#/orders$"))
    first = order_row(buyer, 0)
    expect(first.locator(".order-status")).to_have_text("ORDERED")
    order_id = first.get_attribute("data-order-id")
    mark_no_reload(buyer)
    first.locator("select[name=token]").select_option(token)
    first.locator("button.pay").click()
    return order_id


SEED_CHAT = """
async ([sellerId, count]) => {
  // Through the public API, as any client would: open the room, then post over the WebSocket
  // (the API posts chat messages only there), paced under the socket's rate limit.
  const session = JSON.parse(sessionStorage.getItem("bazaar.session"));
  const auth = { Authorization: `Bearer ${session.accessToken}`, "Content-Type": "application/json" };
  const room = await (await fetch("/chat/rooms", {
    method: "POST", headers: auth, body: JSON.stringify({ peerId: sellerId }),
  })).json();
  const url = `ws://${location.host}/ws?token=${encodeURIComponent(session.accessToken)}`;
  const socket = new WebSocket(url);
  await new Promise((ok, fail) => { socket.onopen = ok; socket.onerror = fail; });
  const acked = new Set();
  socket.onmessage = (event) => {
    const frame = JSON.parse(event.data);
    if (frame.type === "ack") acked.add(frame.clientMsgId);
  };
  socket.send(JSON.stringify({ type: "join", room: room.id }));
  for (let i = 1; i <= count; i++) {
    socket.send(JSON.stringify({ type: "send", room: room.id, text: `seed message ${i}`, clientMsgId: `seed-${i}` }));
    await new Promise((ok) => setTimeout(ok, 70));
  }
  const until = Date.now() + 10000;
  while (acked.size < count && Date.now() < until) await new Promise((ok) => setTimeout(ok, 50));
  socket.close();
  return { room: room.id, acked: acked.size };
}
"""

SECOND_SELLER = """
async ([email, password]) => {
  // Another seller, through the public API (the page's own session is left alone): a rug.
  const json = { "Content-Type": "application/json" };
  const signup = await fetch("/auth/signup", {
    method: "POST", headers: json, body: JSON.stringify({ email, password, name: "Rita's Rugs", role: "SELLER" }),
  });
  if (signup.status !== 201) throw new Error(`signup: ${signup.status}`);
  const login = await (await fetch("/auth/login", {
    method: "POST", headers: json, body: JSON.stringify({ email, password }),
  })).json();
  const product = await fetch("/products", {
    method: "POST",
    headers: { ...json, Authorization: `Bearer ${login.accessToken}` },
    body: JSON.stringify({ name: "Rug", price: 50000, stock: 2, description: "Hand-woven" }),
  });
  if (product.status !== 201) throw new Error(`product: ${product.status}`);
  return (await product.json()).id;
}
"""


def run(base, shots):
    problems = []
    suffix = str(time.time_ns())
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=ARGS.chromium,
            headless=True,
            # Root in a container has no user namespaces for Chromium's sandbox.
            args=["--no-sandbox"],
        )
        try:
            contexts = [browser.new_context(viewport={"width": 1100, "height": 720}) for _ in range(2)]
            for context in contexts:
                context.set_default_timeout(STEP_MS)
            seller, buyer = (context.new_page() for context in contexts)
            watch(seller, problems, "seller")
            watch(buyer, problems, "buyer")
            expect.set_options(timeout=STEP_MS)

            # The page and its files come from the node, under a policy that allows no inline script.
            response = seller.goto(f"{base}/")
            assert response.status == 200, response.status
            policy = response.headers.get("content-security-policy", "")
            assert "default-src 'self'" in policy and "unsafe-inline" not in policy, policy

            # The seller signs up, lists a product and edits its price.
            sign_up(seller, base, f"seller-{suffix}@example.com", "Sol's Lamps", "SELLER")
            form = seller.locator("#new-product")
            form.locator("[name=name]").fill("Lamp")
            form.locator("[name=price]").fill("-5")
            form.locator("[name=stock]").fill("5")
            form.get_by_role("button", name="List product").click()
            # The API's own message, shown as it came.
            expect(seller.locator("#error")).to_contain_text("invalid: price")
            form.locator("[name=price]").fill("12000")
            form.locator("[name=description]").fill("A warm desk lamp")
            form.get_by_role("button", name="List product").click()
            row = seller.locator("#products tr", has_text="Lamp")
            expect(row.locator(".price")).to_have_text("12,000 KRW")
            expect(seller.locator("#error")).to_be_hidden()
            row.locator("input[name=price]").fill("9900")
            row.locator("button.save").click()
            expect(seller.locator("#notice")).to_contain_text("9,900 KRW")
            expect(seller.locator("#products tr", has_text="Lamp").locator(".price")).to_have_text("9,900 KRW")
            shoot(seller, shots, "seller-products.png")
            seller_id = seller.evaluate("JSON.parse(sessionStorage.getItem('bazaar.session')).me.id")

            # The seller watches incoming orders; nothing has come yet.
            seller.goto(f"{base}/#/orders")
            expect(seller.locator("main")).to_contain_text("No orders yet")
            mark_no_reload(seller)

            # The buyer signs up, sees the product at its new price, orders and pays with tok_ok.
            sign_up(buyer, base, f"buyer-{suffix}@example.com", "Bo Buyer", "BUYER")
            listed = buyer.locator("#products tr", has_text="Lamp")
            expect(listed.locator(".price")).to_have_text("9,900 KRW")
            paid_id = place_and_pay(buyer, base, "tok_ok")
            paid_row = buyer.locator(f'#orders tr[data-order-id="{paid_id}"] .order-status')
            expect(paid_row).to_have_text("PAID")
            assert_not_reloaded(buyer, "the buyer")

            # The seller's page, never reloaded, got the order and its payment over the socket.
            expect(seller.locator(f'#orders tr[data-order-id="{paid_id}"] .order-status')).to_have_text("PAID")
            assert_not_reloaded(seller, "the seller")

            # A declined card cancels the order, live.
            declined_id = place_and_pay(buyer, base, "tok_decline")
            expect(buyer.locator(f'#orders tr[data-order-id="{declined_id}"] .order-status')).to_have_text("CANCELLED")
            assert_not_reloaded(buyer, "the buyer")
            expect(buyer.locator("#orders tr[data-order-id]")).to_have_count(2)
            # Its history, from GET /orders/{id}/events: placed, requested, declined, cancelled.
            buyer.locator(f'#orders tr[data-order-id="{declined_id}"] button.history').click()
            steps = buyer.locator("#timeline li")
            expect(steps).to_have_count(4)
            expect(steps.nth(2)).to_contain_text("PaymentDeclined")
            expect(steps.nth(3)).to_contain_text("card_declined")
            shoot(buyer, shots, "buyer-orders.png")

            # The cart: a line added from the list, priced now, changed in place, then taken out.
            buyer.goto(f"{base}/#/products")
            buyer.locator("#products tr", has_text="Lamp").locator("button.add-to-cart").click()
            expect(buyer.locator("#notice")).to_contain_text("In your cart: 1 × Lamp")
            buyer.locator("#nav-cart").click()
            line = buyer.locator("#cart tr[data-product-id]")
            expect(line).to_have_count(1)
            expect(line.locator(".amount")).to_have_text("9,900 KRW")
            line.locator("[name=quantity]").fill("2")
            line.locator("button.update").click()
            expect(buyer.locator(".cart-total")).to_have_text("Total: 19,800 KRW")
            shoot(buyer, shots, "buyer-cart.png")
            line.locator("button.remove").click()
            expect(buyer.locator("main")).to_contain_text("Your cart is empty")
            expect(seller.locator("#nav-cart")).to_be_hidden()
            expect(seller.locator(f'#orders tr[data-order-id="{declined_id}"] .order-status')).to_have_text("CANCELLED")
            expect(seller.locator("#orders tr[data-order-id]")).to_have_count(2)
            assert_not_reloaded(seller, "the seller")
            shoot(seller, shots, "seller-orders.png")

            # A cart over two sellers checks out into two orders, paid with one payment.
            buyer.evaluate(SECOND_SELLER, [f"rugs-{suffix}@example.com", PASSWORD])
            buyer.goto(f"{base}/#/products")
            for name in ["Lamp", "Rug"]:
                buyer.locator("#products tr", has_text=name).locator("button.add-to-cart").click()
                expect(buyer.locator("#notice")).to_contain_text(f"In your cart: 1 × {name}")
            buyer.locator("#nav-cart").click()
            expect(buyer.locator("#cart tr[data-product-id]")).to_have_count(2)
            expect(buyer.locator("main")).to_contain_text("From 2 sellers")
            buyer.locator("#checkout").click()
            expect(buyer).to_have_url(re.compile(r"#/orders$"))
            group = buyer.locator("#orders tr.checkout-row")
            expect(group).to_have_count(1)
            expect(group).to_contain_text("2 sellers, 59,900 KRW at checkout")
            expect(group.locator("button.pay-checkout")).to_have_text("Pay all: 59,900 KRW")
            in_checkout = buyer.locator("#orders tr.in-checkout")
            expect(in_checkout).to_have_count(2)
            mark_no_reload(buyer)
            group.locator("button.pay-checkout").click()
            expect(buyer.locator("#notice")).to_contain_text("One payment of 59,900 KRW for 2 orders")
            expect(in_checkout.locator(".order-status", has_text="PAID")).to_have_count(2)
            shoot(buyer, shots, "buyer-checkout.png")
            # The lamp's seller got their order of it live, and refunds it; the rug's stays PAID.
            lamp_order = seller.locator("#orders tr.in-checkout")
            expect(lamp_order.locator(".order-status")).to_have_text("PAID")
            lamp_order.locator("button.refund").click()
            expect(lamp_order.locator(".order-status")).to_have_text("REFUNDED")
            expect(in_checkout.locator(".order-status", has_text="REFUNDED")).to_have_count(1)
            expect(in_checkout.locator(".order-status", has_text="PAID")).to_have_count(1)
            assert_not_reloaded(seller, "the seller")
            assert_not_reloaded(buyer, "the buyer")

            # More history than one page, posted through the API before the chat is opened.
            seeded = buyer.evaluate(SEED_CHAT, [seller_id, SEEDED_MESSAGES])
            assert seeded["acked"] == SEEDED_MESSAGES, seeded

            # The buyer opens the chat from the product: the newest page, then the older one.
            buyer.goto(f"{base}/#/products")
            buyer.locator("#products tr", has_text="Lamp").locator("button.chat-seller").click()
            expect(buyer).to_have_url(re.compile(r"#/chat/"))
            assert buyer.url.endswith(seeded["room"]), buyer.url
            messages = buyer.locator("#messages .message")
            expect(messages).to_have_count(50)
            expect(messages.first).to_have_text(re.compile(f"seed message {SEEDED_MESSAGES - 49}\\b"))
            buyer.locator("#older").click()
            expect(messages).to_have_count(SEEDED_MESSAGES)
            expect(messages.first).to_have_text(re.compile(r"seed message 1\b"))
            expect(buyer.locator("#older")).to_be_hidden()
            expect(buyer.locator("#history-start")).to_be_visible()

            # The seller opens the same room from the room list: both are present.
            seller.goto(f"{base}/#/chat")
            seller.locator("#rooms a", has_text="Bo Buyer").click()
            expect(seller.locator("#messages .message")).to_have_count(50)
            expect(seller.locator("#presence li.online")).to_have_count(2)
            expect(buyer.locator("#presence li.online")).to_have_count(2)

            # Typing shows on the other side, then the message, then its read receipt.
            seller.locator("#text").press_sequentially("Hello from the shop", delay=20)
            expect(buyer.locator("#typing")).to_have_text("Sol's Lamps is typing…")
            seller.locator("#text").press("Enter")
            expect(buyer.locator("#messages .message").last).to_contain_text("Hello from the shop")
            expect(buyer.locator("#typing")).to_have_text("")
            mine = seller.locator("#messages .message.mine").last
            expect(mine).to_contain_text("Hello from the shop")
            expect(mine.locator(".receipt")).to_have_text("✓ read")

            buyer.locator("#text").fill("Thanks, the lamp is lovely")
            buyer.locator("#send").get_by_role("button", name="Send").click()
            expect(seller.locator("#messages .message").last).to_contain_text("Thanks, the lamp is lovely")
            expect(buyer.locator("#messages .message.mine").last.locator(".receipt")).to_have_text("✓ read")
            shoot(buyer, shots, "chat.png")

            # The cluster view shows this one node and the entities it holds.
            buyer.goto(f"{base}/#/cluster")
            node_row = buyer.locator("#members tr[data-node]")
            expect(node_row).to_have_count(1)
            expect(node_row.first).to_contain_text("(this node)")
            expect(node_row.first).to_contain_text("up")
            expect(buyer.locator("#shards")).to_contain_text("order")
            shoot(buyer, shots, "cluster.png")

            assert not problems, "\n".join(problems)
        finally:
            browser.close()


def main():
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", required=True, help="the bazaar binary")
    parser.add_argument("--screenshots", help="a directory for the PNG screenshots")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the Chromium to drive")
    ARGS = parser.parse_args()
    if ARGS.screenshots:
        os.makedirs(ARGS.screenshots, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="bazaar-browser-") as work:
        data_dir = os.path.join(work, "data")
        log_path = os.path.join(work, "node.log")
        process = None

        def give_up():
            print(f"the browser test ran past {RUN_DEADLINE_SECS} s", file=sys.stderr)
            if process is not None:
                stop_node(process)
            os._exit(3)

        watchdog = threading.Timer(RUN_DEADLINE_SECS, give_up)
        watchdog.daemon = True
        watchdog.start()
        try:
            process, base = start_node(ARGS.bin, data_dir, log_path)
            print(f"node at {base}")
            run(base, ARGS.screenshots)
            print("browser test: every check held")
        except Exception:
            with open(log_path, "rb") as log:
                tail = log.read().decode("utf-8", "replace").splitlines()[-40:]
            print("the node's log:\n" + "\n".join(tail), file=sys.stderr)
            raise
        finally:
            watchdog.cancel()
            if process is not None:
                stop_node(process)


if __name__ == "__main__":
    main()
