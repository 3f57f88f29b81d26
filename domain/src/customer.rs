//! Customers. A lead is a customer in status `lead`; the status moves on as sales progresses.

use crate::{
    error::{FieldError, ValidationErrors},
    ids::CustomerId,
    values::{
        CountryCode, Email, Language, Phone, PhoneRegion, Tag, TimeZone, optional_text, parse_tags,
        required_text, text_change,
    },
};
use chrono::{DateTime, Utc};
use std::{fmt, str::FromStr};

/// Longest name accepted.
pub const NAME_MAX_LEN: usize = 200;
/// Longest company, source and owner accepted.
pub const SHORT_TEXT_MAX_LEN: usize = 200;
/// Longest notes accepted.
pub const NOTES_MAX_LEN: usize = 10_000;

/// Where a customer stands in the sales cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CustomerStatus {
    /// Came in, not yet qualified or contacted.
    #[default]
    Lead,
    /// Qualified and in conversation.
    Prospect,
    /// Bought.
    Customer,
    /// Was a customer, left.
    Churned,
}

impl CustomerStatus {
    /// Every status, in sales order.
    pub const ALL: [Self; 4] = [Self::Lead, Self::Prospect, Self::Customer, Self::Churned];

    /// The stored, lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lead => "lead",
            Self::Prospect => "prospect",
            Self::Customer => "customer",
            Self::Churned => "churned",
        }
    }
}

impl FromStr for CustomerStatus {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                FieldError::new(
                    "status",
                    "invalid_status",
                    format!("`{s}` is not a customer status"),
                )
            })
    }
}

impl fmt::Display for CustomerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored customer.
#[derive(Debug, Clone, PartialEq)]
pub struct Customer {
    /// Identity.
    pub id: CustomerId,
    /// Full name or the name of the contact person.
    pub name: String,
    /// Normalized email, unique among all customers.
    pub email: Option<Email>,
    /// E.164 phone, unique among all customers.
    pub phone: Option<Phone>,
    /// Company name.
    pub company: Option<String>,
    /// Stage in the sales cycle.
    pub status: CustomerStatus,
    /// Where the customer came from (`website`, `partner`, `import`, …).
    pub source: Option<String>,
    /// Preferred language for calls and emails.
    pub language: Option<Language>,
    /// Country (given, or derived from the phone number).
    pub country: Option<CountryCode>,
    /// Local time zone, used for calling windows.
    pub time_zone: Option<TimeZone>,
    /// The user who owns the customer.
    pub owner: Option<String>,
    /// Tags, normalized and sorted.
    pub tags: Vec<Tag>,
    /// May receive marketing email.
    pub consent_email: bool,
    /// May be called.
    pub consent_call: bool,
    /// May receive SMS.
    pub consent_sms: bool,
    /// Free-text notes.
    pub notes: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Soft-deleted at; a deleted customer is hidden from lists and can be restored.
    pub deleted_at: Option<DateTime<Utc>>,
}

/// The raw fields of a new customer, as a client sent them.
#[derive(Debug, Clone, Default)]
pub struct CustomerDraft {
    /// Name (required).
    pub name: String,
    /// Email as typed.
    pub email: Option<String>,
    /// Phone as typed.
    pub phone: Option<String>,
    /// Company.
    pub company: Option<String>,
    /// Status (default `lead`).
    pub status: Option<CustomerStatus>,
    /// Source.
    pub source: Option<String>,
    /// Language tag.
    pub language: Option<String>,
    /// Country code.
    pub country: Option<String>,
    /// IANA time zone.
    pub time_zone: Option<String>,
    /// Owner.
    pub owner: Option<String>,
    /// Tags.
    pub tags: Option<Vec<String>>,
    /// Email consent (default false).
    pub consent_email: Option<bool>,
    /// Call consent (default false).
    pub consent_call: Option<bool>,
    /// SMS consent (default false).
    pub consent_sms: Option<bool>,
    /// Notes.
    pub notes: Option<String>,
}

/// A validated customer, ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCustomer(pub Customer);

