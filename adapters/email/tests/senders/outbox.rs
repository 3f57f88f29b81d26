//! The outbox against a temporary folder: one complete `.eml` per email id, written once.

use crate::{OrPanic as _, assert_sample_message, sample_email};
use crm_domain::{EmailSender as _, SendError};
use crm_email::outbox::{Config, Outbox};
use std::fs;

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .or_panic("the outbox folder")
        .map(|entry| {
            entry
                .or_panic("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn the_outbox_writes_the_full_message_once() {
    let root = tempfile::tempdir().or_panic("a temporary folder");
    let dir = root.path().join("data").join("outbox");
    let outbox = Outbox::new(&Config {
        dir: dir.to_string_lossy().into_owned(),
    })
    .or_panic("the outbox builds");
    let email = sample_email("0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6071", "ana@firma.example");

    let sent = outbox.send(&email).await.or_panic("the first send writes");
    let file_name = "0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6071.eml";
    assert_eq!(sent.provider_message_id.as_deref(), Some(file_name));
    assert_eq!(names(&dir), [file_name]);
    let first = fs::read(dir.join(file_name)).or_panic("the file");
    assert_sample_message(&first, &email);

    // A retry of the same id (even with changed content) writes nothing and succeeds.
    let mut retry = email.clone();
    retry.subject = "Changed".into();
    let again = outbox
        .send(&retry)
        .await
        .or_panic("the repeated send succeeds");
    assert_eq!(again.provider_message_id.as_deref(), Some(file_name));
    assert_eq!(names(&dir), [file_name]);
    assert_eq!(fs::read(dir.join(file_name)).or_panic("the file"), first);

    // Another id is another file.
    outbox
        .send(&sample_email("second", "bob@firma.example"))
        .await
        .or_panic("the second email is written");
    assert_eq!(names(&dir), [file_name, "second.eml"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn ids_that_would_leave_the_folder_are_rejected() {
    let root = tempfile::tempdir().or_panic("a temporary folder");
    let dir = root.path().join("outbox");
    let outbox = Outbox::new(&Config {
        dir: dir.to_string_lossy().into_owned(),
    })
    .or_panic("the outbox builds");
    for id in ["../escape", "a/b", ".hidden", ""] {
        let error = outbox
            .send(&sample_email(id, "ana@firma.example"))
            .await
            .unwrap_err();
        assert!(matches!(error, SendError::Rejected(_)), "{id}: {error:?}");
    }
    assert!(!dir.exists());
    assert_eq!(names(root.path()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unwritable_folder_is_unavailable() {
    let root = tempfile::tempdir().or_panic("a temporary folder");
    let file = root.path().join("not-a-folder");
    fs::write(&file, b"x").or_panic("a file");
    let outbox = Outbox::new(&Config {
        dir: file.join("outbox").to_string_lossy().into_owned(),
    })
    .or_panic("the outbox builds");
    let error = outbox
        .send(&sample_email("x1", "ana@firma.example"))
        .await
        .unwrap_err();
    assert!(matches!(error, SendError::Unavailable(_)), "{error:?}");
}
