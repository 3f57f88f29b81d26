//! The RFC 5322 message SMTP sends and the outbox stores, built with lettre's message builder,
//! plus the checks every sender applies to an [`OutgoingEmail`] before anything leaves.
//!
//! Structure:
//! - text only: one `text/plain` part;
//! - text and HTML: `multipart/alternative` (plain first, so clients prefer the HTML);
//! - attachments: `multipart/mixed` around that body, one part per attachment.
//!
//! Headers: `From`, `Reply-To`, `To`, `Subject`, `Date`, `MIME-Version`,
//! `Message-ID: <{email.id}@{domain of from}>` and the email's extra headers
//! (`List-Unsubscribe`, `List-Unsubscribe-Post`, …). Extra headers may not replace a header the
//! builder owns, and no header value may contain a line break (header injection).

use crm_domain::{Mailbox, OutgoingEmail, SendError};
use lettre::{
    Message,
    message::{
        Attachment, MultiPart, SinglePart,
        header::{ContentType, HeaderName, HeaderValue},
    },
};

/// Headers the builder (or a provider) sets itself; an email may not carry them as extras.
const RESERVED_HEADERS: &[&str] = &[
    "bcc",
    "cc",
    "content-disposition",
    "content-transfer-encoding",
    "content-type",
    "date",
    "dkim-signature",
    "from",
    "message-id",
    "mime-version",
    "received",
    "reply-to",
    "sender",
    "subject",
    "to",
    "x-sg-eid",
    "x-sg-id",
];

/// A refusal of the email itself: nothing was sent.
pub(crate) fn invalid(what: impl std::fmt::Display) -> SendError {
    SendError::Rejected(format!("{what} (not sent)"))
}

/// Checks the email id: it becomes the `Message-ID`'s local part and the outbox file name, so
/// only `A–Z a–z 0–9 . _ -` are allowed (a UUID, a ULID), 1 to 200 characters, not starting
/// with a dot.
pub(crate) fn check_id(id: &str) -> Result<(), SendError> {
    let ok = !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format_args!(
            "the email id `{id}` must be 1-200 characters of A-Z a-z 0-9 . _ -"
        )))
    }
}

/// The domain of an address (after the last `@`).
fn domain_of(address: &str) -> Option<&str> {
    address
        .rsplit_once('@')
        .map(|(_, domain)| domain.trim())
        .filter(|domain| !domain.is_empty())
}

/// `<{id}@{domain of from}>`: the `Message-ID` of the email.
pub(crate) fn message_id(email: &OutgoingEmail) -> Result<String, SendError> {
    check_id(&email.id)?;
    let domain = domain_of(&email.from.email).ok_or_else(|| {
        invalid(format_args!(
            "the sender address `{}` has no domain",
            email.from.email
        ))
    })?;
    Ok(format!("<{}@{domain}>", email.id))
}

/// The email's extra headers, checked: valid names, no reserved name, no line breaks.
pub(crate) fn extra_headers(email: &OutgoingEmail) -> Result<Vec<(String, String)>, SendError> {
    email
        .headers
        .iter()
        .map(|(name, value)| {
            let name = name.trim();
            let valid_name = !name.is_empty()
                && name.len() <= 76
                && name
                    .bytes()
                    .all(|byte| byte.is_ascii_graphic() && byte != b':');
            if !valid_name {
                return Err(invalid(format_args!("`{name}` is not a header name")));
            }
            if RESERVED_HEADERS
                .iter()
                .any(|reserved| reserved.eq_ignore_ascii_case(name))
            {
                return Err(invalid(format_args!(
                    "the header `{name}` is set by the sender and cannot be given"
                )));
            }
            if value.contains(['\r', '\n']) {
                return Err(invalid(format_args!(
                    "the value of header `{name}` contains a line break"
                )));
            }
            Ok((name.to_owned(), value.trim().to_owned()))
        })
        .collect()
}

/// A [`Mailbox`] as lettre's mailbox.
fn mailbox(mailbox: &Mailbox, role: &str) -> Result<lettre::message::Mailbox, SendError> {
    if mailbox.email.contains(['\r', '\n'])
        || mailbox
            .name
            .as_deref()
            .is_some_and(|name| name.contains(['\r', '\n']))
    {
        return Err(invalid(format_args!(
            "the {role} address contains a line break"
        )));
    }
    let address = mailbox.email.trim().parse().map_err(|error| {
        invalid(format_args!(
            "the {role} address `{}` is invalid: {error}",
            mailbox.email
        ))
    })?;
    let name = mailbox
        .name
        .as_deref()
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned);
    Ok(lettre::message::Mailbox::new(name, address))
}

