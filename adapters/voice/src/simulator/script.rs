//! What a simulated call says, per language, and how it goes.
//!
//! The plan is a pure function of the seed and the dialled number, so a run is reproducible:
//! 60 % of numbers answer, 20 % do not, 10 % reach a mailbox and 10 % are busy; an answered
//! call ends with an appointment (35 %), interest (25 %), a call-back request (15 %), no
//! interest (20 %) or a do-not-call request (5 %).

use crm_domain::{Disposition, Sentiment, SpeakerRole};

/// How one simulated call goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// How it ends.
    pub disposition: Disposition,
    /// The business outcome of an answered call.
    pub outcome: Option<&'static str>,
    /// The conversation's sentiment.
    pub sentiment: Option<Sentiment>,
    /// The lines, in order.
    pub lines: Vec<(SpeakerRole, String)>,
    /// The summary.
    pub summary: String,
}

/// SplitMix64: a tiny, well-mixed hash step (no dependency for a deterministic pick).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn roll(seed: u64, number: &str, salt: u64) -> u64 {
    let mut h = mix(seed ^ salt);
    for byte in number.bytes() {
        h = mix(h ^ u64::from(byte));
    }
    h % 100
}

struct Words {
    greeting: &'static str,
    reply: &'static str,
    pitch: &'static str,
    appointment: (&'static str, &'static str),
    interested: (&'static str, &'static str),
    callback: (&'static str, &'static str),
    not_interested: (&'static str, &'static str),
    do_not_call: (&'static str, &'static str),
    goodbye: &'static str,
    mailbox: &'static str,
}

fn words(language: &str) -> Words {
    // A locale (`sr-RS`) speaks its language.
    let primary = language.split(['-', '_']).next().unwrap_or_default();
    match primary.to_ascii_lowercase().as_str() {
        "de" => Words {
            greeting: "Guten Tag {name}, hier ist {agent} von {sender}. Haben Sie kurz Zeit?",
            reply: "Ja, worum geht es?",
            pitch: "Sie haben sich für unser Angebot interessiert. Darf ich Ihnen zeigen, wie {company} Zeit sparen kann?",
            appointment: (
                "Gerne, passt Ihnen Donnerstag um 10 Uhr?",
                "Ja, Donnerstag um 10 passt.",
            ),
            interested: (
                "Soll ich Ihnen Unterlagen schicken?",
                "Ja, schicken Sie mir bitte Informationen.",
            ),
            callback: (
                "Wann darf ich Sie wieder anrufen?",
                "Rufen Sie mich bitte nächste Woche an.",
            ),
            not_interested: (
                "Verstehe. Darf ich fragen, warum?",
                "Nein danke, kein Interesse.",
            ),
            do_not_call: (
                "Entschuldigung für die Störung.",
                "Bitte rufen Sie mich nicht mehr an.",
            ),
            goodbye: "Vielen Dank, auf Wiederhören!",
            mailbox: "Guten Tag {name}, hier ist {agent} von {sender}. Bitte rufen Sie uns zurück.",
        },
        "bs" => Words {
            greeting: "Dobar dan {name}, ovdje {agent} iz {sender}. Imate li trenutak?",
            reply: "Da, o čemu se radi?",
            pitch: "Interesovali ste se za našu ponudu. Mogu li vam pokazati kako {company} može uštedjeti vrijeme?",
            appointment: (
                "Odgovara li vam četvrtak u 10 sati?",
                "Da, četvrtak u 10 odgovara.",
            ),
            interested: (
                "Da vam pošaljem informacije?",
                "Da, pošaljite mi informacije.",
            ),
            callback: (
                "Kada vas mogu ponovo nazvati?",
                "Nazovite me sljedeće sedmice.",
            ),
            not_interested: (
                "Razumijem. Smijem li pitati zašto?",
                "Ne hvala, nisam zainteresovan.",
            ),
            do_not_call: ("Izvinite na smetnji.", "Molim vas, ne zovite me više."),
            goodbye: "Hvala vam, doviđenja!",
            mailbox: "Dobar dan {name}, ovdje {agent} iz {sender}. Molimo nazovite nas.",
        },
        "sr" => Words {
            greeting: "Добар дан {name}, овде {agent} из {sender}. Имате ли тренутак?",
            reply: "Да, о чему се ради?",
            pitch: "Интересовали сте се за нашу понуду. Могу ли да вам покажем како {company} може да уштеди време?",
            appointment: (
                "Да ли вам одговара четвртак у 10 часова?",
                "Да, четвртак у 10 одговара.",
            ),
            interested: (
                "Да вам пошаљем информације?",
                "Да, пошаљите ми информације.",
            ),
            callback: (
                "Када могу поново да вас позовем?",
                "Позовите ме следеће недеље.",
            ),
            not_interested: (
                "Разумем. Смем ли да питам зашто?",
                "Не хвала, нисам заинтересован.",
            ),
            do_not_call: ("Извините на сметњи.", "Молим вас, не зовите ме више."),
            goodbye: "Хвала вам, довиђења!",
            mailbox: "Добар дан {name}, овде {agent} из {sender}. Молимо позовите нас.",
        },
        _ => Words {
            greeting: "Hello {name}, this is {agent} from {sender}. Do you have a moment?",
            reply: "Yes, what is it about?",
            pitch: "You were interested in our offer. May I show you how {company} can save time?",
            appointment: (
                "Would Thursday at 10 work for you?",
                "Yes, Thursday at 10 works.",
            ),
            interested: (
                "Shall I send you some information?",
                "Yes, please send me information.",
            ),
            callback: ("When may I call you back?", "Please call me next week."),
            not_interested: ("I understand. May I ask why?", "No thanks, not interested."),
            do_not_call: (
                "Sorry for the interruption.",
                "Please do not call me again.",
            ),
            goodbye: "Thank you, goodbye!",
            mailbox: "Hello {name}, this is {agent} from {sender}. Please call us back.",
        },
    }
}

