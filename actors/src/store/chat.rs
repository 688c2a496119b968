//! Chat rooms and their messages.

use super::{expect_one, timestamp, Store, StoreError, Tx};
use bazaar_protocol::chat::{ChatMessage, Room};
use sqlx::any::AnyRow;
use sqlx::Row;

/// A room as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    /// What clients see (without `lastMessage`).
    pub room: Room,
    /// The seq of the newest message (0 when empty).
    pub last_seq: i64,
    /// The row version.
    pub version: i64,
}

fn room_from_row(row: &AnyRow) -> Result<RoomRecord, StoreError> {
    Ok(RoomRecord {
        room: Room {
            id: row.try_get::<String, _>("id")?.into(),
            members: [row.try_get::<String, _>("buyer_id")?.into(), row.try_get::<String, _>("seller_id")?.into()],
            created_at: timestamp::column(row, "created_at")?,
            last_message: None,
        },
        last_seq: row.try_get("last_seq")?,
        version: row.try_get("version")?,
    })
}

fn message_from_row(row: &AnyRow) -> Result<ChatMessage, StoreError> {
    Ok(ChatMessage {
        room: row.try_get::<String, _>("room_id")?.into(),
        seq: row.try_get("seq")?,
        id: row.try_get("id")?,
        from: row.try_get::<String, _>("sender_id")?.into(),
        text: row.try_get("text")?,
        sent_at: timestamp::column(row, "sent_at")?,
    })
}

/// Loads a room.
pub async fn load(store: &Store, id: &str) -> Result<Option<RoomRecord>, StoreError> {
    let row = sqlx::query("SELECT * FROM chat_rooms WHERE id = $1").bind(id).fetch_optional(store.reader()).await?;
    row.as_ref().map(room_from_row).transpose()
}

/// Inserts a new, empty room at version 1.
pub async fn insert(tx: &mut Tx, room: &Room) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO chat_rooms (id, buyer_id, seller_id, created_at, last_seq, version) VALUES ($1, $2, $3, $4, 0, 1)",
    )
    .bind(room.id.as_str())
    .bind(room.members[0].as_str())
    .bind(room.members[1].as_str())
    .bind(timestamp::encode(room.created_at))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The message a sender already posted with this client id, if any.
pub async fn find_by_client_id(
    tx: &mut Tx,
    room_id: &str,
    sender_id: &str,
    client_msg_id: &str,
) -> Result<Option<ChatMessage>, StoreError> {
    let row = sqlx::query("SELECT * FROM chat_messages WHERE room_id = $1 AND sender_id = $2 AND client_msg_id = $3")
        .bind(room_id)
        .bind(sender_id)
        .bind(client_msg_id)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(message_from_row).transpose()
}

/// Appends a message and moves the room's `last_seq` to it, if the room is still at `version`.
pub async fn append(tx: &mut Tx, message: &ChatMessage, client_msg_id: &str, version: i64) -> Result<(), StoreError> {
    let done = sqlx::query("UPDATE chat_rooms SET last_seq = $1, version = version + 1 WHERE id = $2 AND version = $3")
        .bind(message.seq)
        .bind(message.room.as_str())
        .bind(version)
        .execute(&mut **tx)
        .await?;
    expect_one(done)?;
    sqlx::query(
        "INSERT INTO chat_messages (room_id, seq, id, sender_id, client_msg_id, text, sent_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(message.room.as_str())
    .bind(message.seq)
    .bind(&message.id)
    .bind(message.from.as_str())
    .bind(client_msg_id)
    .bind(&message.text)
    .bind(timestamp::encode(message.sent_at))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A page of history, newest first: messages with seq < `before`, at most `limit`.
pub async fn history(
    store: &Store,
    room_id: &str,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<ChatMessage>, StoreError> {
    let rows = sqlx::query(
        "SELECT * FROM chat_messages WHERE room_id = $1 AND ($2 IS NULL OR seq < $2) ORDER BY seq DESC LIMIT $3",
    )
    .bind(room_id)
    .bind(before)
    .bind(i64::from(limit))
    .fetch_all(store.reader())
    .await?;
    rows.iter().map(message_from_row).collect()
}

/// Messages with `after < seq <= upto`, oldest first (join replay and gap filling).
pub async fn range(store: &Store, room_id: &str, after: i64, upto: i64) -> Result<Vec<ChatMessage>, StoreError> {
    let rows = sqlx::query("SELECT * FROM chat_messages WHERE room_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq")
        .bind(room_id)
        .bind(after)
        .bind(upto)
        .fetch_all(store.reader())
        .await?;
    rows.iter().map(message_from_row).collect()
}

/// The rooms a user is a member of, each with its newest message.
pub async fn rooms_of(store: &Store, user_id: &str) -> Result<Vec<Room>, StoreError> {
    let rows =
        sqlx::query("SELECT * FROM chat_rooms WHERE buyer_id = $1 OR seller_id = $1 ORDER BY created_at DESC, id")
            .bind(user_id)
            .fetch_all(store.reader())
            .await?;
    let mut rooms = Vec::with_capacity(rows.len());
    for row in &rows {
        let record = room_from_row(row)?;
        let mut room = record.room;
        if record.last_seq > 0 {
            room.last_message = range(store, room.id.as_str(), record.last_seq - 1, record.last_seq).await?.pop();
        }
        rooms.push(room);
    }
    Ok(rooms)
}

/// Whether `user_id` is one of the room's two members.
pub fn member_of(room: &Room, user_id: &str) -> bool {
    room.members.iter().any(|m| m.as_str() == user_id)
}
