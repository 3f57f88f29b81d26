//! Unit tests of the simulator as a provider: what it keeps (nothing remote), the calls it
//! plays in each language, and retries that roll anew; the deliveries themselves are tested
//! in `webhook.rs`, and calls end to end in `tests/tests/it/voice.rs`.

use super::{Config, Simulator, script};
use crm_domain::{CallDeletion, Disposition, ProviderError, SpeakerRole, VoiceProvider as _};

fn vars(name: &str) -> String {
    match name {
        "name" => "Amra".to_owned(),
        "agent" => "Mia".to_owned(),
        "sender" => "crm".to_owned(),
        "company" => "Hodžić d.o.o.".to_owned(),
        _ => String::new(),
    }
}

/// The first plan of a number starting with `prefix` that is answered with `outcome`.
fn answered(prefix: &str, language: &str, outcome: &str) -> script::Plan {
    (0..10_000)
        .map(|n| script::plan(42, &format!("{prefix}{n:04}"), language, &vars))
        .find(|p| p.disposition == Disposition::Answered && p.outcome == Some(outcome))
        .unwrap_or_else(|| panic!("some number is answered with {outcome}"))
}

#[tokio::test]
async fn deleting_a_call_has_nothing_remote_to_remove() {
    let simulator = Simulator::new(&Config::default());
    assert_eq!(
        simulator.delete_call("sim-anything").await,
        Ok(CallDeletion::Deleted)
    );
}

#[tokio::test]
async fn looking_a_call_up_is_refused_because_its_events_are_jobs() {
    let simulator = Simulator::new(&Config::default());
    match simulator.get_call("sim-1").await {
        Err(ProviderError::Rejected { status, message }) => {
            assert_eq!(status, 404);
            assert!(message.contains("sim-1"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_bosnian_call_speaks_bosnian_with_the_leads_details() {
    let plan = answered("+38761", "bs", "appointment");
    let said: Vec<(SpeakerRole, &str)> = plan.lines.iter().map(|(r, t)| (*r, t.as_str())).collect();
    assert_eq!(
        said,
        [
            (
                SpeakerRole::Agent,
                "Dobar dan Amra, ovdje Mia iz crm. Imate li trenutak?"
            ),
            (SpeakerRole::Customer, "Da, o čemu se radi?"),
            (
                SpeakerRole::Agent,
                "Interesovali ste se za našu ponudu. Mogu li vam pokazati kako Hodžić d.o.o. može uštedjeti vrijeme?"
            ),
            (SpeakerRole::Agent, "Odgovara li vam četvrtak u 10 sati?"),
            (SpeakerRole::Customer, "Da, četvrtak u 10 odgovara."),
            (SpeakerRole::Agent, plan.lines[5].1.as_str()),
        ]
    );
    assert_eq!(plan.summary, "Simulated call with Amra: appointment.");
}

#[test]
fn an_english_call_and_any_other_language_speak_english() {
    let plan = answered("+4420", "en", "not_interested");
    assert_eq!(
        plan.lines[0].1,
        "Hello Amra, this is Mia from crm. Do you have a moment?"
    );
    assert_eq!(
        plan.lines[3],
        (
            SpeakerRole::Customer,
            "No thanks, not interested.".to_owned()
        )
    );
    assert_eq!(plan.lines[5].1, "Thank you, goodbye!");
    let fallback = answered("+4420", "fr", "not_interested");
    assert_eq!(fallback.lines, plan.lines);
}

#[test]
fn a_mailbox_gets_a_message_in_the_leads_language() {
    let mailbox = (0..10_000)
        .map(|n| script::plan(42, &format!("+38761{n:04}"), "bs", &vars))
        .find(|p| p.disposition == Disposition::Voicemail)
        .unwrap();
    assert_eq!(
        mailbox.lines,
        [(
            SpeakerRole::Agent,
            "Dobar dan Amra, ovdje Mia iz crm. Molimo nazovite nas.".to_owned()
        )]
    );
    assert_eq!(mailbox.outcome, None);
}

#[test]
fn each_attempt_rolls_anew_and_the_first_is_the_plan() {
    let number = |n: u32| format!("+4930555{n:04}");
    for n in 0..50 {
        assert_eq!(
            script::plan_attempt(42, &number(n), 1, "de", &vars),
            script::plan(42, &number(n), "de", &vars)
        );
    }
    // Some numbers missed at first answer a retry; every plan repeats for its attempt.
    let reached_later = (0..1_000).find(|n| {
        script::plan(42, &number(*n), "de", &vars).disposition == Disposition::NoAnswer
            && script::plan_attempt(42, &number(*n), 2, "de", &vars).disposition
                == Disposition::Answered
    });
    let n = reached_later.unwrap_or_else(|| panic!("a retry reaches someone"));
    assert_eq!(
        script::plan_attempt(42, &number(n), 2, "de", &vars),
        script::plan_attempt(42, &number(n), 2, "de", &vars)
    );
    // And attempts differ across many numbers, as independent rolls do.
    let same = (0..1_000)
        .filter(|n| {
            script::plan_attempt(42, &number(*n), 1, "de", &vars).disposition
                == script::plan_attempt(42, &number(*n), 3, "de", &vars).disposition
        })
        .count();
    assert!((300..700).contains(&same), "{same} of 1000 alike");
}
