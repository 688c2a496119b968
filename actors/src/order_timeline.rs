//! An order's timeline: the order's own events and its payment's, told as one story. Plain
//! functions over stored events; the order entity reads the events and calls them.
//!
//! The two streams are each in version order, but their clocks are two entities' (possibly two
//! nodes'), so time alone may put an effect before its cause: the merge first keeps each event
//! after the event of the other stream that caused it (a payment is requested after the order
//! was placed; the order is paid after its payment's approval, cancelled after the decline,
//! refunded after the refund that gave back the last of it), and orders by time only the rest.

use bazaar_protocol::events::{topics, Envelope, Event};
use bazaar_protocol::orders::{ChangedBy, Order, OrderEvent, OrderStatus, OrderTimeline};
use bazaar_protocol::payments::Payment;
use bazaar_protocol::OrderId;

use crate::store::{history, Store, StoreError};

/// The `OrderCancelled` reasons that name a person; any other is the system's.
const BY_BUYER: &str = "cancelled_by_buyer";
const BY_SELLER: &str = "cancelled_by_seller";

/// Reads `order`'s timeline: its events and its payment's, at most `max` in all.
pub async fn read(store: &Store, order: &Order, max: usize) -> Result<OrderTimeline, StoreError> {
    // One more than fits, from each stream: the merge of those is right for the first `max`
    // and tells whether anything was left out.
    let own = history::of_entity(store, topics::ORDERS, order.id.as_str(), max + 1).await?;
    let paying = match &order.payment_id {
        Some(payment) => history::of_entity(store, topics::PAYMENTS, payment.as_str(), max + 1).await?,
        None => Vec::new(),
    };
    Ok(timeline(order.id.clone(), &own, &paying, max))
}

/// The timeline of order `order_id` from its events (`own`) and its payment's (`paying`), each in
/// version order; at most `max` entries.
pub fn timeline(order_id: OrderId, own: &[Envelope], paying: &[Envelope], max: usize) -> OrderTimeline {
    // A stream read to `max + 1` rows may go on past them.
    let cut = (own.len() > max, paying.len() > max);
    let own: Vec<&Envelope> = own.iter().filter(|e| is_order_change(&e.event)).collect();
    let paying: Vec<&Envelope> = paying.iter().filter(|e| is_payment_change(&e.event, &order_id)).collect();
    let merged = merge(&own, &paying, cut, &order_id);
    let truncated = merged.len() > max;
    let mut events = Vec::with_capacity(merged.len().min(max));
    let mut status = OrderStatus::Ordered;
    let mut last_refund_by = ChangedBy::Seller;
    for envelope in merged.into_iter().take(max) {
        let entry = entry(envelope, status, last_refund_by, &order_id);
        status = entry.status;
        if matches!(envelope.event, Event::PaymentRefunded { .. }) {
            last_refund_by = entry.by;
        }
        events.push(entry);
    }
    OrderTimeline { order_id, events, truncated }
}

fn is_order_change(event: &Event) -> bool {
    matches!(
        event,
        Event::OrderPlaced { .. }
            | Event::OrderCancelled { .. }
            | Event::OrderPaid { .. }
            | Event::OrderRefunded { .. }
    )
}

/// Whether `event` of the order's payment changed order `order`: a checkout's payment is refunded
/// seller by seller, and another seller's refund is not this order's.
fn is_payment_change(event: &Event, order: &OrderId) -> bool {
    match event {
        Event::PaymentRequested { .. } | Event::PaymentApproved { .. } | Event::PaymentDeclined { .. } => true,
        Event::PaymentRefunded { order_id, .. } => order_id.as_ref().is_none_or(|refunded| refunded == order),
        Event::UserRegistered { .. }
        | Event::ProductListed { .. }
        | Event::StockChanged(_)
        | Event::OrderPlaced { .. }
        | Event::OrderCancelled { .. }
        | Event::OrderPaid { .. }
        | Event::OrderRefunded { .. }
        | Event::ChatRoomOpened { .. }
        | Event::ChatMessagePosted { .. } => false,
    }
}

