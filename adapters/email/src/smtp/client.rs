//! The SMTP conversation, one step at a time, and how its failures map to [`SendError`] (the
//! table in the module docs).

use super::{Security, Smtp};
use crm_domain::SendError;
use lettre::{
    Address,
    address::Envelope,
    transport::smtp::{
        Error,
        authentication::Mechanism,
        client::AsyncSmtpConnection,
        commands::{Data, Mail, Rcpt},
        extension::{Extension, MailBodyParameter, MailParameter},
        response::Response,
    },
};
use std::{fmt, future::Future, time::Duration};

/// How far the conversation had got when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// TCP connect, TLS, greeting, `EHLO`, `STARTTLS`.
    Connect,
    /// `AUTH`.
    Login,
    /// `MAIL FROM`, `RCPT TO`, `DATA`: the server has not received the message yet.
    Envelope,
    /// The message was (being) sent; waiting for the final reply.
    Message,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connecting",
            Self::Login => "logging in",
            Self::Envelope => "sending the envelope",
            Self::Message => "transferring the message",
        })
    }
}

/// Why a step failed.
#[derive(Debug)]
pub(super) enum Cause {
    /// No answer within the timeout.
    TimedOut(Duration),
    /// lettre's error: a negative reply, a network or TLS failure.
    Smtp(Error),
    /// The server lacks an extension the email needs.
    Unsupported(&'static str),
}

/// A failed conversation.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) stage: Stage,
    pub(super) cause: Cause,
}

/// Runs one step under the timeout.
async fn step<T>(
    stage: Stage,
    timeout: Duration,
    future: impl Future<Output = Result<T, Error>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(timeout, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(Failure {
            stage,
            cause: Cause::Smtp(error),
        }),
        Err(_) => Err(Failure {
            stage,
            cause: Cause::TimedOut(timeout),
        }),
    }
}

/// Sends `message` to the envelope's recipients over a new connection and returns the
/// server's final reply.
pub(super) async fn send(
    smtp: &Smtp,
    envelope: &Envelope,
    message: &[u8],
) -> Result<Response, Failure> {
    let mut connection = step(Stage::Connect, smtp.timeout, connect(smtp)).await?;
    let outcome = exchange(smtp, &mut connection, envelope, message).await;
    match &outcome {
        Ok(_) => {
            // The message is accepted; a failed QUIT changes nothing.
            let _ = tokio::time::timeout(smtp.timeout, connection.quit()).await;
        }
        Err(Failure {
            cause: Cause::TimedOut(_),
            ..
        }) => {
            // The server is not answering: drop the connection without a QUIT.
        }
        Err(_) => {
            let _ = tokio::time::timeout(smtp.timeout, connection.abort()).await;
        }
    }
    outcome
}

/// TCP (and TLS), greeting, `EHLO`, and `STARTTLS` with a second `EHLO`.
async fn connect(smtp: &Smtp) -> Result<AsyncSmtpConnection, Error> {
    let implicit_tls = match smtp.security {
        Security::Tls => smtp.tls.clone(),
        Security::Starttls | Security::None => None,
    };
    let mut connection = AsyncSmtpConnection::connect_tokio1(
        (smtp.host.as_str(), smtp.port),
        Some(smtp.timeout),
        &smtp.hello,
        implicit_tls,
        None,
    )
    .await?;
    if let (Security::Starttls, Some(tls)) = (smtp.security, &smtp.tls) {
        // Fails when the server does not offer STARTTLS: never fall back to plain text.
        connection.starttls(tls.clone(), &smtp.hello).await?;
    }
    Ok(connection)
}

