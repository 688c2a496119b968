//! `/chat/rooms`: opening a room with a peer, listing rooms, paging a room's history.

use super::{caller, json, json_body, limit_param, query, render, settle, text_param, ApiError, ApiResult};
use crate::app::App;
use crate::tokens::Caller;
use bazaar_actors::chat_room::{GetRoom, OpenRoom, RoomError};
use bazaar_actors::user::GetUser;
use bazaar_protocol::chat::{HistoryPage, OpenRoomRequest};
use bazaar_protocol::values::{Invalid, Role};
use bazaar_protocol::{RoomId, UserId};
use std::collections::HashMap;
use std::sync::Arc;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

impl From<RoomError> for ApiError {
    fn from(error: RoomError) -> Self {
        match error {
            RoomError::NotFound => ApiError::not_found("room"),
            RoomError::Forbidden => ApiError::forbidden("not a member of this room"),
            RoomError::Unavailable => ApiError::unavailable(),
        }
    }
}

/// The routes of this resource.
pub fn routes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let limit = app.settings.body_limit_bytes;
    let with_app = {
        let app = app.clone();
        warp::any().map(move || app.clone())
    };
    let open = warp::path!("chat" / "rooms")
        .and(warp::post())
        .and(with_app.clone())
        .and(caller(app.clone()))
        .and(json_body::<OpenRoomRequest>(limit))
        .and_then(|app, who, body| async move { render(open(app, who, body).await) });
    let list = warp::path!("chat" / "rooms")
        .and(warp::get())
        .and(with_app.clone())
        .and(caller(app.clone()))
        .and(query())
        .and_then(|app, who, query| async move { render(list(app, who, query).await) });
    let history = warp::path!("chat" / "rooms" / String / "messages")
        .and(warp::get())
        .and(with_app)
        .and(caller(app))
        .and(query())
        .and_then(|id, app, who, query| async move { render(history(app, who, id, query).await) });
    open.or(list).unify().or(history).unify().boxed()
}

async fn open(app: Arc<App>, who: Caller, body: OpenRoomRequest) -> ApiResult {
    let peer_id = UserId::from(body.peer_id);
    if peer_id == who.id {
        return Err(Invalid::new("peerId", "must be another user than the caller").into());
    }
    let peer = settle(app.regions.users.ask(peer_id.as_str(), GetUser).await).map_err(|e| {
        if e.code == bazaar_protocol::ErrorCode::NotFound {
            ApiError::not_found("peer")
        } else {
            e
        }
    })?;
    let (buyer, seller) = match (who.role, peer.role) {
        (Role::Buyer, Role::Seller) => (who.id, peer.id),
        (Role::Seller, Role::Buyer) => (peer.id, who.id),
        _ => return Err(Invalid::new("peerId", "a room joins a buyer and a seller").into()),
    };
    let room_id = RoomId::for_pair(&buyer, &seller);
    let (room, created) = settle(app.regions.rooms.ask(room_id.as_str(), OpenRoom { buyer, seller }).await)?;
    Ok(json(if created { StatusCode::CREATED } else { StatusCode::OK }, &room))
}

async fn list(app: Arc<App>, who: Caller, query: HashMap<String, String>) -> ApiResult {
    let settings = &app.settings;
    let limit = limit_param(&query, settings.chat_rooms_page_default, settings.chat_rooms_page_max)?;
    let cursor = text_param(&query, "cursor")?;
    let page = app.reads.rooms_of(who.id.as_str(), limit, cursor).await?;
    Ok(json(StatusCode::OK, &page))
}

async fn history(app: Arc<App>, who: Caller, id: String, query: HashMap<String, String>) -> ApiResult {
    let limit = limit_param(&query, 50, 200)?;
    let before = match query.get("before").filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(raw.parse::<i64>().map_err(|_| ApiError::bad_request("before: must be a whole number"))?),
    };
    let viewer = who.id;
    settle(app.regions.rooms.ask(&id, GetRoom { viewer }).await)?;
    let items = app.reads.history(&id, before, limit).await?;
    // Seqs are gapless from 1, so the page that reaches seq 1 is the last one.
    let next_before = match items.last() {
        Some(oldest) if items.len() == limit as usize && oldest.seq > 1 => Some(oldest.seq),
        _ => None,
    };
    Ok(json(StatusCode::OK, &HistoryPage { items, next_before }))
}