impl NewCustomer {
    /// Validates and normalizes a draft, reporting every failing field. `now` stamps the
    /// timestamps; `region` reads national phone numbers.
    pub fn parse(
        draft: CustomerDraft,
        region: PhoneRegion,
        now: DateTime<Utc>,
    ) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let name = errors.check(required_text("name", &draft.name, NAME_MAX_LEN));
        let email = errors.check(draft.email.as_deref().map(Email::parse).transpose());
        let phone = errors.check(
            draft
                .phone
                .as_deref()
                .map(|p| Phone::parse(p, region))
                .transpose(),
        );
        let company = errors.check(optional_text(
            "company",
            draft.company.as_deref(),
            SHORT_TEXT_MAX_LEN,
        ));
        let source = errors.check(optional_text(
            "source",
            draft.source.as_deref(),
            SHORT_TEXT_MAX_LEN,
        ));
        let language = errors.check(
            non_blank(draft.language.as_deref())
                .map(Language::parse)
                .transpose(),
        );
        let country = errors.check(
            non_blank(draft.country.as_deref())
                .map(CountryCode::parse)
                .transpose(),
        );
        let time_zone = errors.check(
            non_blank(draft.time_zone.as_deref())
                .map(TimeZone::parse)
                .transpose(),
        );
        let owner = errors.check(optional_text(
            "owner",
            draft.owner.as_deref(),
            SHORT_TEXT_MAX_LEN,
        ));
        let tags = errors.check(parse_tags(draft.tags.as_deref().unwrap_or_default()));
        let notes = errors.check(optional_text(
            "notes",
            draft.notes.as_deref(),
            NOTES_MAX_LEN,
        ));
        if matches!((&email, &phone), (Some(None), Some(None))) {
            errors.push(contact_required());
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let (Some(name), Some(email), Some(phone), Some(company), Some(source), Some(language)) =
            (name, email, phone, company, source, language)
        else {
            return Err(errors);
        };
        let (Some(country), Some(time_zone), Some(owner), Some(tags), Some(notes)) =
            (country, time_zone, owner, tags, notes)
        else {
            return Err(errors);
        };
        // A phone number names its country; use it when none was given.
        let country = country.or_else(|| phone.as_ref().and_then(Phone::country));
        Ok(Self(Customer {
            id: CustomerId::new(),
            name,
            email,
            phone,
            company,
            status: draft.status.unwrap_or_default(),
            source,
            language,
            country,
            time_zone,
            owner,
            tags,
            consent_email: draft.consent_email.unwrap_or(false),
            consent_call: draft.consent_call.unwrap_or(false),
            consent_sms: draft.consent_sms.unwrap_or(false),
            notes,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        }))
    }
}

fn non_blank(raw: Option<&str>) -> Option<&str> {
    raw.filter(|s| !s.trim().is_empty())
}

fn contact_required() -> FieldError {
    FieldError::new(
        "email",
        "contact_required",
        "a customer needs an email or a phone number",
    )
}

/// A change to one optional field of a partial update.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Change<T> {
    /// Leave the field as it is (the field was absent).
    #[default]
    Keep,
    /// Clear the field (the field was `null`).
    Clear,
    /// Set the field.
    Set(T),
}

impl<T> Change<T> {
    /// Validates the new value of a `Set`.
    pub fn try_map<U, E>(self, f: impl FnOnce(T) -> Result<U, E>) -> Result<Change<U>, E> {
        Ok(match self {
            Self::Keep => Change::Keep,
            Self::Clear => Change::Clear,
            Self::Set(value) => Change::Set(f(value)?),
        })
    }

    /// Applies the change to an optional field.
    pub fn apply(self, field: &mut Option<T>) {
        match self {
            Self::Keep => {}
            Self::Clear => *field = None,
            Self::Set(value) => *field = Some(value),
        }
    }
}

/// The raw fields of a partial update, as a client sent them.
#[derive(Debug, Clone, Default)]
pub struct CustomerPatchDraft {
    /// New name (cannot be cleared).
    pub name: Option<String>,
    /// Email.
    pub email: Change<String>,
    /// Phone.
    pub phone: Change<String>,
    /// Company.
    pub company: Change<String>,
    /// Status (cannot be cleared).
    pub status: Option<CustomerStatus>,
    /// Source.
    pub source: Change<String>,
    /// Language.
    pub language: Change<String>,
    /// Country.
    pub country: Change<String>,
    /// Time zone.
    pub time_zone: Change<String>,
    /// Owner.
    pub owner: Change<String>,
    /// Tags: replaces the whole set.
    pub tags: Option<Vec<String>>,
    /// Email consent.
    pub consent_email: Option<bool>,
    /// Call consent.
    pub consent_call: Option<bool>,
    /// SMS consent.
    pub consent_sms: Option<bool>,
    /// Notes.
    pub notes: Change<String>,
}

/// A validated partial update.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CustomerPatch {
    name: Option<String>,
    email: Change<Email>,
    phone: Change<Phone>,
    company: Change<String>,
    status: Option<CustomerStatus>,
    source: Change<String>,
    language: Change<Language>,
    country: Change<CountryCode>,
    time_zone: Change<TimeZone>,
    owner: Change<String>,
    tags: Option<Vec<Tag>>,
    consent_email: Option<bool>,
    consent_call: Option<bool>,
    consent_sms: Option<bool>,
    notes: Change<String>,
}