/// The event of the other stream that `event` follows from, as an index into it. When the other
/// stream was cut and the cause is not among its rows, the cause is past them: `other.len()`,
/// so the effect waits for the other stream's end.
fn cause_of(event: &Event, other: &[&Envelope], other_cut: bool, order: &OrderId) -> Option<usize> {
    let first = |wanted: fn(&Event) -> bool| {
        other.iter().position(|e| wanted(&e.event)).or(if other_cut { Some(other.len()) } else { None })
    };
    match event {
        Event::OrderPaid { .. } => first(|e| matches!(e, Event::PaymentApproved { .. })),
        Event::OrderCancelled { .. } => first(|e| matches!(e, Event::PaymentDeclined { .. })),
        Event::OrderRefunded { .. } => {
            let refunded = other.iter().position(
                |e| matches!(&e.event, Event::PaymentRefunded { payment, .. } if payment.refunded_in_full(order)),
            );
            refunded.or(if other_cut { Some(other.len()) } else { None })
        }
        Event::PaymentRequested { .. } => first(|e| matches!(e, Event::OrderPlaced { .. })),
        // What starts a stream, or follows from nothing in the other.
        Event::OrderPlaced { .. }
        | Event::PaymentApproved { .. }
        | Event::PaymentDeclined { .. }
        | Event::PaymentRefunded { .. }
        | Event::UserRegistered { .. }
        | Event::ProductListed { .. }
        | Event::StockChanged(_)
        | Event::ChatRoomOpened { .. }
        | Event::ChatMessagePosted { .. } => None,
    }
}

/// Both streams in one order that keeps each stream's own order and every cause before its
/// effect; otherwise by time, the order's event first on a tie.
fn merge<'a>(
    own: &[&'a Envelope],
    paying: &[&'a Envelope],
    (own_cut, paying_cut): (bool, bool),
    order: &OrderId,
) -> Vec<&'a Envelope> {
    let own_causes: Vec<Option<usize>> = own.iter().map(|e| cause_of(&e.event, paying, paying_cut, order)).collect();
    let paying_causes: Vec<Option<usize>> = paying.iter().map(|e| cause_of(&e.event, own, own_cut, order)).collect();
    let (mut i, mut j) = (0, 0);
    let mut merged = Vec::with_capacity(own.len() + paying.len());
    while i < own.len() || j < paying.len() {
        let take_own = if j == paying.len() {
            true
        } else if i == own.len() {
            false
        } else {
            let own_ready = own_causes[i].is_none_or(|k| k < j);
            let paying_ready = paying_causes[j].is_none_or(|k| k < i);
            match (own_ready, paying_ready) {
                (true, false) => true,
                (false, true) => false,
                // Both ready (or, with inconsistent data, neither): by time.
                _ => own[i].at <= paying[j].at,
            }
        };
        if take_own {
            merged.push(own[i]);
            i += 1;
        } else {
            merged.push(paying[j]);
            j += 1;
        }
    }
    merged
}

