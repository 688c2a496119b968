// The bazaar web console: plain JavaScript over the public API (docs/API.md), from the origin it is
// served from. Views are chosen by the URL's hash (#/login, #/products, #/cart, #/orders, #/chat/ROOM,
// #/cluster); one WebSocket per signed-in tab carries order updates and chat.
//
// The session (the access and refresh tokens) lives in memory and in sessionStorage (so a reload
// of the tab keeps it), never in localStorage: it dies with the tab. Every element is built with
// createElement and textContent, never innerHTML, so no text from the API is ever read as markup.
"use strict";

const PAY_TOKENS = ["tok_ok", "tok_decline", "tok_timeout", "tok_lost", "tok_slow"];
const SESSION_KEY = "bazaar.session";

const state = {
  session: JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null"), // {accessToken, refreshToken, me}
  orders: new Map(), // id -> order, as last seen (list or `order` frame)
  timeline: null, // the order timeline shown under the orders (GET /orders/{id}/events), or null
  tokens: new Map(), // order or checkout id -> the card token picked for it, kept across redraws
  products: new Map(), // id -> product
  users: new Map(), // id -> profile (or null when not visible)
  rooms: new Map(), // id -> {id, members, messages: Map(seq -> message), nextBefore, lastSeq, online, readBy}
  socket: null,
  socketWanted: false,
  pending: new Map(), // clientMsgId -> room, until acked
  clusterTimer: null,
  typingSentAt: 0,
  typingTimers: new Map(),
};

// ---- small DOM helpers ----

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const view = () => document.getElementById("view");

function showError(error) {
  const box = document.getElementById("error");
  box.textContent = error.code ? `${error.code}: ${error.message}` : String(error.message || error);
  box.hidden = false;
}

function clearError() {
  document.getElementById("error").hidden = true;
}

function notice(text) {
  const box = document.getElementById("notice");
  box.textContent = text;
  box.hidden = false;
}

function money(amount, currency) {
  return `${Number(amount).toLocaleString("en")} ${currency || ""}`.trim();
}

// The card token picker of the order or checkout `key`: a live update redraws the orders, and the
// token picked must survive that (or the next click would pay with another card).
function tokenPicker(key) {
  const select = h(
    "select",
    { name: "token", onchange: () => state.tokens.set(key, select.value) },
    PAY_TOKENS.map((t) => h("option", { value: t }, t)),
  );
  select.value = state.tokens.get(key) || PAY_TOKENS[0];
  return select;
}

function statusBadge(status) {
  return h("span", { class: `status status-${status}`, dataset: { status } }, status);
}

// ---- the API ----

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// One request; a 401 on a signed-in session refreshes the token pair once and retries.
async function api(method, path, body, { idempotent = false, retried = false } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (state.session) headers.Authorization = `Bearer ${state.session.accessToken}`;
  // One key per click: a retry of this very request (after a refresh) reuses it.
  if (idempotent) headers["Idempotency-Key"] = typeof idempotent === "string" ? idempotent : crypto.randomUUID();
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 401 && state.session && !retried && !path.startsWith("/auth/")) {
    if (await refreshSession()) {
      return api(method, path, body, { idempotent: headers["Idempotency-Key"] || false, retried: true });
    }
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    throw new ApiError(response.status, "bad_response", `the node answered ${response.status} without JSON`);
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    throw new ApiError(response.status, error.code || "error", error.message || `HTTP ${response.status}`);
  }
  return data;
}

function saveSession() {
  if (state.session) sessionStorage.setItem(SESSION_KEY, JSON.stringify(state.session));
  else sessionStorage.removeItem(SESSION_KEY);
}

async function refreshSession() {
  if (!state.session) return false;
  try {
    const pair = await fetch("/auth/refresh", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refreshToken: state.session.refreshToken }),
    });
    if (!pair.ok) throw new Error("refresh refused");
    const tokens = await pair.json();
    state.session.accessToken = tokens.accessToken;
    state.session.refreshToken = tokens.refreshToken;
    saveSession();
    return true;
  } catch (_) {
    signOutLocally("your session ended: sign in again");
    return false;
  }
}

// Runs an action of a click, showing any error it ends in.
function action(run) {
  return async (event) => {
    if (event) event.preventDefault();
    const button = event && event.currentTarget instanceof HTMLButtonElement ? event.currentTarget : null;
    if (button) button.disabled = true;
    clearError();
    try {
      await run(event);
    } catch (error) {
      showError(error);
    } finally {
      if (button && button.isConnected) button.disabled = false;
    }
  };
}