/// Builds the message.
pub(crate) fn build(email: &OutgoingEmail) -> Result<Message, SendError> {
    if email.subject.contains(['\r', '\n']) {
        return Err(invalid("the subject contains a line break"));
    }
    let mut builder = Message::builder()
        .message_id(Some(message_id(email)?))
        .from(mailbox(&email.from, "sender")?)
        .to(mailbox(&email.to, "recipient")?)
        .subject(email.subject.clone());
    if let Some(reply_to) = &email.reply_to {
        builder = builder.reply_to(mailbox(reply_to, "reply-to")?);
    }
    for (name, value) in extra_headers(email)? {
        let name = HeaderName::new_from_ascii(name.clone())
            .map_err(|_| invalid(format_args!("`{name}` is not a header name")))?;
        builder = builder.raw_header(HeaderValue::new(name, value));
    }

    let text = SinglePart::plain(email.text.clone());
    let html = email
        .html
        .as_ref()
        .filter(|html| !html.trim().is_empty())
        .map(|html| SinglePart::html(html.clone()));
    let mut attachments = Vec::with_capacity(email.attachments.len());
    for attachment in &email.attachments {
        if attachment.filename.trim().is_empty() || attachment.filename.contains(['\r', '\n']) {
            return Err(invalid("an attachment has no usable file name"));
        }
        let content_type = ContentType::parse(attachment.content_type.trim()).map_err(|error| {
            invalid(format_args!(
                "the attachment `{}` has an invalid content type `{}`: {error}",
                attachment.filename, attachment.content_type
            ))
        })?;
        attachments.push(
            Attachment::new(attachment.filename.trim().to_owned())
                .body(attachment.content.clone(), content_type),
        );
    }

    let built = match (html, attachments.is_empty()) {
        (None, true) => builder.singlepart(text),
        (Some(html), true) => {
            builder.multipart(MultiPart::alternative().singlepart(text).singlepart(html))
        }
        (html, false) => {
            let mut mixed = match html {
                Some(html) => MultiPart::mixed()
                    .multipart(MultiPart::alternative().singlepart(text).singlepart(html)),
                None => MultiPart::mixed().singlepart(text),
            };
            for attachment in attachments {
                mixed = mixed.singlepart(attachment);
            }
            builder.multipart(mixed)
        }
    };
    built.map_err(|error| invalid(format_args!("the message cannot be built: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_domain::Attachment as DomainAttachment;
    use std::collections::BTreeMap;

    fn email() -> OutgoingEmail {
        OutgoingEmail {
            id: "01J9ZQ3F6X".into(),
            from: Mailbox {
                email: "vertrieb@acme.example".into(),
                name: Some("Acme Vertrieb".into()),
            },
            reply_to: None,
            to: Mailbox {
                email: "ana@firma.example".into(),
                name: Some("Ana Hodžić".into()),
            },
            subject: "Ihr Termin".into(),
            text: "Hallo Ana".into(),
            html: None,
            headers: vec![],
            attachments: vec![],
            category: None,
            custom_args: BTreeMap::new(),
        }
    }

    fn text(message: &Message) -> String {
        String::from_utf8(message.formatted()).unwrap()
    }

    #[test]
    fn message_ids_use_the_sender_domain() {
        assert_eq!(message_id(&email()).unwrap(), "<01J9ZQ3F6X@acme.example>");
        let mut no_domain = email();
        no_domain.from.email = "nobody".into();
        assert!(matches!(
            message_id(&no_domain),
            Err(SendError::Rejected(_))
        ));
    }

    #[test]
    fn ids_that_are_not_safe_file_names_are_refused() {
        for id in ["", "../x", "a/b", ".hidden", "a b", "a@b", "ü"] {
            assert!(check_id(id).is_err(), "{id}");
        }
        for id in ["0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6071", "a.b_c-d"] {
            assert!(check_id(id).is_ok(), "{id}");
        }
    }

    #[test]
    fn the_shape_follows_the_parts() {
        let plain = text(&build(&email()).unwrap());
        assert!(plain.contains("Content-Type: text/plain"), "{plain}");
        assert!(!plain.contains("multipart"), "{plain}");

        let mut with_html = email();
        with_html.html = Some("<p>Hallo Ana</p>".into());
        let alternative = text(&build(&with_html).unwrap());
        assert!(
            alternative.contains("multipart/alternative"),
            "{alternative}"
        );
        assert!(!alternative.contains("multipart/mixed"), "{alternative}");

        with_html.attachments.push(DomainAttachment {
            filename: "termin.ics".into(),
            content_type: "text/calendar; method=REQUEST".into(),
            content: b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n".to_vec(),
        });
        let mixed = text(&build(&with_html).unwrap());
        let mixed_at = mixed.find("multipart/mixed").unwrap();
        let alternative_at = mixed.find("multipart/alternative").unwrap();
        assert!(mixed_at < alternative_at, "{mixed}");
        assert!(mixed.contains("filename=\"termin.ics\""), "{mixed}");
        assert!(mixed.contains("method=REQUEST"), "{mixed}");
    }

    #[test]
    fn extra_headers_are_written_and_checked() {
        let mut list = email();
        list.headers = vec![
            (
                "List-Unsubscribe".into(),
                "<https://crm.example/u/abc>, <mailto:unsubscribe@acme.example?subject=abc>".into(),
            ),
            (
                "List-Unsubscribe-Post".into(),
                "List-Unsubscribe=One-Click".into(),
            ),
        ];
        let written = text(&build(&list).unwrap());
        assert!(
            written.contains("List-Unsubscribe: <https://crm.example/u/abc>"),
            "{written}"
        );
        assert!(
            written.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
            "{written}"
        );

        for (name, value) in [
            ("Message-ID", "<x@y>"),
            ("from", "evil@example.com"),
            ("X-Ok", "a\r\nBcc: evil@example.com"),
            ("Bad Name", "x"),
            ("", "x"),
        ] {
            let mut bad = email();
            bad.headers = vec![(name.into(), value.into())];
            assert!(matches!(build(&bad), Err(SendError::Rejected(_))), "{name}");
        }
    }

    #[test]
    fn bad_addresses_subjects_and_attachments_are_refused() {
        let mut bad = email();
        bad.to.email = "not an address".into();
        assert!(matches!(build(&bad), Err(SendError::Rejected(_))));
        let mut bad = email();
        bad.subject = "a\nBcc: x@example.com".into();
        assert!(matches!(build(&bad), Err(SendError::Rejected(_))));
        let mut bad = email();
        bad.attachments.push(DomainAttachment {
            filename: "x.bin".into(),
            content_type: "not a type".into(),
            content: vec![1, 2, 3],
        });
        assert!(matches!(build(&bad), Err(SendError::Rejected(_))));
    }
}
