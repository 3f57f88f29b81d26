//! Leads as they arrive from outside (`/import-lead`): a webhook's JSON, a form, a CSV row.
//! Their field names vary ("E-Mail", "Telefon", "first_name"), so every name is mapped through
//! the synonyms of the product's languages (English, German, Bosnian/Serbian/Croatian) onto a
//! [`LeadField`]; the values become a [`CustomerDraft`] that the customer rules then validate.

use crate::customer::CustomerDraft;
use std::{collections::BTreeMap, fmt, str::FromStr};

/// A field a lead can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeadField {
    /// Full name.
    Name,
    /// First name (joined with the last name when there is no full name).
    FirstName,
    /// Last name.
    LastName,
    /// Email.
    Email,
    /// Phone.
    Phone,
    /// Company.
    Company,
    /// Where the lead came from.
    Source,
    /// Preferred language.
    Language,
    /// Country.
    Country,
    /// IANA time zone.
    TimeZone,
    /// Tags (a list, or text separated by `,` or `;`).
    Tags,
    /// Free text.
    Notes,
    /// The user who owns the lead.
    Owner,
    /// May receive marketing email.
    ConsentEmail,
    /// May be called.
    ConsentCall,
    /// May receive SMS.
    ConsentSms,
}

impl LeadField {
    /// Every field.
    pub const ALL: [Self; 16] = [
        Self::Name,
        Self::FirstName,
        Self::LastName,
        Self::Email,
        Self::Phone,
        Self::Company,
        Self::Source,
        Self::Language,
        Self::Country,
        Self::TimeZone,
        Self::Tags,
        Self::Notes,
        Self::Owner,
        Self::ConsentEmail,
        Self::ConsentCall,
        Self::ConsentSms,
    ];

    /// The canonical (GraphQL input) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::FirstName => "firstName",
            Self::LastName => "lastName",
            Self::Email => "email",
            Self::Phone => "phone",
            Self::Company => "company",
            Self::Source => "source",
            Self::Language => "language",
            Self::Country => "country",
            Self::TimeZone => "timeZone",
            Self::Tags => "tags",
            Self::Notes => "notes",
            Self::Owner => "owner",
            Self::ConsentEmail => "consentEmail",
            Self::ConsentCall => "consentCall",
            Self::ConsentSms => "consentSms",
        }
    }

    /// Known spellings, normalized (see [`normalize_header`]).
    fn synonyms(self) -> &'static [&'static str] {
        match self {
            Self::Name => &[
                "name",
                "fullname",
                "full_name",
                "contact",
                "contactname",
                "kontakt",
                "vollername",
                "ime_i_prezime",
                "imeiprezime",
                "naziv_kontakta",
            ],
            Self::FirstName => &["firstname", "first_name", "givenname", "vorname", "ime"],
            Self::LastName => &[
                "lastname",
                "last_name",
                "surname",
                "familyname",
                "nachname",
                "familienname",
                "prezime",
            ],
            Self::Email => &[
                "email",
                "e_mail",
                "mail",
                "emailaddress",
                "email_address",
                "e_mail_adresse",
                "emailadresse",
                "mailadresse",
                "adresa_e_poste",
                "e_posta",
                "eposta",
            ],
            Self::Phone => &[
                "phone",
                "telephone",
                "phonenumber",
                "phone_number",
                "mobile",
                "mobil",
                "mobile_phone",
                "cell",
                "tel",
                "telefon",
                "telefonnummer",
                "handy",
                "mobilnummer",
                "broj_telefona",
                "mobitel",
                "mobilni",
            ],
            Self::Company => &[
                "company",
                "companyname",
                "company_name",
                "organization",
                "organisation",
                "firma",
                "unternehmen",
                "firmenname",
                "organisation_name",
                "preduzece",
                "poduzece",
                "kompanija",
                "tvrtka",
            ],
            Self::Source => &[
                "source",
                "leadsource",
                "lead_source",
                "quelle",
                "herkunft",
                "izvor",
            ],
            Self::Language => &["language", "lang", "locale", "sprache", "jezik"],
            Self::Country => &[
                "country",
                "countrycode",
                "country_code",
                "land",
                "drzava",
                "zemlja",
            ],
            Self::TimeZone => &["timezone", "time_zone", "tz", "zeitzone", "vremenska_zona"],
            Self::Tags => &["tags", "tag", "labels", "schlagworte", "oznake"],
            Self::Notes => &[
                "notes",
                "note",
                "comment",
                "comments",
                "message",
                "notiz",
                "notizen",
                "bemerkung",
                "bemerkungen",
                "nachricht",
                "napomena",
                "poruka",
            ],
            Self::Owner => &["owner", "assignee", "besitzer", "zustandig", "vlasnik"],
            Self::ConsentEmail => &[
                "consentemail",
                "consent_email",
                "emailconsent",
                "email_consent",
                "newsletter",
                "email_opt_in",
                "optin",
                "opt_in",
                "einwilligung_email",
            ],
            Self::ConsentCall => &[
                "consentcall",
                "consent_call",
                "callconsent",
                "call_consent",
                "phone_consent",
                "einwilligung_anruf",
                "einwilligung_telefon",
            ],
            Self::ConsentSms => &["consentsms", "consent_sms", "smsconsent", "sms_consent"],
        }
    }

    /// The field a column header or JSON key names, if any: case, spaces, `-`, `.` and
    /// umlauts do not matter (`E-Mail`, `e_mail`, `EMail` and `Zuständig` all match).
    pub fn from_header(header: &str) -> Option<Self> {
        let key = normalize_header(header);
        if key.is_empty() {
            return None;
        }
        let compact: String = key.chars().filter(|c| *c != '_').collect();
        Self::ALL.into_iter().find(|field| {
            field.synonyms().iter().any(|s| {
                *s == key || s.chars().filter(|c| *c != '_').collect::<String>() == compact
            })
        })
    }
}