async function userName(id) {
  if (state.session && id === state.session.me.id) return state.session.me.name || state.session.me.email;
  if (!state.users.has(id)) {
    try {
      state.users.set(id, await api("GET", `/auth/user/${encodeURIComponent(id)}`));
    } catch (_) {
      state.users.set(id, null); // not visible to this caller: shown by id
    }
  }
  const user = state.users.get(id);
  return user ? user.name || user.email : id.slice(0, 8);
}

// ---- session ----

async function signIn(email, password) {
  const tokens = await api("POST", "/auth/login", { email, password });
  state.session = { accessToken: tokens.accessToken, refreshToken: tokens.refreshToken, me: null };
  state.session.me = await api("GET", "/auth/me");
  saveSession();
  startSocket();
  renderHeader();
  location.hash = "#/products";
}

function signOutLocally(message) {
  state.session = null;
  saveSession();
  stopSocket();
  state.orders.clear();
  state.tokens.clear();
  state.timeline = null;
  state.rooms.clear();
  renderHeader();
  location.hash = "#/login";
  if (message) showError({ message });
}

async function signOut() {
  const refreshToken = state.session && state.session.refreshToken;
  try {
    if (refreshToken) await api("POST", "/auth/logout", { refreshToken });
  } finally {
    signOutLocally();
  }
}

function renderHeader() {
  const who = document.getElementById("whoami");
  who.replaceChildren();
  document.getElementById("nav").hidden = !state.session;
  if (!state.session) return;
  const me = state.session.me;
  document.getElementById("nav-cart").hidden = me.role !== "BUYER";
  who.append(
    h("span", { id: "me", dataset: { role: me.role } }, `${me.name || me.email} (${me.role})`),
    h("button", { class: "secondary", id: "logout", onclick: action(signOut) }, "Log out"),
  );
}

