//! Consent (GDPR): who may be contacted on which channel for which purpose, on what lawful
//! basis. Every grant and withdrawal is a [`ConsentRecord`] in the ledger; the customer's
//! `consent_email` / `consent_call` / `consent_sms` flags are the ledger's current state, and
//! calls and marketing emails are refused without them.

use crate::{error::FieldError, interaction::string_enum};
use std::{fmt, str::FromStr};

string_enum!(
    /// How the person may be contacted.
    ConsentChannel, "channel" {
        /// Email.
        Email = "email",
        /// A phone call (including AI voice calls).
        Call = "call",
        /// Text messages.
        Sms = "sms",
    }
);

string_enum!(
    /// What the contact is for.
    ConsentPurpose, "purpose" {
        /// Marketing: the nurture sequence, offers.
        Marketing = "marketing",
        /// Following up a conversation the person started (sales follow-up, calls back).
        SalesFollowUp = "sales_follow_up",
    }
);

string_enum!(
    /// The lawful basis (GDPR Art. 6).
    LawfulBasis, "basis" {
        /// The person consented (Art. 6(1)(a)).
        Consent = "consent",
        /// Needed for a contract with them (Art. 6(1)(b)).
        Contract = "contract",
        /// Our legitimate interest, balanced against theirs (Art. 6(1)(f)).
        LegitimateInterest = "legitimate_interest",
    }
);

string_enum!(
    /// Where a grant or withdrawal came from.
    ConsentSource, "source" {
        /// A web form.
        Form = "form",
        /// A file or list import, or a signed lead webhook.
        Import = "import",
        /// Said during a call.
        Call = "call",
        /// Through the API (a user or an integration).
        Api = "api",
        /// An unsubscribe link or a provider's unsubscribe event.
        Unsubscribe = "unsubscribe",
        /// A retention rule or an erasure.
        System = "system",
    }
);

/// One entry of the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRecord {
    /// The channel.
    pub channel: ConsentChannel,
    /// The purpose.
    pub purpose: ConsentPurpose,
    /// The lawful basis (of a grant; a withdrawal keeps the basis it withdraws).
    pub basis: LawfulBasis,
    /// Granted (true) or withdrawn (false).
    pub granted: bool,
    /// Where it came from.
    pub source: ConsentSource,
    /// What proves it: a form submission, a webhook or inbox id, a request id, a call id.
    pub evidence: Option<String>,
}

impl ConsentRecord {
    /// Which of the customer's flags this entry sets, if any: marketing email sets
    /// `consent_email`; any call or text-message entry sets `consent_call` / `consent_sms`.
    pub fn flag(&self) -> Option<ConsentChannel> {
        match (self.channel, self.purpose) {
            (ConsentChannel::Email, ConsentPurpose::Marketing) => Some(ConsentChannel::Email),
            (ConsentChannel::Email, ConsentPurpose::SalesFollowUp) => None,
            (channel, _) => Some(channel),
        }
    }

    /// The entries a new customer's flags stand for (each flag set is a grant by consent).
    pub fn from_flags(
        email: bool,
        call: bool,
        sms: bool,
        source: ConsentSource,
        evidence: Option<String>,
    ) -> Vec<Self> {
        [
            (email, ConsentChannel::Email, ConsentPurpose::Marketing),
            (call, ConsentChannel::Call, ConsentPurpose::SalesFollowUp),
            (sms, ConsentChannel::Sms, ConsentPurpose::Marketing),
        ]
        .into_iter()
        .filter(|(on, _, _)| *on)
        .map(|(_, channel, purpose)| Self {
            channel,
            purpose,
            basis: LawfulBasis::Consent,
            granted: true,
            source,
            evidence: evidence.clone(),
        })
        .collect()
    }

    /// The entries a change of flags stands for: a grant for each flag turned on, a withdrawal
    /// for each turned off.
    pub fn from_change(
        before: (bool, bool, bool),
        after: (bool, bool, bool),
        source: ConsentSource,
        evidence: Option<String>,
    ) -> Vec<Self> {
        [
            (
                before.0,
                after.0,
                ConsentChannel::Email,
                ConsentPurpose::Marketing,
            ),
            (
                before.1,
                after.1,
                ConsentChannel::Call,
                ConsentPurpose::SalesFollowUp,
            ),
            (
                before.2,
                after.2,
                ConsentChannel::Sms,
                ConsentPurpose::Marketing,
            ),
        ]
        .into_iter()
        .filter(|(was, is, _, _)| was != is)
        .map(|(_, is, channel, purpose)| Self {
            channel,
            purpose,
            basis: LawfulBasis::Consent,
            granted: is,
            source,
            evidence: evidence.clone(),
        })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_grants_and_changes_become_grants_or_withdrawals() {
        let grants = ConsentRecord::from_flags(true, false, true, ConsentSource::Form, None);
        assert_eq!(grants.len(), 2);
        assert!(
            grants
                .iter()
                .all(|g| g.granted && g.basis == LawfulBasis::Consent)
        );
        let changes = ConsentRecord::from_change(
            (true, false, false),
            (false, true, false),
            ConsentSource::Api,
            Some("req-1".into()),
        );
        assert_eq!(
            changes
                .iter()
                .map(|c| (c.channel, c.granted))
                .collect::<Vec<_>>(),
            [(ConsentChannel::Email, false), (ConsentChannel::Call, true)]
        );
        assert_eq!(changes[0].flag(), Some(ConsentChannel::Email));
        let follow_up = ConsentRecord {
            purpose: ConsentPurpose::SalesFollowUp,
            ..changes[0].clone()
        };
        assert_eq!(
            follow_up.flag(),
            None,
            "follow-up mail runs on its own basis"
        );
        assert_eq!(
            "Legitimate_Interest".parse::<LawfulBasis>().unwrap(),
            LawfulBasis::LegitimateInterest
        );
    }
}