impl fmt::Display for LeadField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LeadField {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_header(s).ok_or_else(|| format!("`{s}` is not a lead field"))
    }
}

/// A header or key in a comparable form: lower case, ASCII-folded (ä→a, ß→ss, š→s, č→c, đ→d
/// …), runs of anything but letters and digits as one `_`, trimmed.
pub fn normalize_header(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut gap = false;
    for c in raw
        .trim()
        .trim_start_matches('\u{feff}')
        .chars()
        .flat_map(char::to_lowercase)
    {
        let folded: &str = match c {
            'ä' | 'á' | 'à' | 'â' => "a",
            'ö' | 'ó' | 'ò' | 'ô' => "o",
            'ü' | 'ú' | 'ù' | 'û' => "u",
            'é' | 'è' | 'ê' | 'ë' => "e",
            'ß' => "ss",
            'š' => "s",
            'č' | 'ć' => "c",
            'ž' => "z",
            'đ' => "d",
            _ => "",
        };
        if !folded.is_empty() {
            if gap && !out.is_empty() {
                out.push('_');
            }
            gap = false;
            out.push_str(folded);
        } else if c.is_alphanumeric() {
            if gap && !out.is_empty() {
                out.push('_');
            }
            gap = false;
            out.push(c);
        } else {
            gap = true;
        }
    }
    out
}

/// One value of a lead field.
#[derive(Debug, Clone, PartialEq)]
pub enum LeadValue {
    /// Text (blank text counts as absent).
    Text(String),
    /// A yes/no.
    Bool(bool),
    /// A list (tags).
    List(Vec<String>),
}

/// A lead as it arrived, its fields named canonically.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawLead {
    /// The values by field (the first of repeated fields wins).
    pub fields: BTreeMap<LeadField, LeadValue>,
    /// Names that matched no field (kept in the raw payload, reported to the caller).
    pub unknown: Vec<String>,
}

impl RawLead {
    /// Sets a field from a named value unless it is set already; remembers unknown names.
    pub fn set(&mut self, name: &str, value: LeadValue) {
        match LeadField::from_header(name) {
            Some(field) => {
                self.fields.entry(field).or_insert(value);
            }
            None => self.unknown.push(name.to_owned()),
        }
    }

    /// Sets a field unless it is set already.
    pub fn set_field(&mut self, field: LeadField, value: LeadValue) {
        self.fields.entry(field).or_insert(value);
    }

    fn text(&self, field: LeadField) -> Option<String> {
        match self.fields.get(&field)? {
            LeadValue::Text(text) => {
                let text = text.trim();
                (!text.is_empty()).then(|| text.to_owned())
            }
            LeadValue::Bool(b) => Some(b.to_string()),
            LeadValue::List(items) => {
                let joined = items.join(", ");
                (!joined.trim().is_empty()).then_some(joined)
            }
        }
    }

    fn flag(&self, field: LeadField) -> Result<Option<bool>, String> {
        match self.fields.get(&field) {
            None => Ok(None),
            Some(LeadValue::Bool(b)) => Ok(Some(*b)),
            Some(LeadValue::List(_)) => Err(format!("{field} must be yes or no")),
            Some(LeadValue::Text(text)) => parse_flag(text)
                .map_err(|()| format!("{field}: `{}` is not yes or no", text.trim())),
        }
    }

