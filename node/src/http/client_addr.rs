//! The client's address, for limits that count per client (logins, signups): the accept loop
//! stores it in each request's extensions as [`ClientAddr`]; [`client_addr`] reads it back.

use std::net::SocketAddr;
use warp::filters::BoxedFilter;
use warp::Filter;

/// The peer address of the connection a request came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// The client's address: from the accept loop's extension, else from warp's own (its server
/// records it too); `None` only where neither knows it (an in-process test request).
pub fn client_addr() -> BoxedFilter<(Option<SocketAddr>,)> {
    warp::ext::optional::<ClientAddr>()
        .and(warp::addr::remote())
        .map(|ours: Option<ClientAddr>, warps: Option<SocketAddr>| ours.map(|c| c.0).or(warps))
        .boxed()
}
