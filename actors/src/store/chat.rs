//! Chat rooms and their messages.

use super::{query, timestamp, Store, StoreError, Tx, Write};
use bazaar_protocol::chat::{ChatMessage, Room};
use bazaar_protocol::Page;
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
    message_from_columns(row, "")
}

/// A message from the columns of `row` named with `prefix` (`m_` where a room's last message is
/// joined in beside the room's own columns).
fn message_from_columns(row: &AnyRow, prefix: &str) -> Result<ChatMessage, StoreError> {
    // No allocation for the plain names (history and replay read those, page after page).
    let column = |name: &'static str| -> std::borrow::Cow<'static, str> {
        if prefix.is_empty() {
            name.into()
        } else {
            format!("{prefix}{name}").into()
        }
    };
    Ok(ChatMessage {
        room: row.try_get::<String, _>(&*column("room_id"))?.into(),
        seq: row.try_get(&*column("seq"))?,
        id: row.try_get(&*column("id"))?,
        from: row.try_get::<String, _>(&*column("sender_id"))?.into(),
        text: row.try_get(&*column("text"))?,
        sent_at: timestamp::column(row, &column("sent_at"))?,
    })
}

/// Loads a room.
pub async fn load(store: &Store, id: &str) -> Result<Option<RoomRecord>, StoreError> {
    let row = query(store, "SELECT * FROM chat_rooms WHERE id = $1").bind(id).fetch_optional(store.reader()).await?;
    row.as_ref().map(room_from_row).transpose()
}

/// Inserts a new, empty room at version 1.
pub fn insert(tx: &mut Tx, room: &Room) -> Result<(), StoreError> {
    let write = Write::new(
        "INSERT INTO chat_rooms (id, buyer_id, seller_id, created_at, last_seq, version) VALUES ($1, $2, $3, $4, 0, 1)",
    )
    .bind(room.id.as_str())
    .bind(room.members[0].as_str())
    .bind(room.members[1].as_str())
    .bind(timestamp::encode(room.created_at));
    tx.defer(write);
    Ok(())
}

/// The message a sender already posted with this client id, if any.
pub async fn find_by_client_id(
    tx: &mut Tx,
    room_id: &str,
    sender_id: &str,
    client_msg_id: &str,
) -> Result<Option<ChatMessage>, StoreError> {
    let row = query(tx, "SELECT * FROM chat_messages WHERE room_id = $1 AND sender_id = $2 AND client_msg_id = $3")
        .bind(room_id)
        .bind(sender_id)
        .bind(client_msg_id)
        .fetch_optional(tx.read().await?)
        .await?;
    row.as_ref().map(message_from_row).transpose()
}

