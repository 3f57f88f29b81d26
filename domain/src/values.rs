//! Validated value types. Each can only be built through `parse`, which normalizes its input;
//! `from_stored` rebuilds a value that was validated before it was stored.

use crate::error::FieldError;
use email_address::{EmailAddress, Options};
use std::{fmt, str::FromStr};

/// Longest email address accepted (RFC 5321 path limit).
const EMAIL_MAX_LEN: usize = 254;

/// A syntactically valid email address, normalized: trimmed and lower-cased.
///
/// The whole address is lower-cased, not only the domain. RFC 5321 lets a server treat the local
/// part case-sensitively, but no mainstream provider does, and a CRM must recognise
/// `Max@Example.com` and `max@example.com` as the same person for duplicate detection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Parses and normalizes an email address. Requires a dotted domain (`a@b.c`); rejects display
    /// names (`Max <max@example.com>`) and IP-literal domains.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(FieldError::new(
                "email",
                "required",
                "email must not be empty",
            ));
        }
        if trimmed.len() > EMAIL_MAX_LEN {
            return Err(FieldError::new(
                "email",
                "too_long",
                format!("email must be at most {EMAIL_MAX_LEN} characters"),
            ));
        }
        let normalized = trimmed.to_lowercase();
        let options = Options {
            minimum_sub_domains: 2,
            allow_domain_literal: false,
            allow_display_text: false,
            ..Options::default()
        };
        match EmailAddress::parse_with_options(&normalized, options) {
            Ok(_) => Ok(Self(normalized)),
            Err(error) => Err(FieldError::new(
                "email",
                "invalid_email",
                format!("`{trimmed}` is not a valid email address: {error}"),
            )),
        }
    }

    /// Rebuilds an address that was parsed before it was stored.
    pub fn from_stored(stored: String) -> Self {
        Self(stored)
    }

    /// The normalized address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The domain part (after the `@`).
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, domain)| domain)
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The region used to read phone numbers written without an international prefix
/// (`030 123456` is Berlin when the region is `DE`). An ISO 3166-1 alpha-2 code known to the
/// phone-number metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhoneRegion(phonenumber::country::Id);

impl PhoneRegion {
    /// Parses a region code such as `DE`, `BA`, `RS` (case-insensitive).
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        raw.trim()
            .to_uppercase()
            .parse::<phonenumber::country::Id>()
            .map(Self)
            .map_err(|_| {
                FieldError::new(
                    "default_region",
                    "invalid_region",
                    format!("`{raw}` is not a known ISO 3166-1 alpha-2 region"),
                )
            })
    }
}

impl FromStr for PhoneRegion {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for PhoneRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_ref())
    }
}

/// A valid phone number in E.164 form (`+4930123456`).
///
/// Parsed with the libphonenumber metadata (the `phonenumber` crate): a number without an
/// international prefix is read in the given region's national format, never by prefixing a
/// country code blindly.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Phone(String);

/// The E.164 text of a valid number: what `number.format().mode(Mode::E164)` writes, without
/// the formatter's look-up of a national format pattern (regular expressions run on every
/// call, which E.164 never uses: a fifth of a file import's validation).
fn e164(number: &phonenumber::PhoneNumber) -> String {
    // The national number's `Display` writes its leading zeros (Italy's `06…`) first.
    format!("+{}{}", number.code().value(), number.national())
}

impl Phone {
    /// Parses a number as people write it (`+49 30 123456`, `0049 30 123456`, `030/123456`,
    /// `(650) 253-0000`), reading national numbers in `region`.
    pub fn parse(raw: &str, region: PhoneRegion) -> Result<Self, FieldError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(FieldError::new(
                "phone",
                "required",
                "phone must not be empty",
            ));
        }
        if trimmed.len() > 64 {
            return Err(FieldError::new(
                "phone",
                "too_long",
                "phone must be at most 64 characters",
            ));
        }
        let invalid = || {
            FieldError::new(
                "phone",
                "invalid_phone",
                format!("`{trimmed}` is not a valid phone number (default region {region})"),
            )
        };
        // Letters would be read as a vanity number (`0800 FLOWERS`); in a lead they are a typo
        // or garbage. An extension marker (`ext. 12`, `x12`) is the one place they belong.
        let lower = trimmed.to_lowercase();
        if lower
            .replace("ext", "")
            .replace('x', "")
            .chars()
            .any(char::is_alphabetic)
        {
            return Err(invalid());
        }
        let number = phonenumber::parse(Some(region.0), trimmed).map_err(|_| invalid())?;
        if !number.is_valid() {
            return Err(invalid());
        }
        Ok(Self(e164(&number)))
    }

    /// Rebuilds a number that was parsed before it was stored.
    pub fn from_stored(stored: String) -> Self {
        Self(stored)
    }

    /// The number in E.164 form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ISO 3166-1 alpha-2 country the number belongs to, when the metadata knows it.
    pub fn country(&self) -> Option<CountryCode> {
        let number = phonenumber::parse(None, &self.0).ok()?;
        let id = number.country().id()?;
        Some(CountryCode(id.as_ref().to_owned()))
    }
}