impl CustomerPatch {
    /// The email this patch sets, if it sets one.
    pub fn new_email(&self) -> Option<&Email> {
        match &self.email {
            Change::Set(email) => Some(email),
            _ => None,
        }
    }

    /// The phone this patch sets, if it sets one.
    pub fn new_phone(&self) -> Option<&Phone> {
        match &self.phone {
            Change::Set(phone) => Some(phone),
            _ => None,
        }
    }

    /// Validates a partial update, reporting every failing field.
    pub fn parse(draft: CustomerPatchDraft, region: PhoneRegion) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let patch = Self {
            name: errors
                .check(
                    draft
                        .name
                        .map(|n| required_text("name", &n, NAME_MAX_LEN))
                        .transpose(),
                )
                .flatten(),
            email: errors
                .check(draft.email.try_map(|e| Email::parse(&e)))
                .unwrap_or_default(),
            phone: errors
                .check(draft.phone.try_map(|p| Phone::parse(&p, region)))
                .unwrap_or_default(),
            company: errors
                .check(text_change("company", draft.company, SHORT_TEXT_MAX_LEN))
                .unwrap_or_default(),
            status: draft.status,
            source: errors
                .check(text_change("source", draft.source, SHORT_TEXT_MAX_LEN))
                .unwrap_or_default(),
            language: errors
                .check(draft.language.try_map(|l| Language::parse(&l)))
                .unwrap_or_default(),
            country: errors
                .check(draft.country.try_map(|c| CountryCode::parse(&c)))
                .unwrap_or_default(),
            time_zone: errors
                .check(draft.time_zone.try_map(|z| TimeZone::parse(&z)))
                .unwrap_or_default(),
            owner: errors
                .check(text_change("owner", draft.owner, SHORT_TEXT_MAX_LEN))
                .unwrap_or_default(),
            tags: errors
                .check(draft.tags.map(|t| parse_tags(&t)).transpose())
                .flatten(),
            consent_email: draft.consent_email,
            consent_call: draft.consent_call,
            consent_sms: draft.consent_sms,
            notes: errors
                .check(text_change("notes", draft.notes, NOTES_MAX_LEN))
                .unwrap_or_default(),
        };
        errors.into_result(|| patch)
    }

    /// True when the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

impl Customer {
    /// Applies a validated patch, stamping `updated_at`. Fails if the result would have neither
    /// email nor phone.
    pub fn apply(
        &mut self,
        patch: CustomerPatch,
        now: DateTime<Utc>,
    ) -> Result<(), ValidationErrors> {
        let mut next = self.clone();
        if let Some(name) = patch.name {
            next.name = name;
        }
        patch.email.apply(&mut next.email);
        patch.phone.apply(&mut next.phone);
        patch.company.apply(&mut next.company);
        if let Some(status) = patch.status {
            next.status = status;
        }
        patch.source.apply(&mut next.source);
        patch.language.apply(&mut next.language);
        patch.country.apply(&mut next.country);
        patch.time_zone.apply(&mut next.time_zone);
        patch.owner.apply(&mut next.owner);
        if let Some(tags) = patch.tags {
            next.tags = tags;
        }
        next.consent_email = patch.consent_email.unwrap_or(next.consent_email);
        next.consent_call = patch.consent_call.unwrap_or(next.consent_call);
        next.consent_sms = patch.consent_sms.unwrap_or(next.consent_sms);
        patch.notes.apply(&mut next.notes);
        if next.email.is_none() && next.phone.is_none() {
            return Err(contact_required().into());
        }
        if next != *self {
            next.updated_at = now;
        }
        *self = next;
        Ok(())
    }