// ---- the WebSocket ----

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws?token=${encodeURIComponent(state.session.accessToken)}`;
}

function setSocketState(text) {
  document.getElementById("socket-state").textContent = text;
}

function startSocket() {
  state.socketWanted = true;
  if (state.socket || !state.session) return;
  const socket = new WebSocket(socketUrl());
  state.socket = socket;
  setSocketState("connecting");
  socket.addEventListener("open", () => {
    setSocketState("online");
    // Rejoin every room opened in this tab, asking only for what was missed.
    for (const room of state.rooms.values()) {
      if (room.joined) sendFrame({ type: "join", room: room.id, since: room.lastSeq });
    }
  });
  socket.addEventListener("message", (event) => onFrame(JSON.parse(event.data)));
  socket.addEventListener("close", async (event) => {
    state.socket = null;
    setSocketState("offline");
    if (!state.socketWanted || !state.session) return;
    if (event.code === 4401) await refreshSession(); // the token expired while connected
    if (event.code === 4429) showError({ code: "rate_limited", message: "too many frames: the socket was closed" });
    setTimeout(startSocket, 1000);
  });
}

function stopSocket() {
  state.socketWanted = false;
  if (state.socket) state.socket.close(1000);
  state.socket = null;
}

function sendFrame(frame) {
  if (!state.socket || state.socket.readyState !== WebSocket.OPEN) {
    showError({ code: "offline", message: "the live connection is down; retrying" });
    return false;
  }
  state.socket.send(JSON.stringify(frame));
  return true;
}

function onFrame(frame) {
  switch (frame.type) {
    case "order":
      onOrder(frame.order);
      break;
    case "joined":
      break;
    case "message":
      onMessage(frame);
      break;
    case "ack":
      state.pending.delete(frame.clientMsgId);
      break;
    case "typing":
      onTyping(frame);
      break;
    case "read":
      onRead(frame);
      break;
    case "presence":
      onPresence(frame);
      break;
    case "error":
      showError(frame);
      break;
    default:
      break; // a frame type newer than this console: nothing to show
  }
}

// ---- views ----

const routes = [
  [/^#\/login$/, renderLogin],
  [/^#\/products$/, renderProducts],
  [/^#\/cart$/, renderCart],
  [/^#\/orders$/, renderOrders],
  [/^#\/chat$/, renderRooms],
  [/^#\/chat\/([^/]+)$/, (id) => renderRoom(decodeURIComponent(id))],
  [/^#\/cluster$/, renderCluster],
];

async function route() {
  clearInterval(state.clusterTimer);
  state.clusterTimer = null;
  let hash = location.hash || "#/products";
  if (!state.session && hash !== "#/login" && hash !== "#/cluster") hash = "#/login";
  if (hash !== location.hash) {
    location.hash = hash;
    return;
  }
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", hash.startsWith(link.getAttribute("href")));
  }
  for (const [pattern, render] of routes) {
    const match = hash.match(pattern);
    if (match) {
      view().replaceChildren(h("p", { class: "muted" }, "Loading…"));
      try {
        await render(...match.slice(1));
      } catch (error) {
        view().replaceChildren();
        showError(error);
      }
      return;
    }
  }
  view().replaceChildren(h("p", {}, "No such page. ", h("a", { href: "#/products" }, "Products")));
}

function renderLogin() {
  const field = (label, attrs) => h("label", {}, label, h("input", attrs));
  const signup = h(
    "form",
    { id: "signup" },
    field("Email", { name: "email", type: "email", required: true }),
    field("Password (8+ characters)", { name: "password", type: "password", required: true }),
    field("Name", { name: "name" }),
    h(
      "label",
      {},
      "Role",
      h("select", { name: "role" }, h("option", { value: "BUYER" }, "Buyer"), h("option", { value: "SELLER" }, "Seller")),
    ),
    h("button", { type: "submit" }, "Sign up"),
  );
  signup.addEventListener(
    "submit",
    action(async () => {
      const form = new FormData(signup);
      const body = { email: form.get("email"), password: form.get("password"), role: form.get("role") };
      if (form.get("name")) body.name = form.get("name");
      await api("POST", "/auth/signup", body);
      await signIn(body.email, body.password);
    }),
  );
  const login = h(
    "form",
    { id: "login" },
    field("Email", { name: "email", type: "email", required: true }),
    field("Password", { name: "password", type: "password", required: true }),
    h("button", { type: "submit" }, "Log in"),
  );
  login.addEventListener(
    "submit",
    action(async () => {
      const form = new FormData(login);
      await signIn(form.get("email"), form.get("password"));
    }),
  );
  view().replaceChildren(
    h("section", {}, h("h2", {}, "Sign up"), signup),
    h("section", {}, h("h2", {}, "Log in"), login),
  );
}

async function renderProducts() {
  const me = state.session.me;
  const query = me.role === "SELLER" ? `?sellerId=${encodeURIComponent(me.id)}&limit=100` : "?limit=100";
  const page = await api("GET", `/products${query}`);
  const sections = [];
  if (me.role === "SELLER") {
    const form = h(
      "form",
      { id: "new-product" },
      h("label", {}, "Name", h("input", { name: "name", required: true })),
      h("label", {}, "Price", h("input", { name: "price", type: "number", class: "small", required: true })),
      h("label", {}, "Stock", h("input", { name: "stock", type: "number", min: "0", class: "small", required: true })),
      h("label", {}, "Description", h("input", { name: "description" })),
      h("button", { type: "submit" }, "List product"),
    );
    form.addEventListener(
      "submit",
      action(async () => {
        const data = new FormData(form);
        const product = await api("POST", "/products", {
          name: data.get("name"),
          price: Number(data.get("price")),
          stock: Number(data.get("stock")),
          description: data.get("description") || undefined,
        });
        notice(`Listed ${product.name}`);
        await renderProducts();
      }),
    );
    sections.push(h("section", {}, h("h2", {}, "List a product"), form));
  }
  const rows = page.items.map((product) => {
    state.products.set(product.id, product);
    return productRow(product, me);
  });
  const table = h(
    "table",
    { id: "products" },
    h("tr", {}, h("th", {}, "Product"), h("th", {}, "Price"), h("th", {}, "Stock"), h("th", {}, "")),
    rows,
  );
  sections.push(
    h(
      "section",
      {},
      h("h2", {}, me.role === "SELLER" ? "Your products" : "Products"),
      rows.length ? table : h("p", { class: "muted" }, "Nothing listed yet."),
    ),
  );
  view().replaceChildren(...sections);
}

function productRow(product, me) {
  const cells = [
    h("td", { class: "name" }, product.name, h("div", { class: "muted" }, product.description || "")),
    h("td", { class: "price" }, money(product.price, product.currency)),
    h("td", { class: "stock" }, String(product.stock)),
  ];
  if (me.role === "SELLER") {
    const price = h("input", { name: "price", type: "number", min: "0", class: "small", value: product.price });
    const stock = h("input", { name: "stock", type: "number", min: "0", class: "small", value: product.stock });
    const save = h(
      "button",
      {
        class: "save",
        onclick: action(async () => {
          const updated = await api("PATCH", `/products/${encodeURIComponent(product.id)}`, {
            price: Number(price.value),
            stock: Number(stock.value),
          });
          notice(`Saved ${updated.name}: ${money(updated.price, updated.currency)}, ${updated.stock} in stock`);
          await renderProducts();
        }),
      },
      "Save",
    );
    cells.push(h("td", {}, h("div", { class: "row-actions" }, price, stock, save)));
  } else {
    const quantity = h("input", { name: "quantity", type: "number", min: "1", value: "1", class: "small" });
    const order = h(
      "button",
      {
        class: "order",
        onclick: action(async () => {
          const placed = await api(
            "POST",
            "/orders",
            { productId: product.id, quantity: Number(quantity.value) },
            { idempotent: true },
          );
          state.orders.set(placed.id, placed);
          notice(`Ordered ${quantity.value} × ${product.name}: pay it under Orders`);
          location.hash = "#/orders";
        }),
      },
      "Order",
    );
    const toCart = h(
      "button",
      {
        class: "secondary add-to-cart",
        onclick: action(async () => {
          await api("PUT", `/cart/items/${encodeURIComponent(product.id)}`, { quantity: Number(quantity.value) });
          notice(`In your cart: ${quantity.value} × ${product.name}`);
        }),
      },
      "Add to cart",
    );
    const chat = h(
      "button",
      {
        class: "secondary chat-seller",
        onclick: action(async () => {
          const room = await api("POST", "/chat/rooms", { peerId: product.sellerId });
          location.hash = `#/chat/${encodeURIComponent(room.id)}`;
        }),
      },
      "Chat with seller",
    );
    cells.push(h("td", {}, h("div", { class: "row-actions" }, quantity, order, toCart, chat)));
  }
  return h("tr", { dataset: { productId: product.id } }, cells);
}