impl AsRef<str> for Phone {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// ISO 639-1 language codes, the primary subtag of a [`Language`].
const ISO_639_1: &str = "aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch \
co cr cs cu cv cy da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi \
ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky \
la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om \
or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv sw ta te \
tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu";

/// A language tag: an ISO 639-1 code, optionally with a region (`de`, `de-AT`, `sr-RS`).
/// Normalized to a lower-case language and an upper-case region.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Language(String);

impl Language {
    /// Parses `de`, `DE`, `de_at` or `de-AT` (normalized to `de-AT`).
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let invalid = || {
            FieldError::new(
                "language",
                "invalid_language",
                format!("`{raw}` is not an ISO 639-1 language code such as `de`, `bs`, `sr`, `en`"),
            )
        };
        let normalized = raw.trim().replace('_', "-");
        let (lang, region) = match normalized.split_once('-') {
            Some((lang, region)) => (lang, Some(region)),
            None => (normalized.as_str(), None),
        };
        let lang = lang.to_lowercase();
        if lang.len() != 2 || !ISO_639_1.split(' ').any(|code| code == lang) {
            return Err(invalid());
        }
        match region {
            None => Ok(Self(lang)),
            Some(region) => {
                let region = CountryCode::parse(region).map_err(|_| invalid())?;
                Ok(Self(format!("{lang}-{}", region.as_str())))
            }
        }
    }

    /// Rebuilds a tag that was parsed before it was stored.
    pub fn from_stored(stored: String) -> Self {
        Self(stored)
    }

