//! Chat: room bodies, messages, and the WebSocket frames in both directions.

use crate::ids::{RoomId, UserId};
use crate::orders::Order;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `POST /chat/rooms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OpenRoomRequest {
    /// The other member: a seller when the caller buys, a buyer when the caller sells.
    pub peer_id: String,
}

/// A chat room as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Room {
    /// The room's id.
    pub id: RoomId,
    /// `[buyerId, sellerId]`, buyer first.
    #[cfg_attr(feature = "openapi", schema(min_items = 2, max_items = 2))]
    pub members: [UserId; 2],
    /// When it was opened.
    pub created_at: DateTime<Utc>,
    /// The newest message, in listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message: Option<ChatMessage>,
}

/// One posted chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    /// The room it was posted to.
    pub room: RoomId,
    /// Its place in the room: gapless, from 1.
    pub seq: i64,
    /// A unique id.
    pub id: String,
    /// The sender.
    pub from: UserId,
    /// The text, 1 to 4000 characters.
    pub text: String,
    /// When the room accepted it.
    pub sent_at: DateTime<Utc>,
}

/// One page of a room's history, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct HistoryPage {
    /// The messages, newest first.
    pub items: Vec<ChatMessage>,
    /// Pass as `before` for the next (older) page; null on the last page.
    pub next_before: Option<i64>,
}

/// A WebSocket text frame from the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientFrame {
    /// Subscribes to a room, first replaying what came after `since`.
    Join {
        room: RoomId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<i64>,
    },
    /// Posts a message; `clientMsgId` makes a resend harmless.
    Send {
        room: RoomId,
        text: String,
        #[serde(rename = "clientMsgId")]
        client_msg_id: String,
    },
    /// Unsubscribes from a room.
    Leave { room: RoomId },
    /// Tells the room the caller is typing.
    Typing { room: RoomId },
    /// Tells the room the caller has read up to `seq`.
    Read { room: RoomId, seq: i64 },
}

/// A WebSocket text frame from the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame {
    /// The join succeeded; sent before any replay.
    Joined {
        room: RoomId,
        #[serde(rename = "lastSeq")]
        last_seq: i64,
    },
    /// A message of a joined room.
    Message(ChatMessage),
    /// The room accepted a `send`.
    Ack {
        #[serde(rename = "clientMsgId")]
        client_msg_id: String,
        seq: i64,
    },
    /// Someone in the room is typing.
    Typing { room: RoomId, from: UserId },
    /// Someone in the room has read up to `seq`.
    Read { room: RoomId, from: UserId, seq: i64 },
    /// Who is in the room now.
    Presence { room: RoomId, online: Vec<UserId> },
    /// One of the user's orders changed status.
    Order { order: Order },
    /// A frame was refused; the connection stays open unless a close follows.
    Error { code: String, message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_use_the_documented_field_names() {
        let frame: ClientFrame =
            serde_json::from_str(r#"{"type":"send","room":"r","text":"hi","clientMsgId":"c1"}"#).unwrap();
        assert_eq!(frame, ClientFrame::Send { room: "r".into(), text: "hi".into(), client_msg_id: "c1".into() });
        let joined = serde_json::to_value(ServerFrame::Joined { room: "r".into(), last_seq: 4 }).unwrap();
        assert_eq!(joined, serde_json::json!({"type":"joined","room":"r","lastSeq":4}));
    }
}
