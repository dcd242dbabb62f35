//! `emperor-stats = ADDR`: uWSGI's emperor stats document (`version`, `pid`,
//! `emperor`, `vassals[]` with `id`, `pid`, `born`, `respawns` …, `blacklist`)
//! on a 0600 unix socket or a loopback TCP port, one JSON document per
//! connection, as uWSGI serves it. Each vassal's own `stats` socket still serves
//! its workers (uwsgitop points at a vassal's): this one only lists the vassals.

use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tracing::info;

use super::executor::{Inbox, Input, Request};
use crate::local_server::{self, Client, Listen, LocalServer};
use crate::stats::{parse_address, StatsError};

/// The running server (see [`LocalServer`]).
pub type Server = LocalServer;

/// How long the emperor may take to answer, and a client to receive the document.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Binds ADDR and serves it for the emperor's lifetime (inside its runtime).
pub fn spawn_server(addr: &str, inbox: Inbox) -> Result<Server, StatsError> {
    let listen = Listen {
        key: "emperor-stats",
        address: parse_address(addr)?.into(),
        loopback_only: true,
    };
    let server =
        local_server::spawn(listen, inbox, answer).map_err(|e| StatsError::serving(addr, e))?;
    info!(address = %server.local_address(), "emperor stats server listening");
    Ok(server)
}

async fn answer(mut stream: Client, inbox: Inbox) {
    let (reply, answer) = oneshot::channel::<Value>();
    if inbox
        .send(Input::Control {
            command: Request::Stats,
            reply,
        })
        .is_err()
    {
        return;
    }
    let Ok(Ok(doc)) = tokio::time::timeout(TIMEOUT, answer).await else {
        return;
    };
    let _ = tokio::time::timeout(TIMEOUT, async {
        stream.write_all(doc.to_string().as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in emperor loop that answers every stats request with `doc`.
    fn fake_emperor(doc: Value) -> Inbox {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Input>();
        tokio::spawn(async move {
            while let Some(input) = rx.recv().await {
                if let Input::Control {
                    command: Request::Stats,
                    reply,
                } = input
                {
                    let _ = reply.send(doc.clone());
                }
            }
        });
        tx
    }

    #[tokio::test]
    async fn each_client_reads_one_document_from_a_0600_unix_socket() {
        let dir = TempDir::new("emperor-stats");
        let path = dir.0.join("emperor-stats.sock");
        let doc = json!({"version": "x", "vassals": [{"id": "a.ini", "pid": 7}]});
        let server = spawn_server(path.to_str().unwrap(), fake_emperor(doc.clone())).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        for _ in 0..2 {
            let text = server.read_answer().await;
            assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), doc);
        }
        server.vacuum();
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn tcp_is_served_on_loopback_only() {
        let inbox = fake_emperor(json!({"vassals": []}));
        assert!(matches!(
            spawn_server("0.0.0.0:0", inbox.clone()),
            Err(StatsError::NotLoopback(_))
        ));
        let server = spawn_server("127.0.0.1:0", inbox).unwrap();
        assert_eq!(server.read_answer().await, r#"{"vassals":[]}"#);
    }
}