    /// The normalized tag.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The primary language (`de` for `de-AT`).
    pub fn primary(&self) -> &str {
        self.0.split('-').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An ISO 3166-1 alpha-2 country code, upper case (`DE`, `BA`, `RS`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CountryCode(String);

impl CountryCode {
    /// Parses a country code (case-insensitive).
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let upper = raw.trim().to_uppercase();
        // The phone metadata carries every ISO 3166-1 region that has a telephone plan,
        // which is every country a lead can be called in.
        match upper.parse::<phonenumber::country::Id>() {
            Ok(_) if upper.len() == 2 => Ok(Self(upper)),
            _ => Err(FieldError::new(
                "country",
                "invalid_country",
                format!("`{raw}` is not an ISO 3166-1 alpha-2 country code such as `DE`"),
            )),
        }
    }

    /// Rebuilds a code that was parsed before it was stored.
    pub fn from_stored(stored: String) -> Self {
        Self(stored)
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An IANA time zone name (`Europe/Berlin`, `Europe/Sarajevo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(chrono_tz::Tz);

impl TimeZone {
    /// Parses an IANA zone name (case-insensitive, returned in its canonical spelling).
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        chrono_tz::Tz::from_str_insensitive(raw.trim())
            .map(Self)
            .map_err(|_| {
                FieldError::new(
                    "time_zone",
                    "invalid_time_zone",
                    format!("`{raw}` is not an IANA time zone such as `Europe/Berlin`"),
                )
            })
    }

    /// The zone.
    pub fn tz(&self) -> chrono_tz::Tz {
        self.0
    }

    /// The canonical name.
    pub fn name(&self) -> &'static str {
        self.0.name()
    }
}

impl fmt::Display for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

/// Longest tag accepted.
pub const TAG_MAX_LEN: usize = 50;

/// A tag: trimmed, lower-cased, 1 to [`TAG_MAX_LEN`] characters, no commas or control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    /// Parses a tag.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let tag = raw.trim().to_lowercase();
        if tag.is_empty() {
            return Err(FieldError::new(
                "tags",
                "required",
                "a tag must not be empty",
            ));
        }
        if tag.chars().count() > TAG_MAX_LEN {
            return Err(FieldError::new(
                "tags",
                "too_long",
                format!("a tag must be at most {TAG_MAX_LEN} characters"),
            ));
        }
        if tag.chars().any(|c| c == ',' || c.is_control()) {
            return Err(FieldError::new(
                "tags",
                "invalid_tag",
                format!("`{raw}` contains a comma or a control character"),
            ));
        }
        Ok(Self(tag))
    }

    /// Rebuilds a tag that was parsed before it was stored.
    pub fn from_stored(stored: String) -> Self {
        Self(stored)
    }

    /// The tag.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Most tags one customer may carry.
pub const MAX_TAGS: usize = 50;

/// Parses a list of tags: each normalized, duplicates removed, sorted.
pub fn parse_tags(raw: &[String]) -> Result<Vec<Tag>, FieldError> {
    if raw.len() > MAX_TAGS {
        return Err(FieldError::new(
            "tags",
            "too_many",
            format!("at most {MAX_TAGS} tags are allowed"),
        ));
    }
    let mut tags = raw
        .iter()
        .enumerate()
        .map(|(i, tag)| {
            Tag::parse(tag).map_err(|e| FieldError::new(format!("tags[{i}]"), e.code, e.message))
        })
        .collect::<Result<Vec<_>, _>>()?;
    tags.sort();
    tags.dedup();
    Ok(tags)
}

/// Trims a free-text field and checks its length in characters; an empty result is `None`.
pub fn optional_text(
    field: &'static str,
    raw: Option<&str>,
    max_chars: usize,
) -> Result<Option<String>, FieldError> {
    let Some(text) = raw.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if text.chars().count() > max_chars {
        return Err(FieldError::new(
            field,
            "too_long",
            format!("{field} must be at most {max_chars} characters"),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
    {
        return Err(FieldError::new(
            field,
            "invalid_characters",
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(Some(text.to_owned()))
}

/// Validates the new value of an optional text field in a partial update; a blank string
/// clears the field, like `null`.
pub fn text_change(
    field: &'static str,
    change: crate::customer::Change<String>,
    max_chars: usize,
) -> Result<crate::customer::Change<String>, FieldError> {
    use crate::customer::Change;
    Ok(
        match change.try_map(|raw| optional_text(field, Some(&raw), max_chars))? {
            Change::Set(Some(text)) => Change::Set(text),
            Change::Set(None) | Change::Clear => Change::Clear,
            Change::Keep => Change::Keep,
        },
    )
}

/// Like [`optional_text`], but the field must be present and not blank.
pub fn required_text(
    field: &'static str,
    raw: &str,
    max_chars: usize,
) -> Result<String, FieldError> {
    optional_text(field, Some(raw), max_chars)?
        .ok_or_else(|| FieldError::new(field, "required", format!("{field} must not be empty")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn de() -> PhoneRegion {
        PhoneRegion::parse("DE").unwrap()
    }

    #[test]
    fn emails_are_normalized() {
        let cases = [
            ("max@example.com", "max@example.com"),
            (
                "  Max.Mustermann@Example.COM ",
                "max.mustermann@example.com",
            ),
            ("ana+crm@firma.co.ba", "ana+crm@firma.co.ba"),
            ("ĐORĐE@primer.rs", "đorđe@primer.rs"),
        ];
        for (raw, expected) in cases {
            assert_eq!(
                Email::parse(raw).unwrap().as_str(),
                expected,
                "input {raw:?}"
            );
        }
    }

    #[test]
    fn bad_emails_are_rejected_with_a_code() {
        let cases = [
            ("", "required"),
            ("   ", "required"),
            ("max", "invalid_email"),
            ("max@", "invalid_email"),
            ("@example.com", "invalid_email"),
            ("max@localhost", "invalid_email"),
            ("max@@example.com", "invalid_email"),
            ("Max <max@example.com>", "invalid_email"),
            ("max@[127.0.0.1]", "invalid_email"),
        ];
        for (raw, code) in cases {
            let err = Email::parse(raw).unwrap_err();
            assert_eq!(err.code, code, "input {raw:?}");
            assert_eq!(err.field, "email");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(Email::parse(&long).unwrap_err().code, "too_long");
    }

    #[test]
    fn phones_become_e164_in_the_default_region() {
        let cases = [
            ("DE", "030 123456", "+4930123456"),
            ("DE", "+49 30 123456", "+4930123456"),
            ("DE", "0049 30 123456", "+4930123456"),
            ("DE", "030/123456", "+4930123456"),
            ("DE", "+49 (0)151 23456789", "+4915123456789"),
            ("US", "(650) 253-0000", "+16502530000"),
            ("BA", "033 250 300", "+38733250300"),
            ("RS", "011 1234567", "+381111234567"),
            // An international number keeps its own country whatever the default region.
            ("DE", "+387 33 250 300", "+38733250300"),
            ("AT", "+49 30 123456", "+4930123456"),
        ];
        for (region, raw, expected) in cases {
            let region = PhoneRegion::parse(region).unwrap();
            assert_eq!(
                Phone::parse(raw, region).unwrap().as_str(),
                expected,
                "input {raw:?}"
            );
        }
    }

    #[test]
    fn e164_text_is_the_formatters() {
        let cases = [
            ("DE", "030 123456"),
            ("DE", "+49 (0)151 23456789"),
            ("US", "(650) 253-0000"),
            ("BA", "033 250 300"),
            ("RS", "011 1234567"),
            ("AT", "01 234567"),
            ("CH", "044 668 18 00"),
            ("IT", "06 1234 5678"),
            ("IT", "+39 02 1234 5678"),
            ("GB", "020 7946 0018"),
            ("DE", "030 123456 ext. 12"),
        ];
        for (region, raw) in cases {
            let region = PhoneRegion::parse(region).unwrap();
            let number = phonenumber::parse(Some(region.0), raw).unwrap();
            assert!(number.is_valid(), "input {raw:?}");
            assert_eq!(
                e164(&number),
                number.format().mode(phonenumber::Mode::E164).to_string(),
                "input {raw:?}"
            );
        }
        let it = Phone::parse("06 1234 5678", PhoneRegion::parse("IT").unwrap()).unwrap();
        assert_eq!(it.as_str(), "+390612345678", "the leading zero stays");
    }

    #[test]
    fn the_region_decides_national_numbers_no_blind_prefix() {
        // The same digits are a different number in another region.
        let at = Phone::parse("01 234567", PhoneRegion::parse("AT").unwrap()).unwrap();
        assert_eq!(at.as_str(), "+431234567");
        assert_eq!(at.country().unwrap().as_str(), "AT");
    }

    #[test]
    fn bad_phones_are_rejected() {
        for raw in [
            "",
            "abc",
            "01 5midnight",
            "0800 FLOWERS",
            "123",
            "+49 1",
            "0000000000000000000000",
            "+999 123456789",
        ] {
            let err = Phone::parse(raw, de()).unwrap_err();
            assert!(
                matches!(err.code, "invalid_phone" | "required"),
                "input {raw:?}: {err:?}"
            );
        }
    }

    #[test]
    fn languages_countries_and_zones() {
        assert_eq!(Language::parse("DE").unwrap().as_str(), "de");
        assert_eq!(Language::parse("sr_rs").unwrap().as_str(), "sr-RS");
        assert_eq!(Language::parse("bs-BA").unwrap().primary(), "bs");
        for bad in ["", "xx", "deu", "de-XX1", "german"] {
            assert_eq!(
                Language::parse(bad).unwrap_err().code,
                "invalid_language",
                "{bad:?}"
            );
        }
        assert_eq!(CountryCode::parse("ba").unwrap().as_str(), "BA");
        for bad in ["", "X", "XX", "DEU"] {
            assert_eq!(
                CountryCode::parse(bad).unwrap_err().code,
                "invalid_country",
                "{bad:?}"
            );
        }
        assert_eq!(
            TimeZone::parse("europe/sarajevo").unwrap().name(),
            "Europe/Sarajevo"
        );
        assert_eq!(
            TimeZone::parse("Mars/Olympus").unwrap_err().code,
            "invalid_time_zone"
        );
    }

    #[test]
    fn tags_are_normalized_and_deduplicated() {
        let raw = vec![
            "VIP".to_owned(),
            " vip ".to_owned(),
            "Messe 2026".to_owned(),
        ];
        let tags: Vec<_> = parse_tags(&raw)
            .unwrap()
            .into_iter()
            .map(|t| t.as_str().to_owned())
            .collect();
        assert_eq!(tags, ["messe 2026", "vip"]);
        let err = parse_tags(&["ok".to_owned(), "a,b".to_owned()]).unwrap_err();
        assert_eq!((err.field.as_str(), err.code), ("tags[1]", "invalid_tag"));
        assert_eq!(
            parse_tags(&vec!["x".to_owned(); 51]).unwrap_err().code,
            "too_many"
        );
    }

    #[test]
    fn text_fields_are_trimmed_and_bounded() {
        assert_eq!(
            optional_text("company", Some("  ACME  "), 10)
                .unwrap()
                .as_deref(),
            Some("ACME")
        );
        assert_eq!(optional_text("company", Some("   "), 10).unwrap(), None);
        assert_eq!(
            optional_text("company", Some("ÄÖÜäöüßđšž"), 10)
                .unwrap()
                .as_deref(),
            Some("ÄÖÜäöüßđšž")
        );
        assert_eq!(
            optional_text("company", Some("12345678901"), 10)
                .unwrap_err()
                .code,
            "too_long"
        );
        assert_eq!(
            optional_text("notes", Some("a\u{0}b"), 10)
                .unwrap_err()
                .code,
            "invalid_characters"
        );
        assert_eq!(required_text("name", " ", 10).unwrap_err().code, "required");
    }
}
