//! The client's address, for limits that count per client (logins, signups): the accept loop
//! stores it in each request's extensions as [`ClientAddr`]; [`client_addr`] reads it back.

use std::net::SocketAddr;
use warp::filters::BoxedFilter;
use warp::Filter;

/// The peer address of the connection a request came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// The client's address, as the accept loop ([`super::server`]) recorded it; `None` only for a
/// request that did not come through it.
pub fn client_addr() -> BoxedFilter<(Option<SocketAddr>,)> {
    warp::ext::optional::<ClientAddr>().map(|ours: Option<ClientAddr>| ours.map(|c| c.0)).boxed()
}
