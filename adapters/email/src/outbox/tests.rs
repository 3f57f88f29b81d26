//! Unit tests of the outbox config and the file write; sending (and parsing the files back)
//! is tested in `tests/senders/outbox.rs`.

use super::{Config, Outbox, client::write_once};
use std::fs;

#[test]
fn config_defaults_and_unknown_fields() {
    let config: Config = serde_json::from_str("{}").unwrap();
    assert_eq!(config.dir, "data/outbox");
    assert!(serde_json::from_str::<Config>(r#"{"path": "x"}"#).is_err());
    assert!(Outbox::new(&Config { dir: " ".into() }).is_err());
}

#[test]
fn a_file_is_written_once_and_no_temporary_file_stays() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("nested").join("outbox");
    assert!(write_once(&dir, "a.eml", b"first").unwrap());
    assert!(!write_once(&dir, "a.eml", b"second").unwrap());
    assert_eq!(fs::read(dir.join("a.eml")).unwrap(), b"first");
    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["a.eml"]);
}

#[tokio::test]
async fn forgetting_an_email_deletes_its_file_and_nothing_else() {
    use crm_domain::EmailSender as _;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("outbox");
    let outbox = Outbox::new(&Config {
        dir: dir.display().to_string(),
    })
    .unwrap();
    assert!(write_once(&dir, "e1.eml", b"mail").unwrap());
    fs::write(root.path().join("secret.eml"), b"not the outbox's").unwrap();
    assert!(outbox.forget("e1").await.unwrap());
    assert!(!dir.join("e1.eml").exists());
    assert!(!outbox.forget("e1").await.unwrap(), "gone already");
    assert!(
        !outbox.forget("../secret").await.unwrap(),
        "no path escapes the folder"
    );
    assert!(root.path().join("secret.eml").exists());
}
