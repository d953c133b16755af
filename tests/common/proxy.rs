//! Network faults between real `arca server` processes: a TCP proxy in front of each node's
//! cluster port, that the test controls per link.
//!
//! Each node dials its peers from its own loopback address (`cluster.source_address =
//! 127.0.0.1N`), so the proxy in front of node `j` knows which node `i` a connection comes
//! from, and the link `i → j` can be cut on its own. A cut link is a black hole, as a real
//! partition is: the bytes its direction carries are read and dropped, connections stay open,
//! and a peer notices only by timing out. A connection that lost bytes cannot carry TLS any
//! more, so it is closed once its link heals (as a real one would fail), and the peers
//! reconnect.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The loopback address node `id` dials its peers from.
pub fn source_address(id: u64) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 10 + id as u8)
}

fn node_of(addr: IpAddr) -> Option<u64> {
    match addr {
        IpAddr::V4(v4) if v4.octets()[..3] == [127, 0, 0] && (11..=19).contains(&v4.octets()[3]) => {
            Some(u64::from(v4.octets()[3] - 10))
        }
        _ => None,
    }
}

/// Which links are cut: `(from, to)` drops what `from` sends to `to`.
#[derive(Clone, Default)]
pub struct Links(Arc<Mutex<HashSet<(u64, u64)>>>);

impl Links {
    fn is_cut(&self, from: u64, to: u64) -> bool {
        self.0.lock().unwrap().contains(&(from, to))
    }

    /// Cuts both directions between every node of `a` and every node of `b`.
    pub fn partition(&self, a: &[u64], b: &[u64]) {
        for &x in a {
            for &y in b {
                self.cut(x, y);
                self.cut(y, x);
            }
        }
    }

    /// Drops what `from` sends to `to` (one way).
    pub fn cut(&self, from: u64, to: u64) {
        self.0.lock().unwrap().insert((from, to));
    }

    pub fn heal(&self) {
        self.0.lock().unwrap().clear();
    }
}

/// Forwards connections arriving at `listen` to node `to` at `upstream`, obeying `links`.
/// Runs until the runtime stops.
pub async fn serve(listen: SocketAddr, upstream: SocketAddr, to: u64, links: Links) {
    // The port was a killed node's a moment ago: its connections may hold it briefly.
    let mut attempts = 0;
    let listener = loop {
        match TcpListener::bind(listen).await {
            Ok(l) => break l,
            Err(e) if attempts < 200 => {
                attempts += 1;
                if attempts == 1 {
                    eprintln!("proxy cannot listen on {listen} yet ({e}); retrying");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("proxy cannot listen on {listen}: {e}"),
        }
    };
    loop {
        let Ok((inbound, peer)) = listener.accept().await else { continue };
        let links = links.clone();
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(upstream).await else { return };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            // Connections from anything but a node (none in these tests) are never cut.
            let from = node_of(peer.ip()).unwrap_or(0);
            let (in_read, in_write) = inbound.into_split();
            let (out_read, out_write) = outbound.into_split();
            tokio::select! {
                _ = pump(in_read, out_write, from, to, links.clone()) => {}
                _ = pump(out_read, in_write, to, from, links) => {}
            }
        });
    }
}

/// Copies one direction of a connection, dropping its bytes while `from → to` is cut; ends
/// (closing the connection) when either side closes or, after dropping bytes, once the link
/// heals.
async fn pump(
    mut read: tokio::net::tcp::OwnedReadHalf,
    mut write: tokio::net::tcp::OwnedWriteHalf,
    from: u64,
    to: u64,
    links: Links,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut lost = false;
    loop {
        let n = match tokio::time::timeout(Duration::from_millis(200), read.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => n,
            // Quiet: only to notice a healed link that must close this connection.
            Err(_) if lost && !links.is_cut(from, to) => return,
            Err(_) => continue,
        };
        if links.is_cut(from, to) {
            lost = true;
            continue;
        }
        if lost || write.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
