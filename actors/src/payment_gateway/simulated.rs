//! The built-in simulated gateway: it answers by card token and keeps a ledger keyed by payment
//! id, so asking it twice about one payment (after a crash, a redelivery) never charges twice,
//! with the amounts charged and given back (one refund per idempotency key, never more than
//! the charge).

use super::{
    ChargeRecord, ChargeRequest, ChargeState, Charged, GatewayError, GatewayFuture, LookupRequest, PaymentGateway,
    RefundRequest,
};
use crate::store::{payments, payments::LedgerRefund, Store, StoreError};
use std::time::Duration;

/// The built-in gateway: approves every token except `tok_decline` (declined, `card_declined`),
/// `tok_timeout` (never answers, charges nothing), `tok_lost` (charges, then never answers: a
/// lost answer) and `tok_slow` (approves after about a second).
pub struct SimulatedGateway {
    ledger: Store,
}

impl SimulatedGateway {
    /// Builds the gateway over its ledger.
    pub fn new(ledger: Store) -> Self {
        Self { ledger }
    }
}

fn outcome_from_ledger(payment_id: &str, outcome: &str) -> Result<Charged, GatewayError> {
    match outcome {
        "approved" => Ok(Charged { reference: payment_id.to_owned() }),
        reason => Err(GatewayError::Declined(reason.to_owned())),
    }
}

fn unavailable(e: StoreError) -> GatewayError {
    GatewayError::Unavailable(e.to_string())
}

impl PaymentGateway for SimulatedGateway {
    fn charge<'a>(&'a self, request: ChargeRequest<'a>) -> GatewayFuture<'a, Result<Charged, GatewayError>> {
        Box::pin(async move {
            let payment_id = request.payment_id;
            if let Some(earlier) = payments::find_charge(&self.ledger, payment_id).await.map_err(unavailable)? {
                return outcome_from_ledger(payment_id, &earlier);
            }
            let decided = match request.token {
                "tok_decline" => "card_declined",
                "tok_timeout" => std::future::pending().await,
                "tok_lost" => {
                    payments::record_charge(&self.ledger, payment_id, request.amount, "approved", chrono::Utc::now())
                        .await
                        .map_err(unavailable)?;
                    std::future::pending().await
                }
                "tok_slow" => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    "approved"
                }
                _ => "approved",
            };
            let first = payments::record_charge(&self.ledger, payment_id, request.amount, decided, chrono::Utc::now())
                .await
                .map_err(unavailable)?;
            outcome_from_ledger(payment_id, &first)
        })
    }

    fn refund<'a>(&'a self, request: RefundRequest<'a>) -> GatewayFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            let now = chrono::Utc::now();
            let done =
                payments::refund_charge(&self.ledger, request.payment_id, request.idempotency_key, request.amount, now)
                    .await
                    .map_err(unavailable)?;
            match done {
                LedgerRefund::Refunded(_) => Ok(()),
                LedgerRefund::NotCharged => Err(GatewayError::Declined("not_charged".into())),
                LedgerRefund::ExceedsCharge { left } => {
                    Err(GatewayError::Declined(format!("refund_exceeds_charge: {left} left")))
                }
            }
        })
    }

    fn lookup<'a>(
        &'a self,
        request: LookupRequest<'a>,
    ) -> GatewayFuture<'a, Result<Option<ChargeRecord>, GatewayError>> {
        Box::pin(async move {
            let charge = payments::ledger_charge(&self.ledger, request.payment_id).await.map_err(unavailable)?;
            Ok(charge.map(|charge| ChargeRecord {
                reference: request.payment_id.to_owned(),
                // The ledger is keyed by payment, and a payment pays one order.
                order_id: request.order_id.to_owned(),
                amount: charge.amount,
                refunded: charge.refunded_amount,
                state: match charge.outcome.as_str() {
                    "approved" => ChargeState::Charged,
                    reason => ChargeState::Declined(reason.to_owned()),
                },
            }))
        })
    }

    // An abandoned charge can still land: given up while its ledger write waited for the batch's
    // COMMIT, the write commits anyway (the fault runner found money taken for a payment
    // declined `gateway_timeout`). So the decline is written like any answer, first answer
    // wins: a charge that got there first is the answer, and one that comes later finds the
    // decline and charges nothing.
    fn settle_abandoned<'a>(&'a self, request: ChargeRequest<'a>) -> GatewayFuture<'a, Result<Charged, GatewayError>> {
        Box::pin(async move {
            let now = chrono::Utc::now();
            let first =
                payments::record_charge(&self.ledger, request.payment_id, request.amount, "gateway_timeout", now)
                    .await
                    .map_err(unavailable)?;
            outcome_from_ledger(request.payment_id, &first)
        })
    }

    fn name(&self) -> &'static str {
        "simulated"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::fresh_store;

    fn request<'a>(payment_id: &'a str, token: &'a str) -> ChargeRequest<'a> {
        ChargeRequest {
            payment_id,
            order_id: "order-1",
            customer: "buyer-1",
            token,
            amount: 5,
            currency: "KRW",
            idempotency_key: payment_id,
        }
    }

    #[tokio::test]
    async fn tokens_decide_the_outcome_and_repeats_are_answered_from_the_ledger() {
        let (store, _dir) = fresh_store().await;
        let gateway = SimulatedGateway::new(store);
        assert!(gateway.charge(request("p1", "tok_ok")).await.is_ok());
        assert_eq!(
            gateway.charge(request("p2", "tok_decline")).await,
            Err(GatewayError::Declined("card_declined".into()))
        );
        // Same payment id, other token: the first answer stands.
        assert!(gateway.charge(request("p1", "tok_decline")).await.is_ok());
    }

    #[tokio::test]
    async fn the_timeout_token_never_answers() {
        let (store, _dir) = fresh_store().await;
        let gateway = SimulatedGateway::new(store);
        let answer =
            tokio::time::timeout(Duration::from_millis(200), gateway.charge(request("p3", "tok_timeout"))).await;
        assert!(answer.is_err());
        assert_eq!(
            gateway.settle_abandoned(request("p3", "tok_timeout")).await,
            Err(GatewayError::Declined("gateway_timeout".into()))
        );
    }

    #[tokio::test]
    async fn a_lost_answer_is_found_charged_once_the_caller_gives_up() {
        let (store, _dir) = fresh_store().await;
        let gateway = SimulatedGateway::new(store);
        let answer = tokio::time::timeout(Duration::from_millis(200), gateway.charge(request("p4", "tok_lost"))).await;
        assert!(answer.is_err());
        assert!(gateway.settle_abandoned(request("p4", "tok_lost")).await.is_ok());
    }

    #[tokio::test]
    async fn a_charge_that_lands_after_its_payment_was_settled_as_abandoned_charges_nothing() {
        // The payment gave up on a charge whose ledger write was still waiting for its COMMIT,
        // and settled it: the write that lands afterwards must find the decline, not charge.
        let (store, _dir) = fresh_store().await;
        let gateway = SimulatedGateway::new(store.clone());
        assert_eq!(
            gateway.settle_abandoned(request("p5", "tok_ok")).await,
            Err(GatewayError::Declined("gateway_timeout".into()))
        );
        assert_eq!(
            gateway.charge(request("p5", "tok_ok")).await,
            Err(GatewayError::Declined("gateway_timeout".into()))
        );
        let charge = payments::ledger_charge(&store, "p5").await.unwrap().unwrap();
        assert_eq!(charge.outcome, "gateway_timeout");
    }
}
