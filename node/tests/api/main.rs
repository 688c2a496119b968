//! Black-box tests of the `bazaar` binary: every test starts its own node on port 0 with a fresh
//! data directory (see [`support`], built on [`common`], which the `cluster` tests share) and
//! talks to it over HTTP and WebSocket only, as the contract in docs/API.md describes.
//!
//! One module per area: `auth`, `catalog`, `orders`, `payments`, `chat_http` and `websocket`
//! follow the API's tables; `operations` covers the probes; `bad_input` and `fuzz` throw malformed
//! and random input; `hardening_http` stalls, floods and aborts connections and sockets;
//! `concurrency` races requests; `crash` kills the node with SIGKILL and checks that acknowledged
//! writes survive; `openapi` holds `/openapi.json` to the routes the node serves and to docs/API.md;
//! `first_hour` covers what a person meets first: refused settings, servers that
//! are not there, a taken port, and what the logs say.

#[path = "../common/mod.rs"]
mod common;
mod support;
#[path = "../common/webhook_receiver.rs"]
mod webhook_receiver;

mod auth;
mod bad_input;
mod cart;
mod catalog;
mod chat_http;
mod checkout;
mod checkout_payment;
mod concurrency;
mod cors;
mod crash;
mod demo;
mod first_hour;
mod fuzz;
mod hardening_auth;
mod hardening_chat;
mod hardening_hold;
mod hardening_http;
mod hardening_idle;
mod hardening_saga;
mod kafka;
mod lean_entities;
mod lean_sockets;
mod openapi;
mod operations;
mod orders;
mod payments;
mod redis;
mod refunds;
mod timeline;
mod toss;
mod toss_emulator;
mod webhooks;
mod websocket;