async function productName(id) {
  if (!state.products.has(id)) {
    try {
      state.products.set(id, await api("GET", `/products/${encodeURIComponent(id)}`));
    } catch (_) {
      return id.slice(0, 8);
    }
  }
  return state.products.get(id).name;
}

// ---- the cart ----

// The buyer's cart, priced as the products are now (GET /cart), each line naming its seller.
async function renderCart() {
  drawCart(await api("GET", "/cart"));
}

function drawCart(cart) {
  if (location.hash !== "#/cart") return;
  const sellers = [...new Set(cart.items.map((line) => line.sellerId))];
  const rows = cart.items.map((line) => cartRow(line, sellers.indexOf(line.sellerId) + 1));
  view().replaceChildren(
    h(
      "section",
      {},
      h("h2", {}, "Your cart"),
      rows.length
        ? h(
            "table",
            { id: "cart" },
            h(
              "tr",
              {},
              h("th", {}, "Product"),
              h("th", {}, "Seller"),
              h("th", {}, "Price"),
              h("th", {}, "Qty"),
              h("th", {}, "Amount"),
              h("th", {}, ""),
            ),
            rows,
          )
        : h("p", { class: "muted" }, "Your cart is empty. Add products from the ", h("a", { href: "#/products" }, "list"), "."),
      cart.totals.map((total) =>
        h("p", { class: "cart-total", dataset: { currency: total.currency } }, "Total: ", h("strong", {}, money(total.amount, total.currency))),
      ),
      sellers.length > 1 ? h("p", { class: "muted" }, `From ${sellers.length} sellers: one order each, paid together.`) : null,
      rows.length
        ? h(
            "button",
            {
              id: "checkout",
              onclick: action(async () => {
                // POST /checkout: one order per seller, every line reserved or none.
                const checkout = await api("POST", "/checkout", undefined, { idempotent: true });
                for (const order of checkout.orders) state.orders.set(order.id, order);
                notice(`Checked out into ${checkout.orders.length} orders of ${money(checkout.total, checkout.currency)}: pay them together here`);
                location.hash = "#/orders";
              }),
            },
            "Check out",
          )
        : null,
    ),
  );
}

function cartRow(line, sellerNumber) {
  const path = `/cart/items/${encodeURIComponent(line.productId)}`;
  const quantity = h("input", { name: "quantity", type: "number", min: "1", class: "small", value: line.quantity });
  return h(
    "tr",
    { dataset: { productId: line.productId } },
    h("td", { class: "name" }, line.name, line.available ? null : h("div", { class: "short" }, `only ${line.stock} in stock`)),
    h("td", { class: "seller" }, `Seller ${sellerNumber}`),
    h("td", { class: "price" }, money(line.unitPrice, line.currency)),
    h("td", {}, quantity),
    h("td", { class: "amount" }, money(line.amount, line.currency)),
    h(
      "td",
      {},
      h(
        "div",
        { class: "row-actions" },
        h(
          "button",
          { class: "secondary update", onclick: action(async () => drawCart(await api("PUT", path, { quantity: Number(quantity.value) }))) },
          "Update",
        ),
        h("button", { class: "secondary remove", onclick: action(async () => drawCart(await api("DELETE", path))) }, "Remove"),
      ),
    ),
  );
}

