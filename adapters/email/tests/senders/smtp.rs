//! SMTP against a real SMTP server process (`smtp_server.py`: Python's smtpd on 127.0.0.1,
//! which writes every accepted message to a folder), and against sockets that refuse or stay
//! silent.

use crate::{OrPanic as _, assert_sample_message, sample_email, script};
use crm_domain::{EmailSender as _, SendError};
use crm_email::smtp::{Config, Security, Smtp};
use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Instant,
};

/// The SMTP server process; killed when dropped.
struct SmtpServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl SmtpServer {
    fn start() -> Self {
        let dir = tempfile::tempdir().or_panic("a temporary folder");
        let mut child = Command::new("python3")
            .arg(script("smtp_server.py"))
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .or_panic("python3 runs");
        let stdout = child.stdout.take().or_panic("stdout is piped");
        let mut line = String::new();
        // The script prints its port once it listens: no waiting needed.
        let read = BufReader::new(stdout).read_line(&mut line);
        let port = match (read, line.trim().parse::<u16>()) {
            (Ok(_), Ok(port)) => port,
            _ => {
                let _ = child.kill();
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                let _ = child.wait();
                panic!("the SMTP server did not start (stdout {line:?}): {stderr}");
            }
        };
        Self { child, port, dir }
    }

    /// A sender for this server (no TLS: 127.0.0.1 only).
    fn sender(&self, timeout_secs: u64) -> Smtp {
        Smtp::new(&Config {
            host: "127.0.0.1".into(),
            port: self.port,
            security: Security::None,
            timeout_secs,
            ..Config::default()
        })
        .or_panic("the sender builds")
    }

    /// The accepted messages' files, in order of arrival.
    fn files(&self, extension: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(self.dir.path())
            .or_panic("the server's folder")
            .map(|entry| entry.or_panic("an entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == extension))
            .collect();
        files.sort();
        files
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_full_message_reaches_a_real_smtp_server() {
    let server = SmtpServer::start();
    let email = sample_email("0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6071", "ana@firma.example");
    let sent = server
        .sender(10)
        .send(&email)
        .await
        .or_panic("the send succeeds");
    assert_eq!(sent.provider_message_id.as_deref(), Some("TESTQ001"));

    let messages = server.files("eml");
    assert_eq!(messages.len(), 1, "{messages:?}");
    let raw = fs::read(&messages[0]).or_panic("the message file");
    assert_sample_message(&raw, &email);
    let envelope = fs::read_to_string(&server.files("env")[0]).or_panic("the envelope file");
    assert_eq!(envelope, "vertrieb@acme.example\nana@firma.example\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_queue_id_the_message_id_identifies_the_message() {
    let server = SmtpServer::start();
    let mut email = sample_email("01J9ZQ3F6X", "noid@firma.example");
    email.html = None;
    email.attachments.clear();
    let sent = server
        .sender(10)
        .send(&email)
        .await
        .or_panic("the send succeeds");
    assert_eq!(
        sent.provider_message_id.as_deref(),
        Some("01J9ZQ3F6X@acme.example")
    );
    assert_eq!(server.files("eml").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_recipient_is_rejected() {
    let server = SmtpServer::start();
    let email = sample_email("rejected-1", "rejected@firma.example");
    let error = server.sender(10).send(&email).await.unwrap_err();
    match error {
        SendError::Rejected(message) => {
            assert!(message.contains("550"), "{message}");
            assert!(message.contains("User unknown"), "{message}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(server.files("eml").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transient_reply_is_unavailable() {
    let server = SmtpServer::start();
    let email = sample_email("busy-1", "busy@firma.example");
    let error = server.sender(10).send(&email).await.unwrap_err();
    match error {
        SendError::Unavailable(message) => assert!(message.contains("451"), "{message}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_reply_after_the_message_is_unknown() {
    let server = SmtpServer::start();
    let email = sample_email("slow-1", "slow@firma.example");
    let started = Instant::now();
    let error = server.sender(1).send(&email).await.unwrap_err();
    assert!(matches!(error, SendError::Unknown(_)), "{error:?}");
    assert!(
        started.elapsed().as_secs_f32() < 5.0,
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn starttls_is_required_when_configured() {
    // smtpd offers no STARTTLS: the sender must not fall back to plain text.
    let server = SmtpServer::start();
    let sender = Smtp::new(&Config {
        host: "127.0.0.1".into(),
        port: server.port,
        security: Security::Starttls,
        ..Config::default()
    })
    .or_panic("the sender builds");
    let error = sender
        .send(&sample_email("tls-1", "ana@firma.example"))
        .await
        .unwrap_err();
    match error {
        SendError::Unavailable(message) => assert!(message.contains("STARTTLS"), "{message}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(server.files("eml").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_connection_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").or_panic("bind");
    let port = listener.local_addr().or_panic("an address").port();
    drop(listener);
    let sender = Smtp::new(&Config {
        host: "127.0.0.1".into(),
        port,
        security: Security::None,
        ..Config::default()
    })
    .or_panic("the sender builds");
    let error = sender
        .send(&sample_email("refused-1", "ana@firma.example"))
        .await
        .unwrap_err();
    assert!(matches!(error, SendError::Unavailable(_)), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_never_greets_is_unavailable() {
    // Accepts the connection and says nothing: nothing was handed over, so a retry is safe.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .or_panic("bind");
    let port = listener.local_addr().or_panic("an address").port();
    let silent = tokio::spawn(async move {
        let connection = listener.accept().await;
        std::future::pending::<()>().await;
        drop(connection);
    });
    let sender = Smtp::new(&Config {
        host: "127.0.0.1".into(),
        port,
        security: Security::None,
        timeout_secs: 1,
        ..Config::default()
    })
    .or_panic("the sender builds");
    let error = sender
        .send(&sample_email("silent-1", "ana@firma.example"))
        .await
        .unwrap_err();
    silent.abort();
    match error {
        SendError::Unavailable(message) => assert!(message.contains("connecting"), "{message}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}