    /// The text that the `text` filter searches: name, email and company, lower-cased with full
    /// Unicode rules (SQL `lower()` only folds ASCII in SQLite).
    pub fn search_text(&self) -> String {
        let mut text = self.name.to_lowercase();
        if let Some(email) = &self.email {
            text.push('\n');
            text.push_str(email.as_str());
        }
        if let Some(company) = &self.company {
            text.push('\n');
            text.push_str(&company.to_lowercase());
        }
        // The folded forms too (ASCII, Cyrillic as Latin), so that duplicate candidates are
        // found across spellings and scripts.
        text.push('\n');
        text.push_str(&crate::similarity::normalize_name(&self.name));
        if let Some(company) = &self.company {
            text.push('\n');
            text.push_str(&crate::similarity::normalize_company(company));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region() -> PhoneRegion {
        PhoneRegion::parse("DE").unwrap()
    }

    fn draft() -> CustomerDraft {
        CustomerDraft {
            name: " Jürgen Müller ".into(),
            email: Some("J.Mueller@Firma.DE".into()),
            phone: Some("030 123456".into()),
            company: Some("Müller GmbH".into()),
            tags: Some(vec!["Messe".into(), "messe".into()]),
            ..CustomerDraft::default()
        }
    }

    #[test]
    fn a_draft_is_normalized() {
        let NewCustomer(c) = NewCustomer::parse(draft(), region(), Utc::now()).unwrap();
        assert_eq!(c.name, "Jürgen Müller");
        assert_eq!(c.email.unwrap().as_str(), "j.mueller@firma.de");
        assert_eq!(c.phone.unwrap().as_str(), "+4930123456");
        assert_eq!(c.country.unwrap().as_str(), "DE", "derived from the phone");
        assert_eq!(c.status, CustomerStatus::Lead);
        assert_eq!(c.tags.len(), 1);
        assert!(!c.consent_call);
    }

    #[test]
    fn every_bad_field_is_reported() {
        let bad = CustomerDraft {
            name: "".into(),
            email: Some("nope".into()),
            phone: Some("12".into()),
            language: Some("klingon".into()),
            time_zone: Some("Nowhere/City".into()),
            ..CustomerDraft::default()
        };
        let errors = NewCustomer::parse(bad, region(), Utc::now()).unwrap_err();
        let fields: Vec<_> = errors
            .errors()
            .iter()
            .map(|e| (e.field.as_str(), e.code))
            .collect();
        assert_eq!(
            fields,
            [
                ("name", "required"),
                ("email", "invalid_email"),
                ("phone", "invalid_phone"),
                ("language", "invalid_language"),
                ("time_zone", "invalid_time_zone"),
            ]
        );
    }

    #[test]
    fn email_or_phone_is_required() {
        let draft = CustomerDraft {
            name: "Ana".into(),
            ..CustomerDraft::default()
        };
        let errors = NewCustomer::parse(draft, region(), Utc::now()).unwrap_err();
        assert_eq!(errors.errors()[0].code, "contact_required");
    }

    #[test]
    fn a_patch_changes_only_what_it_names() {
        let NewCustomer(mut c) = NewCustomer::parse(draft(), region(), Utc::now()).unwrap();
        let before = c.clone();
        let patch = CustomerPatch::parse(
            CustomerPatchDraft {
                company: Change::Clear,
                status: Some(CustomerStatus::Prospect),
                owner: Change::Set("alice".into()),
                ..CustomerPatchDraft::default()
            },
            region(),
        )
        .unwrap();
        let later = before.updated_at + chrono::Duration::seconds(5);
        c.apply(patch, later).unwrap();
        assert_eq!(c.company, None);
        assert_eq!(c.status, CustomerStatus::Prospect);
        assert_eq!(c.owner.as_deref(), Some("alice"));
        assert_eq!(c.email, before.email);
        assert_eq!(c.updated_at, later);
    }

    #[test]
    fn a_patch_cannot_remove_the_last_contact() {
        let NewCustomer(mut c) = NewCustomer::parse(draft(), region(), Utc::now()).unwrap();
        let patch = CustomerPatch::parse(
            CustomerPatchDraft {
                email: Change::Clear,
                phone: Change::Clear,
                ..Default::default()
            },
            region(),
        )
        .unwrap();
        let original = c.clone();
        assert_eq!(
            c.apply(patch, Utc::now()).unwrap_err().errors()[0].code,
            "contact_required"
        );
        assert_eq!(c, original, "a failed patch leaves the customer untouched");
    }

    #[test]
    fn an_empty_patch_does_not_touch_updated_at() {
        let NewCustomer(mut c) = NewCustomer::parse(draft(), region(), Utc::now()).unwrap();
        let before = c.updated_at;
        let patch = CustomerPatch::parse(CustomerPatchDraft::default(), region()).unwrap();
        assert!(patch.is_empty());
        c.apply(patch, before + chrono::Duration::seconds(1))
            .unwrap();
        assert_eq!(c.updated_at, before);
    }

    #[test]
    fn search_text_folds_unicode() {
        let NewCustomer(c) = NewCustomer::parse(draft(), region(), Utc::now()).unwrap();
        assert!(c.search_text().contains("jürgen müller"));
        assert!(c.search_text().contains("müller gmbh"));
    }
}