async function renderOrders() {
  const me = state.session.me;
  const role = me.role === "SELLER" ? "seller" : "buyer";
  const page = await api("GET", `/orders?role=${role}&limit=100`);
  for (const order of page.items) state.orders.set(order.id, order);
  await drawOrders();
}

// Draws the orders known to this tab, newest first; called again by every `order` frame.
async function drawOrders() {
  const me = state.session.me;
  const orders = [...state.orders.values()]
    .filter((order) => order.buyerId === me.id || order.sellerId === me.id)
    .sort((a, b) => (a.id < b.id ? 1 : -1));
  // The orders of one checkout are shown together, under a row of their own (paid at once).
  const groups = new Map(); // checkoutId (or order id) -> orders, in the order first seen
  for (const order of orders) {
    const key = order.checkoutId ? `checkout:${order.checkoutId}` : order.id;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(order);
  }
  const rows = [];
  for (const [key, members] of groups) {
    if (key.startsWith("checkout:")) rows.push(checkoutRow(key.slice("checkout:".length), members, me));
    for (const order of members) rows.push(orderRow(order, await linesName(order), me));
  }
  if (location.hash !== "#/orders") return; // the user moved on while names were fetched
  const title = me.role === "SELLER" ? "Incoming orders" : "Your orders";
  view().replaceChildren(
    h(
      "section",
      {},
      h("h2", {}, title),
      rows.length
        ? h(
            "table",
            { id: "orders" },
            h(
              "tr",
              {},
              h("th", {}, "Order"),
              h("th", {}, "Product"),
              h("th", {}, "Qty"),
              h("th", {}, "Amount"),
              h("th", {}, "Status"),
              h("th", {}, ""),
            ),
            rows,
          )
        : h("p", { class: "muted" }, "No orders yet."),
      state.timeline && state.orders.has(state.timeline.orderId) ? timelineView(state.timeline) : null,
    ),
  );
}

// Reads an order's timeline and shows it under the orders; of reads that overlap, only the last
// one asked is shown.
let timelineAsked = 0;
async function showTimeline(orderId) {
  const asked = ++timelineAsked;
  const timeline = await api("GET", `/orders/${encodeURIComponent(orderId)}/events`);
  if (asked !== timelineAsked) return;
  state.timeline = timeline;
  if (location.hash === "#/orders") await drawOrders();
}

function timelineView(timeline) {
  const currency = state.orders.get(timeline.orderId)?.currency;
  return h(
    "section",
    { id: "timeline" },
    h("h3", {}, "History of order ", h("code", {}, timeline.orderId.slice(-12))),
    h(
      "ol",
      { class: "timeline" },
      timeline.events.map((event) =>
        h(
          "li",
          { dataset: { type: event.type } },
          h("time", { datetime: event.at }, new Date(event.at).toLocaleString()),
          " ",
          h("strong", {}, event.type),
          ` by ${event.by.toLowerCase()} `,
          statusBadge(event.status),
          event.amount !== undefined ? ` ${money(event.amount, currency)}` : "",
          event.reason ? ` (${event.reason})` : "",
        ),
      ),
    ),
    timeline.truncated ? h("p", { class: "muted" }, "The oldest changes only: the rest were left out.") : null,
  );
}

// What an order holds: its product, or "2 × Lamp, 1 × Cup" for several lines.
async function linesName(order) {
  const lines = order.lines || [];
  if (lines.length <= 1) return productName(order.productId);
  const names = [];
  for (const line of lines) names.push(`${line.quantity} × ${await productName(line.productId)}`);
  return names.join(", ");
}

