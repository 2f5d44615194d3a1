//! A TCP proxy that can stall the connections through it, to play a process whose network
//! (or whose whole process) hangs without closing anything: a frozen connection passes no
//! bytes in either direction, and what was sent meanwhile arrives, late, once it thaws.
//! That late arrival is the point: a command sent before a stall can run on the server
//! long after the client gave up on it.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A proxy on a free loopback port in front of `upstream`. Dropping it stops accepting;
/// connections already open keep running until either side closes.
pub struct FreezableProxy {
    port: u16,
    /// One switch per accepted connection, in the order they were accepted.
    connections: Arc<Mutex<Vec<watch::Sender<bool>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl FreezableProxy {
    /// Starts a proxy to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let connections: Arc<Mutex<Vec<watch::Sender<bool>>>> = Arc::default();
        let upstream = upstream.to_owned();
        let accept = tokio::spawn({
            let connections = Arc::clone(&connections);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        continue;
                    };
                    let (switch, frozen) = watch::channel(false);
                    connections.lock().unwrap().push(switch);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(pass(client_read, server_write, frozen.clone()));
                    tokio::spawn(pass(server_read, client_write, frozen));
                }
            }
        });
        Self {
            port,
            connections,
            accept,
        }
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many connections it accepted so far.
    pub fn connection_count(&self) -> usize {
        self.connections.lock().unwrap().len()
    }

    /// Stalls connection `index` (in accept order): no byte passes until [`Self::thaw`].
    pub fn freeze(&self, index: usize) {
        self.switch(index, true);
    }

    /// Lets connection `index` pass bytes again, first those held while it was frozen.
    pub fn thaw(&self, index: usize) {
        self.switch(index, false);
    }

    /// Stalls every connection open now.
    pub fn freeze_all(&self) {
        for switch in self.connections.lock().unwrap().iter() {
            switch.send_replace(true);
        }
    }

    /// Lets every connection pass bytes again.
    pub fn thaw_all(&self) {
        for switch in self.connections.lock().unwrap().iter() {
            switch.send_replace(false);
        }
    }

    fn switch(&self, index: usize, frozen: bool) {
        self.connections.lock().unwrap()[index].send_replace(frozen);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies `from` to `to`, holding what it read while `frozen` says so.
async fn pass(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Not reading while frozen also leaves the bytes in the kernel's buffers, as a
        // stalled peer would; bytes read just before a freeze wait here, unsent.
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