fn fill(template: &str, vars: &dyn Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        match rest[open..].find('}') {
            Some(close) => {
                out.push_str(&vars(&rest[open + 1..open + close]));
                rest = &rest[open + close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The plan of the first call to `number` in `language`, with script variables from `vars`
/// (`name`, `company`, `agent`, `sender`).
pub fn plan(seed: u64, number: &str, language: &str, vars: &dyn Fn(&str) -> String) -> Plan {
    plan_attempt(seed, number, 1, language, vars)
}

/// The plan of attempt `attempt` (1 for the first call) to `number`: each attempt rolls anew,
/// so a retry may reach a lead the first call missed, as on a real line; the same seed,
/// number and attempt always play the same call.
pub fn plan_attempt(
    seed: u64,
    number: &str,
    attempt: u32,
    language: &str,
    vars: &dyn Fn(&str) -> String,
) -> Plan {
    let w = words(language);
    // The first attempt's salts are 1 and 2; a later one's carry its number in the high bits.
    let salt = |n: u64| n ^ (u64::from(attempt.max(1) - 1) << 32);
    let reach = roll(seed, number, salt(1));
    let disposition = match reach {
        0..60 => Disposition::Answered,
        60..80 => Disposition::NoAnswer,
        80..90 => Disposition::Voicemail,
        _ => Disposition::Busy,
    };
    let agent = SpeakerRole::Agent;
    let customer = SpeakerRole::Customer;
    match disposition {
        Disposition::Answered => {
            let pick = roll(seed, number, salt(2));
            let (outcome, (ask, answer), sentiment) = match pick {
                0..35 => ("appointment", w.appointment, Sentiment::Positive),
                35..60 => ("interested", w.interested, Sentiment::Positive),
                60..75 => ("callback", w.callback, Sentiment::Neutral),
                75..95 => ("not_interested", w.not_interested, Sentiment::Negative),
                _ => ("do_not_call", w.do_not_call, Sentiment::Negative),
            };
            let lines = vec![
                (agent, fill(w.greeting, vars)),
                (customer, w.reply.to_owned()),
                (agent, fill(w.pitch, vars)),
                (customer, answer.to_owned()),
                (agent, ask.to_owned()),
                (agent, w.goodbye.to_owned()),
            ];
            // Put the question before the answer where the answer responds to it.
            let lines = if outcome == "do_not_call" || outcome == "not_interested" {
                lines
            } else {
                let mut reordered = lines;
                reordered.swap(3, 4);
                reordered
            };
            Plan {
                disposition,
                outcome: Some(outcome),
                sentiment: Some(sentiment),
                summary: format!(
                    "Simulated call with {}: {}.",
                    vars("name"),
                    outcome.replace('_', " ")
                ),
                lines,
            }
        }
        Disposition::Voicemail => Plan {
            disposition,
            outcome: None,
            sentiment: None,
            summary: format!(
                "Simulated call: a mailbox answered; message left for {}.",
                vars("name")
            ),
            lines: vec![(agent, fill(w.mailbox, vars))],
        },
        other => Plan {
            disposition: other,
            outcome: None,
            sentiment: None,
            summary: format!("Simulated call: {}.", other.as_str().replace('_', " ")),
            lines: Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> String {
        match name {
            "name" => "Ana".to_owned(),
            other => format!("<{other}>"),
        }
    }

    #[test]
    fn the_same_seed_and_number_play_the_same_call() {
        let a = plan(7, "+38761000111", "bs", &vars);
        assert_eq!(a, plan(7, "+38761000111", "bs", &vars));
    }

    #[test]
    fn outcomes_are_spread_roughly_as_documented() {
        let mut answered = 0;
        for n in 0..1000 {
            if plan(1, &format!("+4930{n:07}"), "de", &vars).disposition == Disposition::Answered {
                answered += 1;
            }
        }
        assert!(
            (520..680).contains(&answered),
            "{answered} of 1000 answered"
        );
    }

    #[test]
    fn lines_speak_the_language_and_fill_variables() {
        let answered = (0..100)
            .map(|n| plan(3, &format!("+3811100{n:04}"), "sr", &vars))
            .find(|p| p.disposition == Disposition::Answered)
            .unwrap_or_else(|| panic!("some number answers"));
        assert!(answered.lines[0].1.starts_with("Добар дан Ana"));
        assert!(answered.lines.iter().all(|(_, text)| !text.contains('{')));
    }
}