// The heading row of a checkout's orders: how many sellers, the total, and for its buyer one
// payment for every order still ORDERED (POST /payments {checkoutId}).
function checkoutRow(checkoutId, orders, me) {
  const currency = orders[0].currency;
  const total = orders.reduce((sum, order) => sum + Number(order.amount), 0);
  const actions = [];
  const open = orders.filter((order) => order.status === "ORDERED");
  if (me.role === "BUYER" && open.length) {
    const token = tokenPicker(checkoutId);
    actions.push(
      token,
      h(
        "button",
        {
          class: "pay-checkout",
          onclick: action(async () => {
            const payment = await api(
              "POST",
              "/payments",
              { checkoutId, method: { type: "card", token: token.value } },
              { idempotent: true },
            );
            notice(`One payment of ${money(payment.amount, currency)} for ${payment.orders.length} orders: they update live`);
            for (const share of payment.orders) {
              const order = state.orders.get(share.orderId);
              if (order && order.status === "ORDERED") state.orders.set(order.id, { ...order, status: "PAYMENT_PENDING", paymentId: payment.id });
            }
            await drawOrders();
          }),
        },
        // What the one charge will be: the orders still ORDERED (one cancelled since is not paid).
        `${open.length === orders.length ? "Pay all" : `Pay ${open.length} left`}: ${money(open.reduce((sum, order) => sum + Number(order.amount), 0), currency)}`,
      ),
    );
  }
  const sellers = new Set(orders.map((order) => order.sellerId)).size;
  const what = me.role === "BUYER" ? `${sellers} seller${sellers === 1 ? "" : "s"}, ${money(total, currency)} at checkout` : "your part of a buyer's checkout";
  return h(
    "tr",
    { class: "checkout-row", dataset: { checkoutId } },
    h("td", { colspan: "5" }, "Checkout ", h("code", {}, checkoutId.slice(-12)), `: ${what}`),
    h("td", {}, h("div", { class: "row-actions" }, actions)),
  );
}

function orderRow(order, name, me) {
  const actions = [];
  if (order.status === "ORDERED" && me.role === "BUYER") {
    const token = tokenPicker(order.id);
    actions.push(
      token,
      h(
        "button",
        {
          class: "pay",
          onclick: action(async () => {
            const payment = await api(
              "POST",
              "/payments",
              { orderId: order.id, method: { type: "card", token: token.value } },
              { idempotent: true },
            );
            notice(`Payment ${payment.status}: the order updates live`);
            // The socket's `order` frame moves the status on; the answer already says REQUESTED.
            if (state.orders.get(order.id).status === "ORDERED") {
              state.orders.set(order.id, { ...order, status: "PAYMENT_PENDING", paymentId: payment.id });
              await drawOrders();
            }
          }),
        },
        "Pay",
      ),
    );
  }
  if (order.status === "ORDERED") {
    actions.push(
      h(
        "button",
        {
          class: "secondary cancel",
          onclick: action(async () => {
            onOrder(await api("POST", `/orders/${encodeURIComponent(order.id)}/cancel`));
          }),
        },
        "Cancel",
      ),
    );
  }
  if (order.status === "PAID" && me.role === "SELLER" && order.paymentId) {
    actions.push(
      h(
        "button",
        {
          class: "secondary refund",
          onclick: action(async () => {
            await api("POST", `/payments/${encodeURIComponent(order.paymentId)}/refund`);
            notice("Refund decided: the order updates live");
          }),
        },
        "Refund",
      ),
    );
  }
  actions.push(
    h(
      "button",
      { class: "secondary history", onclick: action(async () => showTimeline(order.id)) },
      "History",
    ),
  );
  return h(
    "tr",
    { class: order.checkoutId ? "in-checkout" : "", dataset: { orderId: order.id } },
    h("td", {}, h("code", {}, order.id.slice(-12))),
    h("td", { class: "product" }, name),
    h("td", {}, String(order.quantity)),
    h("td", {}, money(order.amount, order.currency)),
    h("td", { class: "order-status" }, statusBadge(order.status)),
    h("td", {}, h("div", { class: "row-actions" }, actions)),
  );
}

function onOrder(order) {
  const known = state.orders.get(order.id);
  // Frames of one order may overtake a list read: keep the latest by updatedAt.
  if (known && known.updatedAt && order.updatedAt && known.updatedAt > order.updatedAt) return;
  state.orders.set(order.id, order);
  // The timeline on show gains the change too.
  if (location.hash !== "#/orders") return;
  if (state.timeline && state.timeline.orderId === order.id) showTimeline(order.id).catch(showError);
  else drawOrders().catch(showError);
}

// ---- chat ----

function roomState(room) {
  if (!state.rooms.has(room.id)) {
    state.rooms.set(room.id, {
      id: room.id,
      members: room.members,
      messages: new Map(),
      nextBefore: undefined,
      lastSeq: 0,
      online: [],
      readBy: new Map(), // user id -> highest seq they read
      joined: false,
    });
  }
  return state.rooms.get(room.id);
}

