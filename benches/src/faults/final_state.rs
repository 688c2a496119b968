//! The final state a fault run reads once the faults have healed and the cluster is quiet: every
//! product, order, payment and room history (over the API, in its shapes), and the simulated
//! gateway's ledger.
//!
//! The ledger is not readable over the API: the simulated gateway keeps it in the cluster's own
//! database (table `gateway_charges`). The runner reads every row there
//! (`bazaar_actors::store::payments::ledger_charges`): a charge for a payment the API never shows
//! is a finding too.

use bazaar_protocol::catalog::Product;
use bazaar_protocol::chat::ChatMessage;
use bazaar_protocol::orders::Order;
use bazaar_protocol::payments::Payment;
use bazaar_protocol::{PaymentId, RoomId};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Everything the checker compares the history with, read after the faults healed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FinalState {
    /// Every product of the run's sellers (`GET /products?sellerId=`, all pages).
    pub products: Vec<Product>,
    /// Every order of the run's buyers (`GET /orders?role=buyer`, all pages of each buyer).
    pub orders: Vec<Order>,
    /// The payment of every order that names one, and of every payment id in the history
    /// (`GET /payments/{id}`).
    pub payments: Vec<Payment>,
    /// Every room's whole history (`GET /chat/rooms/{id}/messages`, all pages).
    pub rooms: Vec<RoomHistory>,
    /// The simulated gateway's ledger: one row per payment it was asked to charge.
    pub ledger: Vec<LedgerCharge>,
    /// Every stored event's entity and version (`events` table): one entity version committed
    /// twice means two nodes that both believed they owned the entity both wrote it.
    #[serde(default)]
    pub versions: Vec<EntityVersion>,
}

/// One stored event: the entity it belongs to, the entity's version after it, and its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityVersion {
    pub entity_id: String,
    pub seq: i64,
    pub event_id: String,
}

/// One room and all of its messages, in any order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomHistory {
    pub id: RoomId,
    pub messages: Vec<ChatMessage>,
}

/// A row of the simulated gateway's ledger (`gateway_charges`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerCharge {
    pub payment_id: PaymentId,
    /// What was charged.
    pub amount: i64,
    /// `approved`, or the decline reason (`card_declined`, ...).
    pub outcome: String,
    /// What has been given back of it.
    pub refunded_amount: i64,
}

impl LedgerCharge {
    /// Whether the gateway took the money.
    pub fn approved(&self) -> bool {
        self.outcome == "approved"
    }
}

/// Reads a final-state file (one JSON object).
pub fn read(path: &Path) -> anyhow::Result<FinalState> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}