/// Appends a message and moves the room's `last_seq` to it, if the room is still at `version`.
pub fn append(tx: &mut Tx, message: &ChatMessage, client_msg_id: &str, version: i64) -> Result<(), StoreError> {
    let write = Write::new("UPDATE chat_rooms SET last_seq = $1, version = version + 1 WHERE id = $2 AND version = $3")
        .bind(message.seq)
        .bind(message.room.as_str())
        .bind(version)
        .expect_one();
    tx.defer(write);
    let write = Write::new("INSERT INTO chat_messages (room_id, seq, id, sender_id, client_msg_id, text, sent_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(message.room.as_str())
    .bind(message.seq)
    .bind(&message.id)
    .bind(message.from.as_str())
    .bind(client_msg_id)
    .bind(&message.text)
    .bind(timestamp::encode(message.sent_at))
    ;
    tx.defer(write);
    Ok(())
}

/// A page of history, newest first: messages with seq < `before`, at most `limit`.
pub async fn history(
    store: &Store,
    room_id: &str,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<ChatMessage>, StoreError> {
    let rows = query(
        store,
        "SELECT * FROM chat_messages WHERE room_id = $1 AND ($2 IS NULL OR seq < $3) ORDER BY seq DESC LIMIT $4",
    )
    .bind(room_id)
    .bind(before)
    .bind(before)
    .bind(i64::from(limit))
    .fetch_all(store.reader())
    .await?;
    rows.iter().map(message_from_row).collect()
}

/// A page of messages with `after < seq <= upto`, oldest first, at most `limit` (join replay and
/// gap filling read a backlog of any length page by page, so memory never grows with it).
pub async fn range(
    store: &Store,
    room_id: &str,
    after: i64,
    upto: i64,
    limit: u32,
) -> Result<Vec<ChatMessage>, StoreError> {
    let rows =
        query(store, "SELECT * FROM chat_messages WHERE room_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4")
            .bind(room_id)
            .bind(after)
            .bind(upto)
            .bind(i64::from(limit))
            .fetch_all(store.reader())
            .await?;
    rows.iter().map(message_from_row).collect()
}

/// A page of the rooms a user is a member of, newest first, each with its newest message, read
/// in one query. `cursor` is the `next_cursor` of the page before.
pub async fn rooms_of(
    store: &Store,
    user_id: &str,
    limit: u32,
    cursor: Option<&str>,
) -> Result<Page<Room>, StoreError> {
    // The cursor names the last room shown, `created_at` and id: rooms come newest first, ties by
    // id, and the next page starts strictly after it. An unreadable cursor starts nowhere.
    let (after_created, after_id) = match cursor {
        None => (None, None),
        Some(raw) => match raw.split_once('~') {
            Some((created, id)) => (Some(created), Some(id)),
            None => (Some(""), Some("")),
        },
    };
    let rows = query(
        store,
        "SELECT r.id, r.buyer_id, r.seller_id, r.created_at, r.last_seq, r.version,
                m.room_id AS m_room_id, m.seq AS m_seq, m.id AS m_id, m.sender_id AS m_sender_id,
                m.text AS m_text, m.sent_at AS m_sent_at
         FROM chat_rooms r
         LEFT JOIN chat_messages m ON m.room_id = r.id AND m.seq = r.last_seq
         WHERE (r.buyer_id = $1 OR r.seller_id = $2)
           AND ($3 IS NULL OR r.created_at < $4 OR (r.created_at = $5 AND r.id > $6))
         ORDER BY r.created_at DESC, r.id
         LIMIT $7",
    )
    .bind(user_id)
    .bind(user_id)
    .bind(after_created)
    .bind(after_created)
    .bind(after_created)
    .bind(after_id)
    .bind(i64::from(limit) + 1)
    .fetch_all(store.reader())
    .await?;
    let mut items = Vec::with_capacity(rows.len());
    let mut keys = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut room = room_from_row(row)?.room;
        let seq: Option<i64> = row.try_get("m_seq")?;
        if seq.is_some() {
            room.last_message = Some(message_from_columns(row, "m_")?);
        }
        keys.push(format!("{}~{}", row.try_get::<String, _>("created_at")?, room.id.as_str()));
        items.push(room);
    }
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        keys.get(limit as usize - 1).cloned()
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// Whether `user_id` is one of the room's two members.
pub fn member_of(room: &Room, user_id: &str) -> bool {
    room.members.iter().any(|m| m.as_str() == user_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::fresh_store;
    use chrono::{TimeZone, Utc};

    async fn open(store: &Store, id: &str, buyer: &str, seller: &str, at_secs: i64) {
        let room = Room {
            id: id.into(),
            members: [buyer.into(), seller.into()],
            created_at: Utc.timestamp_opt(at_secs, 0).unwrap(),
            last_message: None,
        };
        let mut tx = store.begin().await.unwrap();
        insert(&mut tx, &room).unwrap();
        store.commit(tx).await.unwrap();
    }

    #[tokio::test]
    async fn room_pages_follow_the_cursor_through_rooms_opened_at_the_same_instant() {
        let (store, _db) = fresh_store().await;
        // Three rooms opened in the same instant (ties broken by id), one older, one not the user's.
        for (id, at) in [("r-b", 200), ("r-a", 200), ("r-c", 200), ("r-old", 100)] {
            open(&store, id, "buyer", &format!("seller-{id}"), at).await;
        }
        open(&store, "r-other", "someone", "seller-x", 300).await;
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10 {
            let page = rooms_of(&store, "buyer", 2, cursor.as_deref()).await.unwrap();
            assert!(page.items.len() <= 2);
            seen.extend(page.items.iter().map(|r| r.id.as_str().to_owned()));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, ["r-a", "r-b", "r-c", "r-old"]);
        // The seller side sees its room too.
        let seller = rooms_of(&store, "seller-r-old", 20, None).await.unwrap();
        assert_eq!(seller.items.len(), 1);
        assert!(seller.next_cursor.is_none());
    }
}