    /// The customer draft of this lead. `source` and `tags` are the import's defaults: the
    /// lead's own source wins, tags are merged. Fails with the fields whose values cannot be
    /// read at all (a consent that is neither yes nor no); everything else is validated by
    /// [`crate::customer::NewCustomer::parse`].
    pub fn to_draft(
        &self,
        default_source: Option<&str>,
        extra_tags: &[String],
    ) -> Result<CustomerDraft, Vec<(LeadField, String)>> {
        let mut errors = Vec::new();
        let mut flag = |field| {
            self.flag(field).unwrap_or_else(|message| {
                errors.push((field, message));
                None
            })
        };
        let (consent_email, consent_call, consent_sms) = (
            flag(LeadField::ConsentEmail),
            flag(LeadField::ConsentCall),
            flag(LeadField::ConsentSms),
        );
        if !errors.is_empty() {
            return Err(errors);
        }
        let name = self.text(LeadField::Name).or_else(|| {
            let parts: Vec<String> = [LeadField::FirstName, LeadField::LastName]
                .into_iter()
                .filter_map(|f| self.text(f))
                .collect();
            (!parts.is_empty()).then(|| parts.join(" "))
        });
        let mut tags: Vec<String> = match self.fields.get(&LeadField::Tags) {
            Some(LeadValue::List(items)) => items.clone(),
            Some(LeadValue::Text(text)) => text
                .split([',', ';', '|'])
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        tags.extend(extra_tags.iter().cloned());
        Ok(CustomerDraft {
            name: name.unwrap_or_default(),
            email: self.text(LeadField::Email),
            phone: self.text(LeadField::Phone),
            company: self.text(LeadField::Company),
            status: None,
            source: self
                .text(LeadField::Source)
                .or_else(|| default_source.map(str::to_owned)),
            language: self.text(LeadField::Language),
            country: self.text(LeadField::Country),
            time_zone: self.text(LeadField::TimeZone),
            owner: self.text(LeadField::Owner),
            tags: (!tags.is_empty()).then_some(tags),
            consent_email,
            consent_call,
            consent_sms,
            notes: self.text(LeadField::Notes),
        })
    }
}

/// Yes or no in the languages that matter: `true`/`false`, `yes`/`no`, `ja`/`nein`, `da`/`ne`,
/// `1`/`0`, `x`/empty.
fn parse_flag(raw: &str) -> Result<Option<bool>, ()> {
    match raw.trim().to_lowercase().as_str() {
        "" => Ok(None),
        "true" | "yes" | "y" | "ja" | "j" | "da" | "1" | "x" | "on" => Ok(Some(true)),
        "false" | "no" | "n" | "nein" | "ne" | "0" | "off" => Ok(Some(false)),
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_in_every_language_map_to_fields() {
        for (header, field) in [
            ("E-Mail", LeadField::Email),
            ("\u{feff}EMail", LeadField::Email),
            ("email address", LeadField::Email),
            ("Telefon", LeadField::Phone),
            ("Telefonnummer", LeadField::Phone),
            ("Broj telefona", LeadField::Phone),
            ("Firma", LeadField::Company),
            ("Preduzeće", LeadField::Company),
            ("Vorname", LeadField::FirstName),
            ("Nachname", LeadField::LastName),
            ("first_name", LeadField::FirstName),
            ("Zuständig", LeadField::Owner),
            ("Name", LeadField::Name),
            ("consentEmail", LeadField::ConsentEmail),
            ("timeZone", LeadField::TimeZone),
        ] {
            assert_eq!(LeadField::from_header(header), Some(field), "{header}");
        }
        assert_eq!(LeadField::from_header("Lieblingsfarbe"), None);
        assert_eq!(LeadField::from_header(""), None);
        // Every canonical name maps to itself.
        for field in LeadField::ALL {
            assert_eq!(LeadField::from_header(field.as_str()), Some(field));
        }
    }

    #[test]
    fn a_raw_lead_becomes_a_draft() {
        let mut lead = RawLead::default();
        lead.set("Vorname", LeadValue::Text(" Jürgen ".into()));
        lead.set("Nachname", LeadValue::Text("Müller".into()));
        lead.set("E-Mail", LeadValue::Text("".into()));
        lead.set("Telefon", LeadValue::Text("030 123456".into()));
        lead.set("Schlagworte", LeadValue::Text("messe; vip".into()));
        lead.set("Newsletter", LeadValue::Text("Ja".into()));
        lead.set("Lieblingsfarbe", LeadValue::Text("blau".into()));
        let draft = lead.to_draft(Some("import"), &["q4".into()]).unwrap();
        assert_eq!(draft.name, "Jürgen Müller");
        assert_eq!(draft.email, None, "blank is absent");
        assert_eq!(draft.phone.as_deref(), Some("030 123456"));
        assert_eq!(draft.source.as_deref(), Some("import"));
        assert_eq!(
            draft.tags,
            Some(vec!["messe".into(), "vip".into(), "q4".into()])
        );
        assert_eq!(draft.consent_email, Some(true));
        assert_eq!(lead.unknown, ["Lieblingsfarbe"]);

        let mut bad = RawLead::default();
        bad.set("consent_call", LeadValue::Text("vielleicht".into()));
        let errors = bad.to_draft(None, &[]).unwrap_err();
        assert_eq!(errors[0].0, LeadField::ConsentCall);
    }
}
