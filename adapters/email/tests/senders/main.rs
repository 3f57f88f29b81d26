//! The email senders against real counterparts: SMTP against a real SMTP server process
//! (Python's smtpd on 127.0.0.1), SendGrid against a local fake of its HTTP API, the outbox
//! against a temporary folder, and the Event Webhook with deliveries signed here with a fresh
//! P-256 key. Messages are parsed back with Python's `email` package, independently of lettre.
//! One test binary for all, to save link time.

mod fake;
mod outbox;
mod sendgrid;
mod smtp;
mod webhook;

use crm_domain::{Attachment, Mailbox, OutgoingEmail};
use serde_json::Value;
use std::{
    collections::BTreeMap,
    io::Write as _,
    path::PathBuf,
    process::{Command, Stdio},
};

/// `expect` for test helpers (clippy allows `expect` only inside `#[test]` functions).
pub(crate) trait OrPanic<T> {
    /// The value, or a panic naming `what` was expected.
    fn or_panic(self, what: &str) -> T;
}

impl<T, E: std::fmt::Display> OrPanic<T> for Result<T, E> {
    fn or_panic(self, what: &str) -> T {
        match self {
            Ok(value) => value,
            Err(error) => panic!("{what}: {error}"),
        }
    }
}

impl<T> OrPanic<T> for Option<T> {
    fn or_panic(self, what: &str) -> T {
        match self {
            Some(value) => value,
            None => panic!("{what}: nothing"),
        }
    }
}

/// reqwest is built with `rustls-no-provider`: a provider must exist before a client is built.
pub(crate) fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A test helper script next to this file.
pub(crate) fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("senders")
        .join(name)
}

/// The bytes of the binary attachment: every byte value, so only base64 can carry it.
pub(crate) fn logo_bytes() -> Vec<u8> {
    (0..=255u8).cycle().take(1000).collect()
}

/// The calendar attachment.
pub(crate) const ICS: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:0192f3c4@acme.example\r\nSUMMARY:Beratung\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

/// A follow-up with a non-ASCII name and subject, text and HTML, the unsubscribe headers and
/// two attachments, to `to`.
pub(crate) fn sample_email(id: &str, to: &str) -> OutgoingEmail {
    OutgoingEmail {
        id: id.to_owned(),
        from: Mailbox {
            email: "vertrieb@acme.example".into(),
            name: Some("Acme Vertrieb".into()),
        },
        reply_to: Some(Mailbox {
            email: "lena@acme.example".into(),
            name: Some("Lena Berger".into()),
        }),
        to: Mailbox {
            email: to.to_owned(),
            name: Some("Ana Hodžić".into()),
        },
        subject: "Ihr Termin am Dienstag – Bestätigung".into(),
        text: "Hallo Ana,\n\nwir bestätigen Ihren Termin am Dienstag um 10:00 Uhr.\n\nGrüße\nLena"
            .into(),
        html: Some(
            "<p>Hallo Ana,</p><p>wir bestätigen Ihren Termin am <b>Dienstag</b> um 10:00 Uhr.</p>"
                .into(),
        ),
        headers: vec![
            (
                "List-Unsubscribe".into(),
                "<https://crm.example.com/unsubscribe/abc123>, <mailto:unsubscribe@acme.example?subject=abc123>".into(),
            ),
            (
                "List-Unsubscribe-Post".into(),
                "List-Unsubscribe=One-Click".into(),
            ),
        ],
        attachments: vec![
            Attachment {
                filename: "termin.ics".into(),
                content_type: "text/calendar; method=REQUEST".into(),
                content: ICS.as_bytes().to_vec(),
            },
            Attachment {
                filename: "logo.png".into(),
                content_type: "image/png".into(),
                content: logo_bytes(),
            },
        ],
        category: Some("follow-up".into()),
        custom_args: BTreeMap::from([("customer_id".to_owned(), "c-42".to_owned())]),
    }
}

/// A message parsed by Python's `email` package (see `parse_eml.py`).
#[derive(Debug)]
pub(crate) struct Parsed(pub(crate) Value);