/// Login, envelope, message.
async fn exchange(
    smtp: &Smtp,
    connection: &mut AsyncSmtpConnection,
    envelope: &Envelope,
    message: &[u8],
) -> Result<Response, Failure> {
    if let Some(credentials) = smtp.credentials() {
        step(
            Stage::Login,
            smtp.timeout,
            connection.auth(&[Mechanism::Plain, Mechanism::Login], &credentials),
        )
        .await?;
    }

    let mut parameters = Vec::new();
    let non_ascii_address = envelope
        .from()
        .into_iter()
        .chain(envelope.to())
        .any(|address: &Address| !AsRef::<str>::as_ref(address).is_ascii());
    if non_ascii_address {
        if !connection
            .server_info()
            .supports_feature(Extension::SmtpUtfEight)
        {
            return Err(Failure {
                stage: Stage::Envelope,
                cause: Cause::Unsupported(
                    "an address is not ASCII and the server does not offer SMTPUTF8",
                ),
            });
        }
        parameters.push(MailParameter::SmtpUtfEight);
    }
    if !message.is_ascii() {
        if !connection
            .server_info()
            .supports_feature(Extension::EightBitMime)
        {
            return Err(Failure {
                stage: Stage::Envelope,
                cause: Cause::Unsupported(
                    "the message is not ASCII and the server does not offer 8BITMIME",
                ),
            });
        }
        parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }

    step(
        Stage::Envelope,
        smtp.timeout,
        connection.command(Mail::new(envelope.from().cloned(), parameters)),
    )
    .await?;
    for recipient in envelope.to() {
        step(
            Stage::Envelope,
            smtp.timeout,
            connection.command(Rcpt::new(recipient.clone(), Vec::new())),
        )
        .await?;
    }
    step(Stage::Envelope, smtp.timeout, connection.command(Data)).await?;
    // From here on the server may accept the message even if we never see its reply.
    step(Stage::Message, smtp.timeout, connection.message(message)).await
}

/// Maps a failed conversation (see the module docs).
pub(super) fn classify(failure: Failure) -> SendError {
    let Failure { stage, cause } = failure;
    match cause {
        Cause::TimedOut(timeout) if stage == Stage::Message => SendError::Unknown(format!(
            "no reply within {} s after the message was sent; the server may have accepted it",
            timeout.as_secs_f32()
        )),
        Cause::TimedOut(timeout) => SendError::Unavailable(format!(
            "timed out after {} s while {stage}",
            timeout.as_secs_f32()
        )),
        Cause::Unsupported(what) => SendError::Rejected(what.to_owned()),
        Cause::Smtp(error) => {
            let message = format!("{error} (while {stage})");
            if error.is_transient() {
                SendError::Unavailable(message)
            } else if error.is_permanent() {
                match stage {
                    Stage::Envelope | Stage::Message => SendError::Rejected(message),
                    // A refusal of the connection or the login is about the server or our
                    // credentials, not this email: retry once the configuration is fixed.
                    Stage::Connect | Stage::Login => SendError::Unavailable(message),
                }
            } else if stage == Stage::Message {
                SendError::Unknown(format!(
                    "{message}; the server may have accepted the message"
                ))
            } else {
                SendError::Unavailable(message)
            }
        }
    }
}

/// The queue id in the final reply: `… queued as <id>` (Postfix, SendGrid, many relays) or
/// `… id=<id>` (Exim).
pub(super) fn queue_id(reply: &Response) -> Option<String> {
    let text = reply.message().collect::<Vec<_>>().join(" ");
    let clean = |token: &str| {
        let token = token.trim_matches(|c: char| {
            matches!(c, '<' | '>' | '(' | ')' | ',' | ';' | '.' | '"' | '\'')
        });
        (!token.is_empty()).then(|| token.to_owned())
    };
    let lower = text.to_ascii_lowercase();
    if let Some(at) = lower.find("queued as ") {
        let rest = text.get(at + "queued as ".len()..)?;
        return rest.split_whitespace().next().and_then(clean);
    }
    text.split_whitespace()
        .find_map(|word| {
            word.strip_prefix("id=")
                .or_else(|| word.strip_prefix("ID="))
        })
        .and_then(clean)
}