async function renderRooms() {
  const page = await api("GET", "/chat/rooms?limit=100");
  const me = state.session.me;
  const rows = [];
  for (const room of page.items) {
    const peer = room.members.find((id) => id !== me.id);
    const last = room.lastMessage ? room.lastMessage.text : "";
    rows.push(
      h(
        "tr",
        {},
        h("td", {}, h("a", { href: `#/chat/${encodeURIComponent(room.id)}` }, await userName(peer))),
        h("td", { class: "muted" }, last),
      ),
    );
  }
  view().replaceChildren(
    h(
      "section",
      {},
      h("h2", {}, "Chat rooms"),
      rows.length
        ? h("table", { id: "rooms" }, rows)
        : h("p", { class: "muted" }, "No rooms yet: open one from a product (Chat with seller)."),
    ),
  );
}

async function renderRoom(id) {
  const me = state.session.me;
  const listed = await api("GET", "/chat/rooms?limit=100");
  const found = listed.items.find((room) => room.id === id);
  if (!found) throw new ApiError(404, "not_found", "no such room among yours");
  const room = roomState(found);
  const peer = room.members.find((member) => member !== me.id);
  room.peerName = await userName(peer);
  if (room.nextBefore === undefined) {
    await loadOlder(room);
  }
  const list = h("div", { class: "messages", id: "messages" });
  const older = h("button", { class: "secondary", id: "older", onclick: action(() => loadOlder(room)) }, "Load older");
  const input = h("input", { name: "text", id: "text", autocomplete: "off", maxlength: "4000", placeholder: "Message" });
  input.addEventListener("input", () => {
    // At most one typing frame every two seconds: the peer shows it for three.
    if (Date.now() - state.typingSentAt > 2000) {
      state.typingSentAt = Date.now();
      sendFrame({ type: "typing", room: room.id });
    }
  });
  const form = h("form", { id: "send" }, input, h("button", { type: "submit" }, "Send"));
  form.addEventListener(
    "submit",
    action(async () => {
      const text = input.value;
      if (!text.trim()) return;
      const clientMsgId = crypto.randomUUID();
      state.pending.set(clientMsgId, room.id);
      if (sendFrame({ type: "send", room: room.id, text, clientMsgId })) input.value = "";
    }),
  );
  const presence = h("ul", { class: "presence", id: "presence" });
  view().replaceChildren(
    h(
      "section",
      {},
      h("h2", {}, `Chat with ${room.peerName}`),
      h(
        "div",
        { class: "chat" },
        h(
          "div",
          {},
          older,
          h("p", { class: "muted", id: "history-start", hidden: true }, "The start of the conversation."),
          list,
          h("div", { class: "typing", id: "typing" }),
          form,
        ),
        h("div", {}, h("h2", {}, "Online"), presence),
      ),
    ),
  );
  drawMessages(room);
  drawPresence(room);
  if (!room.joined) {
    room.joined = true;
    sendFrame({ type: "join", room: room.id, since: room.lastSeq });
  }
  markRead(room);
}

async function loadOlder(room) {
  if (room.nextBefore === null) return;
  const before = room.nextBefore === undefined ? "" : `&before=${room.nextBefore}`;
  const page = await api("GET", `/chat/rooms/${encodeURIComponent(room.id)}/messages?limit=50${before}`);
  for (const message of page.items) addMessage(room, message);
  room.nextBefore = page.nextBefore;
  if (currentRoom() === room.id) drawMessages(room, { keepScroll: true });
}

function addMessage(room, message) {
  room.messages.set(message.seq, message);
  room.lastSeq = Math.max(room.lastSeq, message.seq);
}