impl Parsed {
    /// Parses `raw`; fails the test if Python reports a defect.
    pub(crate) fn new(raw: &[u8]) -> Self {
        let mut child = Command::new("python3")
            .arg(script("parse_eml.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .or_panic("python3 runs");
        child
            .stdin
            .take()
            .or_panic("stdin is piped")
            .write_all(raw)
            .or_panic("the message is written to python");
        let output = child.wait_with_output().or_panic("python finishes");
        assert!(
            output.status.success(),
            "parse_eml.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let json: Value =
            serde_json::from_slice(&output.stdout).or_panic("parse_eml.py prints JSON");
        assert_eq!(json["defects"], serde_json::json!([]), "MIME defects");
        Self(json)
    }

    /// The decoded value of the only header `name`.
    pub(crate) fn header(&self, name: &str) -> String {
        let values: Vec<&str> = self.0["headers"]
            .as_array()
            .or_panic("headers")
            .iter()
            .filter(|pair| {
                pair[0]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
            .filter_map(|pair| pair[1].as_str())
            .collect();
        match values.as_slice() {
            [one] => (*one).to_owned(),
            other => panic!("expected one `{name}` header, found {other:?}"),
        }
    }

    /// The content types in walk order (containers included).
    pub(crate) fn structure(&self) -> Vec<String> {
        self.0["structure"]
            .as_array()
            .or_panic("structure")
            .iter()
            .map(|t| t.as_str().or_panic("a content type").to_owned())
            .collect()
    }

    /// The leaf part with this content type.
    pub(crate) fn part(&self, content_type: &str) -> &Value {
        self.0["parts"]
            .as_array()
            .or_panic("parts")
            .iter()
            .find(|part| part["content_type"] == content_type)
            .unwrap_or_else(|| panic!("no {content_type} part in {}", self.0))
    }

    /// A leaf part's decoded bytes.
    pub(crate) fn bytes(&self, content_type: &str) -> Vec<u8> {
        use base64::Engine as _;
        let encoded = self.part(content_type)["bytes_b64"]
            .as_str()
            .or_panic("bytes_b64");
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .or_panic("base64 from python")
    }

    /// A text part's decoded text, with line ends normalized to `\n`.
    pub(crate) fn text(&self, content_type: &str) -> String {
        self.part(content_type)["text"]
            .as_str()
            .or_panic("a text part")
            .replace("\r\n", "\n")
    }
}

/// Checks everything a sample email's message must carry (SMTP and outbox share it).
pub(crate) fn assert_sample_message(raw: &[u8], email: &OutgoingEmail) {
    let parsed = Parsed::new(raw);
    assert_eq!(
        parsed.header("From"),
        "Acme Vertrieb <vertrieb@acme.example>"
    );
    assert_eq!(
        parsed.header("To"),
        format!("Ana Hodžić <{}>", email.to.email)
    );
    assert_eq!(parsed.header("Reply-To"), "Lena Berger <lena@acme.example>");
    assert_eq!(parsed.header("Subject"), email.subject);
    assert_eq!(
        parsed.header("Message-ID"),
        format!("<{}@acme.example>", email.id)
    );
    assert_eq!(parsed.header("MIME-Version"), "1.0");
    assert!(!parsed.header("Date").is_empty());
    assert_eq!(
        parsed.header("List-Unsubscribe"),
        "<https://crm.example.com/unsubscribe/abc123>, <mailto:unsubscribe@acme.example?subject=abc123>"
    );
    assert_eq!(
        parsed.header("List-Unsubscribe-Post"),
        "List-Unsubscribe=One-Click"
    );
    assert_eq!(
        parsed.structure(),
        [
            "multipart/mixed",
            "multipart/alternative",
            "text/plain",
            "text/html",
            "text/calendar",
            "image/png"
        ]
    );
    assert_eq!(parsed.text("text/plain").trim_end(), email.text);
    assert_eq!(
        parsed.text("text/html").trim_end(),
        email.html.as_deref().unwrap_or_default()
    );
    let calendar = parsed.part("text/calendar");
    assert_eq!(calendar["filename"], "termin.ics");
    assert_eq!(calendar["disposition"], "attachment");
    assert_eq!(calendar["params"]["method"], "REQUEST");
    assert_eq!(parsed.bytes("text/calendar"), ICS.as_bytes());
    let logo = parsed.part("image/png");
    assert_eq!(logo["filename"], "logo.png");
    assert_eq!(logo["disposition"], "attachment");
    assert_eq!(parsed.bytes("image/png"), logo_bytes());
    let raw_text = String::from_utf8_lossy(raw);
    assert!(
        raw_text.contains("Content-Transfer-Encoding: base64"),
        "the binary attachment is base64: {raw_text}"
    );
}