/// One entry: `status` is the order's before the event, `refund_by` who made the last refund.
fn entry(envelope: &Envelope, status: OrderStatus, refund_by: ChangedBy, order_id: &OrderId) -> OrderEvent {
    // A checkout's payment charges each order its own share of the amount.
    let share = |payment: &Payment| {
        payment.orders.iter().find(|s| &s.order_id == order_id).map_or(payment.amount, |s| s.amount)
    };
    let mut entry = OrderEvent {
        id: envelope.id.clone(),
        kind: envelope.event.type_name().to_owned(),
        at: envelope.at,
        by: ChangedBy::System,
        status,
        reason: None,
        amount: None,
        payment_id: None,
    };
    match &envelope.event {
        Event::OrderPlaced { order } => {
            entry.by = ChangedBy::Buyer;
            entry.status = order.status;
            entry.amount = Some(order.amount);
        }
        Event::OrderCancelled { order, reason } => {
            entry.by = match reason.as_str() {
                BY_BUYER => ChangedBy::Buyer,
                BY_SELLER => ChangedBy::Seller,
                _ => ChangedBy::System,
            };
            entry.status = order.status;
            entry.reason = Some(reason.clone());
        }
        Event::OrderPaid { order } => entry.status = order.status,
        Event::OrderRefunded { order } => {
            // The order is refunded because a refund gave back the last of its payment: whoever
            // made that refund made this change.
            entry.by = refund_by;
            entry.status = order.status;
        }
        Event::PaymentRequested { payment, order, .. } => {
            entry.by = ChangedBy::Buyer;
            entry.status = order.status;
            entry.amount = Some(share(payment));
            entry.payment_id = Some(payment.id.clone());
        }
        Event::PaymentApproved { payment } => {
            entry.amount = Some(share(payment));
            entry.payment_id = Some(payment.id.clone());
        }
        Event::PaymentDeclined { payment } => {
            entry.reason = payment.reason.clone();
            entry.payment_id = Some(payment.id.clone());
        }
        Event::PaymentRefunded { payment, amount, at_provider, .. } => {
            // Through the API only the seller refunds; the rest were found at the provider.
            entry.by = if *at_provider { ChangedBy::System } else { ChangedBy::Seller };
            // Events from before partial refunds gave back the whole payment.
            entry.amount = Some(amount.unwrap_or(payment.amount));
            entry.payment_id = Some(payment.id.clone());
        }
        Event::UserRegistered { .. }
        | Event::ProductListed { .. }
        | Event::StockChanged(_)
        | Event::ChatRoomOpened { .. }
        | Event::ChatMessagePosted { .. } => {}
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;
    use bazaar_protocol::payments::Payment;
    use bazaar_protocol::payments::PaymentStatus;
    use chrono::{DateTime, Duration, Utc};

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    fn order(status: OrderStatus) -> Order {
        Order {
            id: "o1".into(),
            buyer_id: "buyer".into(),
            seller_id: "seller".into(),
            product_id: "p1".into(),
            quantity: 2,
            amount: 200,
            currency: "KRW".into(),
            status,
            created_at: at(0),
            updated_at: at(0),
            expires_at: Some(at(0) + Duration::minutes(15)),
            payment_id: Some("pay1".into()),
            lines: Vec::new(),
            checkout_id: None,
        }
    }

    fn payment(status: PaymentStatus, refunded_amount: i64) -> Payment {
        Payment {
            id: "pay1".into(),
            order_id: Some("o1".into()),
            checkout_id: None,
            amount: 200,
            status,
            reason: None,
            refunded_amount,
            orders: Vec::new(),
        }
    }

    fn env(entity: &str, seq: i64, seconds: i64, event: Event) -> Envelope {
        Envelope::new(entity, seq, at(seconds), event)
    }

    /// A paid order refunded in two parts, the second at the provider.
    fn refunded_story(payment_clock_offset: i64) -> (Vec<Envelope>, Vec<Envelope>) {
        let p = payment_clock_offset;
        let own = vec![
            env("o1", 1, 0, Event::OrderPlaced { order: order(OrderStatus::Ordered) }),
            env("o1", 3, 3, Event::OrderPaid { order: order(OrderStatus::Paid) }),
            env("o1", 4, 6, Event::OrderRefunded { order: order(OrderStatus::Refunded) }),
        ];
        let paying = vec![
            env(
                "pay1",
                1,
                1 + p,
                Event::PaymentRequested {
                    payment: payment(PaymentStatus::Requested, 0),
                    order: order(OrderStatus::PaymentPending),
                    more_orders: Vec::new(),
                },
            ),
            env("pay1", 2, 2 + p, Event::PaymentApproved { payment: payment(PaymentStatus::Approved, 0) }),
            env(
                "pay1",
                3,
                4 + p,
                Event::PaymentRefunded {
                    payment: payment(PaymentStatus::Approved, 50),
                    amount: Some(50),
                    at_provider: false,
                    order_id: None,
                },
            ),
            env(
                "pay1",
                4,
                5 + p,
                Event::PaymentRefunded {
                    payment: payment(PaymentStatus::Refunded, 200),
                    amount: Some(150),
                    at_provider: true,
                    order_id: None,
                },
            ),
        ];
        (own, paying)
    }

    fn kinds(timeline: &OrderTimeline) -> Vec<&str> {
        timeline.events.iter().map(|e| e.kind.as_str()).collect()
    }

    const STORY: [&str; 7] = [
        "OrderPlaced",
        "PaymentRequested",
        "PaymentApproved",
        "OrderPaid",
        "PaymentRefunded",
        "PaymentRefunded",
        "OrderRefunded",
    ];

    #[test]
    fn a_refunded_order_reads_in_order_with_who_and_how_much() {
        let (own, paying) = refunded_story(0);
        let timeline = timeline("o1".into(), &own, &paying, 500);
        assert_eq!(kinds(&timeline), STORY);
        assert!(!timeline.truncated);
        let by: Vec<ChangedBy> = timeline.events.iter().map(|e| e.by).collect();
        use ChangedBy::*;
        assert_eq!(by, [Buyer, Buyer, System, System, Seller, System, System]);
        let statuses: Vec<OrderStatus> = timeline.events.iter().map(|e| e.status).collect();
        use OrderStatus::*;
        assert_eq!(statuses, [Ordered, PaymentPending, PaymentPending, Paid, Paid, Paid, Refunded]);
        let amounts: Vec<Option<i64>> = timeline.events.iter().map(|e| e.amount).collect();
        assert_eq!(amounts, [Some(200), Some(200), Some(200), None, Some(50), Some(150), None]);
    }

    #[test]
    fn causes_come_before_effects_whatever_the_clocks_say() {
        // The payment's node runs behind or ahead of the order's.
        for offset in [-100, -10, -1, 0, 10, 100] {
            let (own, paying) = refunded_story(offset);
            let timeline = timeline("o1".into(), &own, &paying, 500);
            let place = |kind: &str| kinds(&timeline).iter().position(|k| *k == kind).unwrap();
            let last_refund = kinds(&timeline).iter().rposition(|k| *k == "PaymentRefunded").unwrap();
            assert!(place("OrderPlaced") < place("PaymentRequested"), "offset {offset}");
            assert!(place("PaymentRequested") < place("PaymentApproved"), "offset {offset}");
            assert!(place("PaymentApproved") < place("OrderPaid"), "offset {offset}");
            assert!(last_refund < place("OrderRefunded"), "offset {offset}");
            assert_eq!(timeline.events.len(), STORY.len());
        }
        // Where the clocks are close, or the payment's runs ahead, time orders the rest.
        for offset in [-1, 0, 10, 100] {
            let (own, paying) = refunded_story(offset);
            assert_eq!(kinds(&timeline("o1".into(), &own, &paying, 500)), STORY, "offset {offset}");
        }
    }

    #[test]
    fn an_order_of_a_checkout_shows_its_own_share_and_refunds_only() {
        use bazaar_protocol::payments::PaymentShare;
        let share = |order: &str, refunded_amount: i64| PaymentShare {
            order_id: order.into(),
            seller_id: "s".into(),
            amount: if order == "o1" { 200 } else { 300 },
            refunded_amount,
        };
        let shared = |status, mine: i64, theirs: i64| Payment {
            order_id: None,
            checkout_id: Some("c1".into()),
            amount: 500,
            refunded_amount: mine + theirs,
            orders: vec![share("o1", mine), share("o2", theirs)],
            ..payment(status, 0)
        };
        let own = vec![
            env("o1", 1, 0, Event::OrderPlaced { order: order(OrderStatus::Ordered) }),
            env("o1", 3, 3, Event::OrderPaid { order: order(OrderStatus::Paid) }),
            env("o1", 4, 7, Event::OrderRefunded { order: order(OrderStatus::Refunded) }),
        ];
        let refund = |seq, seconds, payment, amount: i64, order: &str| {
            let event = Event::PaymentRefunded {
                payment,
                amount: Some(amount),
                at_provider: false,
                order_id: Some(order.into()),
            };
            env("pay1", seq, seconds, event)
        };
        let requested = Event::PaymentRequested {
            payment: shared(PaymentStatus::Requested, 0, 0),
            order: order(OrderStatus::PaymentPending),
            more_orders: Vec::new(),
        };
        let paying = vec![
            env("pay1", 1, 1, requested),
            env("pay1", 2, 2, Event::PaymentApproved { payment: shared(PaymentStatus::Approved, 0, 0) }),
            // The other seller refunds all of theirs first: not this order's change.
            refund(3, 4, shared(PaymentStatus::Approved, 0, 300), 300, "o2"),
            refund(4, 6, shared(PaymentStatus::Refunded, 200, 300), 200, "o1"),
        ];
        let timeline = timeline("o1".into(), &own, &paying, 50);
        assert_eq!(
            kinds(&timeline),
            ["OrderPlaced", "PaymentRequested", "PaymentApproved", "OrderPaid", "PaymentRefunded", "OrderRefunded"]
        );
        let amounts: Vec<Option<i64>> = timeline.events.iter().map(|e| e.amount).collect();
        assert_eq!((amounts[1], amounts[2], amounts[4]), (Some(200), Some(200), Some(200)), "this order's share");
    }

    #[test]
    fn a_declined_payment_cancels_the_order_after_the_decline() {
        let declined = Payment { reason: Some("card_declined".into()), ..payment(PaymentStatus::Declined, 0) };
        let cancelled = Event::OrderCancelled { order: order(OrderStatus::Cancelled), reason: "card_declined".into() };
        let own = vec![
            env("o1", 1, 0, Event::OrderPlaced { order: order(OrderStatus::Ordered) }),
            env("o1", 3, 1, cancelled),
        ];
        let paying = vec![
            env(
                "pay1",
                1,
                5,
                Event::PaymentRequested {
                    payment: payment(PaymentStatus::Requested, 0),
                    order: order(OrderStatus::PaymentPending),
                    more_orders: Vec::new(),
                },
            ),
            env("pay1", 2, 6, Event::PaymentDeclined { payment: declined }),
        ];
        let timeline = timeline("o1".into(), &own, &paying, 500);
        assert_eq!(kinds(&timeline), ["OrderPlaced", "PaymentRequested", "PaymentDeclined", "OrderCancelled"]);
        assert_eq!(timeline.events[2].reason.as_deref(), Some("card_declined"));
        assert_eq!(timeline.events[3].by, ChangedBy::System);
        assert_eq!(timeline.events[3].status, OrderStatus::Cancelled);
    }

    #[test]
    fn a_cancellation_names_who_cancelled() {
        for (reason, by) in
            [(BY_BUYER, ChangedBy::Buyer), (BY_SELLER, ChangedBy::Seller), ("reservation_expired", ChangedBy::System)]
        {
            let own = vec![
                env("o1", 1, 0, Event::OrderPlaced { order: order(OrderStatus::Ordered) }),
                env("o1", 2, 1, Event::OrderCancelled { order: order(OrderStatus::Cancelled), reason: reason.into() }),
            ];
            let timeline = timeline("o1".into(), &own, &[], 500);
            assert_eq!(timeline.events[1].by, by, "{reason}");
            assert_eq!(timeline.events[1].reason.as_deref(), Some(reason));
        }
    }

    #[test]
    fn a_long_timeline_keeps_the_oldest_and_says_it_was_cut() {
        let (own, paying) = refunded_story(0);
        let timeline = timeline("o1".into(), &own, &paying, 3);
        assert_eq!(kinds(&timeline), STORY[..3]);
        assert!(timeline.truncated);
    }

    #[test]
    fn an_effect_whose_cause_was_cut_off_waits_for_it() {
        // The payment's clock runs ahead, and its stream is read only to max + 1 = 6 rows: the
        // refund that refunded the order is past them, so the order's refund must not show.
        let (own, mut paying) = refunded_story(100);
        let partial = |seq: i64, seconds: i64| {
            env(
                "pay1",
                seq,
                seconds,
                Event::PaymentRefunded {
                    payment: payment(PaymentStatus::Approved, 10 * seq),
                    amount: Some(10),
                    at_provider: false,
                    order_id: None,
                },
            )
        };
        paying.truncate(2);
        paying.extend((3..7).map(|seq| partial(seq, 100 + seq)));
        let timeline = timeline("o1".into(), &own, &paying, 5);
        assert!(timeline.truncated);
        assert_eq!(
            kinds(&timeline),
            ["OrderPlaced", "PaymentRequested", "PaymentApproved", "OrderPaid", "PaymentRefunded"]
        );
    }

    #[test]
    fn other_events_of_the_entities_are_left_out() {
        let stock = Event::StockChanged(bazaar_protocol::events::StockChanged {
            product_id: "p1".into(),
            stock: 3,
            delta: -2,
            order_id: Some("o1".into()),
        });
        let own =
            vec![env("o1", 1, 0, Event::OrderPlaced { order: order(OrderStatus::Ordered) }), env("o1", 2, 0, stock)];
        assert_eq!(kinds(&timeline("o1".into(), &own, &[], 500)), ["OrderPlaced"]);
    }
}
