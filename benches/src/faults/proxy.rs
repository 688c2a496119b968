//! A link between two nodes that the nemesis can cut: a TCP proxy on loopback in front of one
//! node's cluster port, dialled by exactly one other node (the runner gives every node its own
//! config, naming each peer at the proxy of that ordered pair).
//!
//! A cut behaves like a network that drops packets, not like one that resets connections: bytes
//! stop moving in both directions on every connection through the link, and a new connection is
//! accepted but carries nothing, so the nodes find the partition the way they would find a real
//! one, by unanswered heartbeats. When the link heals, what was held back moves on (as TCP's
//! retransmissions would deliver it), and held connections start carrying bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One directed link: its listening address and whether it carries bytes.
pub struct Link {
    /// Where the node that uses the link dials it.
    pub listen: SocketAddr,
    open: Arc<watch::Sender<bool>>,
    task: JoinHandle<()>,
}

impl Link {
    /// Listens on a free loopback port and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Link> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let listen = listener.local_addr()?;
        let open = Arc::new(watch::channel(true).0);
        let open_for_task = open.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let open = open_for_task.subscribe();
                tokio::spawn(async move {
                    // While cut, a new connection is held: it is not even dialled through.
                    let mut gate = open.clone();
                    if gate.wait_for(|open| *open).await.is_err() {
                        return;
                    }
                    let Ok(outbound) = TcpStream::connect(target).await else { return };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    // Either direction ending (a node closed or was killed) ends both.
                    tokio::select! {
                        _ = pump(in_read, out_write, open.clone()) => {}
                        _ = pump(out_read, in_write, open) => {}
                    }
                });
            }
        });
        Ok(Link { listen, open, task })
    }

    /// Stops carrying bytes (a partition).
    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    /// Carries bytes again.
    pub fn heal(&self) {
        self.open.send_replace(true);
    }

    #[cfg(test)]
    pub fn is_cut(&self) -> bool {
        !*self.open.borrow()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to` while the link is open; a chunk read while it is cut waits for the heal.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut open: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if open.wait_for(|open| *open).await.is_err() {
            return;
        }
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if open.wait_for(|open| *open).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    while let Ok(n) = socket.read(&mut buffer).await {
                        if n == 0 || socket.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn read_some(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
        let mut buffer = [0u8; 64];
        match tokio::time::timeout(within, stream.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => Some(buffer[..n].to_vec()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_cut_link_holds_bytes_back_until_it_heals() {
        let link = Link::start(echo_server().await).await.unwrap();
        let mut client = TcpStream::connect(link.listen).await.unwrap();
        client.write_all(b"one").await.unwrap();
        assert_eq!(read_some(&mut client, Duration::from_secs(5)).await.as_deref(), Some(&b"one"[..]));

        link.cut();
        assert!(link.is_cut());
        client.write_all(b"two").await.unwrap();
        assert_eq!(read_some(&mut client, Duration::from_millis(300)).await, None, "nothing crosses a cut link");
        // A connection made while cut is accepted and carries nothing either.
        let mut late = TcpStream::connect(link.listen).await.unwrap();
        late.write_all(b"late").await.unwrap();
        assert_eq!(read_some(&mut late, Duration::from_millis(300)).await, None);

        link.heal();
        assert_eq!(read_some(&mut client, Duration::from_secs(5)).await.as_deref(), Some(&b"two"[..]));
        assert_eq!(read_some(&mut late, Duration::from_secs(5)).await.as_deref(), Some(&b"late"[..]));
    }
}