function currentRoom() {
  const match = location.hash.match(/^#\/chat\/([^/]+)$/);
  return match ? decodeURIComponent(match[1]) : null;
}

function drawMessages(room, { keepScroll = false } = {}) {
  const list = document.getElementById("messages");
  if (!list) return;
  const me = state.session.me;
  const fromBottom = list.scrollHeight - list.scrollTop;
  const peerRead = Math.max(0, ...[...room.readBy].filter(([user]) => user !== me.id).map(([, seq]) => seq));
  const seqs = [...room.messages.keys()].sort((a, b) => a - b);
  list.replaceChildren(
    ...seqs.map((seq) => {
      const message = room.messages.get(seq);
      const mine = message.from === me.id;
      return h(
        "div",
        { class: mine ? "message mine" : "message", dataset: { seq: String(seq) } },
        h("div", { class: "text" }, message.text),
        h(
          "div",
          { class: "meta" },
          `#${seq} · ${new Date(message.sentAt).toLocaleTimeString()}`,
          mine && seq <= peerRead ? h("span", { class: "receipt" }, "✓ read") : null,
        ),
      );
    }),
  );
  // Hidden, not disabled, at the start of the conversation: the click's handler re-enables its
  // button when it ends.
  const older = document.getElementById("older");
  if (older) older.hidden = room.nextBefore === null;
  const start = document.getElementById("history-start");
  if (start) start.hidden = room.nextBefore !== null;
  // Paging older keeps the view where it was; anything else shows the newest.
  list.scrollTop = keepScroll ? list.scrollHeight - fromBottom : list.scrollHeight;
}

function onMessage(message) {
  const room = state.rooms.get(message.room);
  if (!room) return;
  addMessage(room, message);
  if (currentRoom() === room.id) {
    drawMessages(room);
    clearTyping(room, message.from);
    markRead(room);
  }
}

// Tells the room how far this user has read, when the room is on screen.
function markRead(room) {
  const me = state.session.me;
  if (document.visibilityState !== "visible" || currentRoom() !== room.id || room.lastSeq === 0) return;
  if ((room.readBy.get(me.id) || 0) >= room.lastSeq) return;
  room.readBy.set(me.id, room.lastSeq);
  sendFrame({ type: "read", room: room.id, seq: room.lastSeq });
}

function onRead(frame) {
  const room = state.rooms.get(frame.room);
  if (!room) return;
  room.readBy.set(frame.from, Math.max(room.readBy.get(frame.from) || 0, frame.seq));
  if (currentRoom() === room.id) drawMessages(room);
}

function onTyping(frame) {
  const room = state.rooms.get(frame.room);
  if (!room || frame.from === state.session.me.id || currentRoom() !== room.id) return;
  const box = document.getElementById("typing");
  if (box) box.textContent = `${room.peerName} is typing…`;
  clearTimeout(state.typingTimers.get(room.id));
  state.typingTimers.set(
    room.id,
    setTimeout(() => clearTyping(room, frame.from), 3000),
  );
}

function clearTyping(room, from) {
  if (from === state.session.me.id) return;
  const box = document.getElementById("typing");
  if (box && currentRoom() === room.id) box.textContent = "";
}

function onPresence(frame) {
  const room = state.rooms.get(frame.room);
  if (!room) return;
  room.online = frame.online;
  if (currentRoom() === room.id) drawPresence(room);
}

function drawPresence(room) {
  const list = document.getElementById("presence");
  if (!list) return;
  const me = state.session.me;
  list.replaceChildren(
    ...room.members.map((id) => {
      const online = room.online.includes(id);
      const name = id === me.id ? "you" : room.peerName;
      return h("li", { class: online ? "online" : "offline", dataset: { user: id } }, online ? name : `${name} (away)`);
    }),
  );
}

// ---- the cluster ----

async function renderCluster() {
  await drawCluster();
  // Refreshed while on screen; route() stops it when the view changes.
  state.clusterTimer = setInterval(() => drawCluster().catch(showError), 2000);
}

async function drawCluster() {
  const cluster = await api("GET", "/cluster");
  if (location.hash !== "#/cluster") return;
  const kinds = Object.keys(cluster.shards || {}).sort();
  const members = h(
    "table",
    { id: "members" },
    h("tr", {}, h("th", {}, "Node"), h("th", {}, "HTTP"), h("th", {}, "Status"), h("th", {}, "Live entities")),
    cluster.members.map((member) =>
      h(
        "tr",
        { dataset: { node: member.name } },
        h("td", {}, member.name === cluster.self ? `${member.name} (this node)` : member.name),
        h("td", {}, h("code", {}, member.httpAddr || "")),
        h("td", {}, statusBadge(member.status)),
        h("td", {}, String(member.entities)),
      ),
    ),
  );
  const shards = h(
    "table",
    { id: "shards" },
    h("tr", {}, h("th", {}, "Entity kind"), cluster.members.map((member) => h("th", {}, member.name))),
    kinds.map((kind) =>
      h(
        "tr",
        {},
        h("td", {}, kind),
        cluster.members.map((member) => h("td", {}, String((cluster.shards[kind] || {})[member.name] || 0))),
      ),
    ),
  );
  view().replaceChildren(
    h("section", {}, h("h2", {}, `Cluster members (seen from ${cluster.self})`), members),
    h("section", {}, h("h2", {}, "Where entities live"), kinds.length ? shards : h("p", { class: "muted" }, "None live.")),
  );
}

// ---- start ----

document.addEventListener("visibilitychange", () => {
  const id = currentRoom();
  if (id && state.rooms.has(id)) markRead(state.rooms.get(id));
});
window.addEventListener("hashchange", route);
renderHeader();
if (state.session) startSocket();
route();
