//! Entity identifiers: UUID v7 strings, so they sort by creation time.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// Makes a fresh, time-ordered identifier.
            pub fn generate() -> Self {
                Self(uuid::Uuid::now_v7().to_string())
            }

            /// Borrows the identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self(value)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }
    };
}

id_type!(
    /// Identifies a user account.
    UserId
);
id_type!(
    /// Identifies a product of the catalog.
    ProductId
);
id_type!(
    /// Identifies an order.
    OrderId
);
id_type!(
    /// Identifies a payment.
    PaymentId
);
id_type!(
    /// Identifies a checkout: one cart turned into orders, one per seller.
    CheckoutId
);
id_type!(
    /// Identifies a chat room.
    RoomId
);
id_type!(
    /// Identifies an event; consumers de-duplicate by it.
    EventId
);

/// Namespace for the deterministic room ids: one room per buyer–seller pair.
const ROOM_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6ba7b812_9dad_11d1_80b4_00c04fd430c8);

impl RoomId {
    /// Derives the id of the one room a buyer and a seller share, so opening it twice (from either
    /// side, on any node) lands on the same entity without a lookup.
    pub fn for_pair(buyer: &UserId, seller: &UserId) -> Self {
        let name = format!("{}:{}", buyer.0, seller.0);
        Self(uuid::Uuid::new_v5(&ROOM_NAMESPACE, name.as_bytes()).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_always_derives_the_same_room() {
        let buyer = UserId::from("b");
        let seller = UserId::from("s");
        assert_eq!(RoomId::for_pair(&buyer, &seller), RoomId::for_pair(&buyer, &seller));
        assert_ne!(RoomId::for_pair(&buyer, &seller), RoomId::for_pair(&seller, &buyer));
    }

    #[test]
    fn generated_ids_sort_by_creation() {
        let first = OrderId::generate();
        let second = OrderId::generate();
        assert!(first < second);
    }
}
